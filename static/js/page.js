// The page as a whole: the header (station name, counts, last file, connection dot and
// banner), the station picker, the series list by session, the checklist, the alerts
// and the wall's state; render() redraws all of it.
//
// Station names are inserted with textContent, never as HTML.
//
// Test hooks on <body>: data-conn = connecting|open|closed. data-view = one|all is for
// style.css (the station beside each series is hidden in a one-station view).

import { flashTitle, setBaseTitle } from "./alarm.js";
import { renderAlerts } from "./alerts.js";
import { renderChecklist } from "./checklist.js";
import { ago, clock } from "./format.js";
import { state, station, visible } from "./model.js";
import { renderSessions } from "./sessions.js";
import { ui } from "./ui.js";
import { renderWall } from "./wall.js";

export function render() {
  const recs = visible();
  // Cards are built once and cached on the record; re-rendering only reorders them.
  renderSessions(recs);
  ui.empty.hidden = recs.length > 0;
  document.body.dataset.view = state.view ? "one" : "all";
  ui.name.textContent = state.view || "all stations";
  const shown = state.view ? [station(state.view)] : [...state.stations.values()];
  const sum = (k) => shown.reduce((n, st) => n + st.counts[k], 0);
  ui.nConform.textContent = sum("conform");
  ui.nNonconform.textContent = sum("nonconform");
  ui.nNoTemplate.textContent = sum("no_template");
  const mark = recs[0] ? { conform: "✓", nonconform: "✗", no_template: "·" }[recs[0].status] : "";
  setBaseTitle(`${mark} ${state.view || "all stations"} · mrqart`.trim());
  renderStations();
  renderChecklist();
  renderAlerts();
  renderWall();
  tick();
}

function renderStations() {
  const names = new Set(state.stations.keys());
  if (state.view) names.add(state.view);
  const wanted = ["", ...[...names].sort()];
  const have = [...ui.select.options].map((o) => o.value);
  if (wanted.join("\n") !== have.join("\n")) {
    ui.select.replaceChildren(...wanted.map((name) => {
      const opt = document.createElement("option");
      opt.value = name;
      opt.textContent = name || "all stations";
      return opt;
    }));
  }
  ui.select.value = state.view;
}

/** Once a second: the "last file" age, the reconnect countdown and the flashing title. */
export function tick() {
  flashTitle();
  const shown = state.view ? [state.stations.get(state.view)] : [...state.stations.values()];
  const last = shown.map((st) => st?.lastSeen).filter(Boolean).sort((a, b) => b - a)[0];
  ui.lastFile.textContent = last ? `${clock(last)} (${ago(last)})` : "–";
  if (state.conn === "closed") {
    const s = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    ui.banner.textContent = `Disconnected from mrqart — retrying in ${s} s…`;
  }
}

export function setConn(conn) {
  state.conn = conn;
  document.body.dataset.conn = conn;
  ui.dot.dataset.conn = conn;
  ui.dot.title = conn;
  // The banner appears once a connection was lost or refused, not on the first attempt.
  if (conn === "open") ui.banner.hidden = true;
  if (conn === "closed") ui.banner.hidden = false;
  if (conn === "connecting" && !ui.banner.hidden) ui.banner.textContent = "Disconnected from mrqart — reconnecting…";
  tick();
}
