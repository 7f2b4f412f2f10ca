// The live messages of /ws, one at a time, applied to the model and the page.

import { applyAck, putAlert, removeAlert } from "./alerts.js";
import { showCount } from "./card.js";
import { putChecklist, updateItem } from "./checklist.js";
import { putSeries, station } from "./model.js";
import { render, tick } from "./page.js";
import { addUnreadable } from "./unreadable.js";
import { showDatabase, showWatching } from "./watching.js";

export function handle(msg) {
  switch (msg.type) {
    case "new":
      putSeries(msg.station, msg.series, msg.content, 1, { live: true });
      render();
      break;
    case "update": {
      const st = station(msg.station);
      // Without a series key (older wire format) an update is for the station's latest series.
      const rec = msg.series === undefined ? st.series[0] : st.series.find((r) => r.key === String(msg.series));
      st.lastSeen = new Date();
      if (rec) {
        rec.nFiles = Math.max(rec.nFiles ?? 0, msg.content);
        showCount(rec);
      }
      if (msg.series !== undefined) updateItem(msg.station, String(msg.series), msg.content);
      tick();
      break;
    }
    // Session-level messages are rare (a few per series): each redraws the page, since
    // the checklist's verdicts, the banner, the title and the wall all join them.
    case "checklist":
      putChecklist(msg.station, msg.content);
      render();
      break;
    case "alert":
      putAlert(msg.station, msg.content, msg.content.ack ?? null);
      render();
      break;
    case "ack":
      applyAck(msg.content);
      render();
      break;
    case "resolved": // late files completed a series: its "incomplete" alert is withdrawn
      removeAlert(msg.content.id);
      render();
      break;
    case "unreadable":
      addUnreadable(msg.station, msg.content || {});
      break;
    case "watch": // a watched root went or came back
      showWatching(msg.content.not_watching);
      break;
    case "database": // the database stopped answering, or answers again
      showDatabase(msg.content);
      break;
    default:
      // New message types may be added to the wire format; older pages ignore them.
      break;
  }
}
