// The verdict of a series as the checklist, the banner, the title and the wall tell it:
// the series' CheckResult (from the series messages) joined with its "nonconform" alert
// (from the checklist and alert messages), which carries the operator's acknowledgement.
//
// Pure lookups over the model: no DOM.

import { order, shortDiff } from "./format.js";
import { shownChecklist, state } from "./model.js";

/** The fields this scanner does not record (the header's not_recorded list), as a Set:
 * they are shown as "not recorded by this scanner", never as a difference. */
export function notRecorded(content) {
  const list = content?.input?.not_recorded;
  return new Set(Array.isArray(list) ? list.map(String) : []);
}

/** The differences from the template that count, in parameter order: [[param, {expect, have}]]. */
export function differences(content) {
  const skip = notRecorded(content);
  return Object.entries(content?.errors || {})
    .filter(([param]) => !skip.has(param))
    .sort(([a], [b]) => order(a) - order(b));
}

/** The page's record of a series (model.putSeries), if it is still kept. */
export function seriesRecord(name, key) {
  return state.stations.get(name)?.series.find((r) => r.key === key);
}

/** The "nonconform" alert record of a series (alerts.putAlert), if any. */
function differsAlert(key) {
  return state.alerts.get(`${key}:nonconform`);
}

/** A series' verdict: {verdict, text}, verdict one of conform | differs | acknowledged |
 * accepted | no_template, or "" when the page knows nothing of the series. */
export function verdictOf(name, key) {
  if (!key) return { verdict: "", text: "" };
  const rec = seriesRecord(name, key);
  const alert = differsAlert(key);
  const status = rec?.status ?? (alert ? "nonconform" : "");
  if (status === "conform") return { verdict: "conform", text: "conforms" };
  if (status === "no_template") return { verdict: "no_template", text: "no template" };
  if (status === "accepted") {
    const reason = rec?.content?.accepted?.reason;
    return { verdict: "accepted", text: reason ? `accepted: ${reason}` : "accepted" };
  }
  if (status !== "nonconform") return { verdict: "", text: "" };
  const [first, ...rest] = rec ? differences(rec.content) : [];
  const what = first ? shortDiff(...first) + (rest.length ? ` (+${rest.length} more)` : "")
    : alert.alert.text;
  if (alert?.ack) return { verdict: "acknowledged", text: `acknowledged: ${alert.ack.reason}`, what };
  return { verdict: "differs", text: what, what };
}

/** An alert that still needs the operator: not acknowledged and, for a series that
 * differed, not accepted since (its series is no longer "nonconform"). */
export function isOpen(rec) {
  if (rec.ack) return false;
  if (rec.alert.kind !== "nonconform") return true;
  const series = seriesRecord(rec.station, rec.alert.series);
  return !series || series.status === "nonconform";
}

/** Whether an alert is in view: of the shown station(s); on the wall, of the current
 * session only. */
export function inView(rec) {
  if (state.view && rec.station !== state.view) return false;
  return !state.wall || rec.alert.session === shownChecklist()[1]?.session;
}

/** The open alerts in view, newest first. */
export function openAlarms() {
  return [...state.alerts.values()].filter((r) => inView(r) && isOpen(r))
    .sort((a, b) => b.rank - a.rank);
}

/** The title's alarm text: "✗ rest: TR" for a series that differs, "⚠ <alert>" otherwise. */
export function alarmTitle(rec) {
  if (rec.alert.kind === "nonconform") {
    const series = seriesRecord(rec.station, rec.alert.series);
    if (series) {
      const params = differences(series.content).map(([p]) => p).join(", ");
      return `✗ ${series.content?.input?.SequenceName ?? rec.alert.text}: ${params}`;
    }
    return `✗ ${rec.alert.text}`;
  }
  return `⚠ ${rec.alert.text}`;
}
