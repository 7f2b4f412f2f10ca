// The page's model: the series of every station, the checklists, the alerts and the
// connection state, shared by the modules that render and update them.

// The page stays open at the console for days: keep the DOM and memory bounded.
export const MAX_SERIES = 60; // per station (and in the all-stations view)

export const state = {
  stations: new Map(), // name -> {series: [record] newest first, counts, lastSeen: Date|null}
  view: stationFromPath(), // "" = all stations
  // The wall view (/station/<id>?view=wall): the current session only, large, no controls.
  wall: new URLSearchParams(location.search).get("view") === "wall",
  rank: 0, // insertion counter: orders series (and alerts) across stations
  conn: "connecting",
  retryAt: 0,
  syncs: 0,
  checklists: new Map(), // station -> the service's checklist View (its current session)
  alerts: new Map(), // alert id -> {station, alert, ack, rank, el}; kept across sessions
};

/** The station of a /station/<id> URL; "" (all stations) for any other path. */
export function stationFromPath() {
  const m = /^\/station\/([^/]+)\/?$/.exec(location.pathname);
  return m ? decodeURIComponent(m[1]) : "";
}

/** The checklist shown: [station, View] of the selected station's; in the all-stations
 * view, the only one ([null, undefined] when there are several or none). */
export function shownChecklist() {
  if (state.view) return [state.view, state.checklists.get(state.view)];
  return state.checklists.size === 1 ? [...state.checklists][0] : [null, undefined];
}

export function station(name) {
  let st = state.stations.get(name);
  if (!st) {
    st = { series: [], counts: { conform: 0, nonconform: 0, no_template: 0 }, lastSeen: null };
    state.stations.set(name, st);
  }
  return st;
}

function statusOf(content) {
  if (content.status) return content.status;
  if (!content.template || Object.keys(content.template).length === 0) return "no_template";
  return content.conforms ? "conform" : "nonconform";
}

/** A series key when the message carries none (older wire format): session + number. */
function keyOf(content) {
  const h = content.input || {};
  return `${h.StudyUID ?? ""}:${h.SeriesNumber ?? ""}`;
}

/** Insert or replace a series (newest first), keeping at most MAX_SERIES per station. */
export function putSeries(name, key, content, nFiles, { live }) {
  const st = station(name);
  const rec = {
    station: name, key: String(key ?? keyOf(content)), content, status: statusOf(content),
    nFiles, el: null, rank: ++state.rank,
  };
  const i = st.series.findIndex((r) => r.key === rec.key);
  st.counts[rec.status] = (st.counts[rec.status] ?? 0) + 1;
  if (i >= 0) {
    // A new verdict for a series we have (accepted as intended, or a message queued
    // during a sync): it keeps its place, and its count never goes back.
    const old = st.series[i];
    rec.nFiles = Math.max(rec.nFiles ?? 0, old.nFiles ?? 0);
    rec.rank = old.rank;
    st.counts[old.status] -= 1;
    st.series[i] = rec;
    return rec;
  }
  st.series.unshift(rec);
  st.series.length = Math.min(st.series.length, MAX_SERIES);
  if (live) {
    rec.fresh = true;
    st.lastSeen = new Date();
  }
  return rec;
}

/** The series of the current view, newest first. */
export function visible() {
  if (state.view) return state.stations.get(state.view)?.series ?? [];
  const all = [...state.stations.values()].flatMap((st) => st.series);
  return all.sort((a, b) => b.rank - a.rank).slice(0, MAX_SERIES);
}
