// The connection: one WebSocket to /ws for live verdicts, /state and /api/... to
// (re)build the picture after every (re)connect.
//
// Test hooks on <body>: data-ready="1" after the first sync, data-syncs = number of
// completed syncs (data-conn is set by page.setConn).

import { checkSession, toLogin } from "./account.js";
import { putChecklist } from "./checklist.js";
import { handle } from "./messages.js";
import { putSeries, state, station } from "./model.js";
import { render, setConn } from "./page.js";
import { showDatabase, showWatching } from "./watching.js";

// Reconnect backoff: quick first retry (a service restart takes a second or two),
// capped so a console left on a dead service still comes back within 10 s.
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;

async function getJSON(url, { missing } = {}) {
  const r = await fetch(url, { cache: "no-store" });
  if (r.status === 401) toLogin();
  if (r.status === 404 && missing !== undefined) return missing;
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

/** Rebuild the whole model from /api/stations, each station's series and /state. */
async function sync() {
  const [snapshot, stations, health] = await Promise.all([
    getJSON("/state"), getJSON("/api/stations"), getJSON("/healthz", { missing: {} })]);
  showWatching(health.watcher?.not_watching);
  showDatabase(health.database);
  const api = (s, what, opts) => getJSON(`/api/stations/${encodeURIComponent(s.station)}/${what}`, opts);
  const [lists, checklists] = await Promise.all([
    Promise.all(stations.map((s) => api(s, "series"))),
    // 404: the station has no session yet (or the service predates checklists).
    Promise.all(stations.map((s) => api(s, "checklist", { missing: null }))),
  ]);
  state.stations = new Map();
  state.checklists = new Map();
  stations.forEach((s, i) => checklists[i] && putChecklist(s.station, checklists[i]));
  const rows = [];
  stations.forEach((s, i) => {
    station(s.station).lastSeen = s.last_seen ? new Date(s.last_seen) : null;
    for (const row of lists[i]) rows.push({ ...row, station: s.station });
  });
  // Oldest first so the newest gets the highest rank; ties keep the server's order.
  const when = (row) => `${row.content?.input?.AcqDate ?? ""}${row.content?.input?.AcqTime ?? ""}`;
  rows.reverse().sort((a, b) => (when(a) < when(b) ? -1 : when(a) > when(b) ? 1 : 0));
  for (const row of rows) putSeries(row.station, row.series, row.content, row.n_files, { live: false });
  // /state holds the latest series of every station; it covers a station the API missed.
  for (const [name, { content }] of Object.entries(snapshot)) {
    if (!state.stations.get(name)?.series.length) putSeries(name, undefined, content, null, { live: false });
  }
}

let socket = null;
let attempt = 0;

/** Open /ws, sync once it is open, and reconnect with backoff whenever it closes. */
export function connect() {
  setConn("connecting");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`);
  socket = ws;
  let queue = []; // messages that arrive while the sync runs are applied after it
  ws.onmessage = (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (err) {
      console.warn("mrqart: ignoring a message that is not JSON", err);
      return;
    }
    if (queue) queue.push(msg);
    else handle(msg);
  };
  ws.onopen = async () => {
    try {
      await sync();
    } catch (err) {
      console.warn("mrqart: sync failed, reconnecting", err);
      ws.close();
      return;
    }
    if (socket !== ws) return;
    const pending = queue;
    queue = null;
    pending.forEach(handle);
    attempt = 0;
    render();
    setConn("open");
    state.syncs += 1;
    document.body.dataset.syncs = String(state.syncs);
    document.body.dataset.ready = "1";
  };
  ws.onclose = (ev) => {
    if (socket !== ws) return;
    socket = null;
    checkSession(ev.code);
    // Jittered exponential backoff so a room of consoles does not reconnect in lockstep.
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** attempt) * (0.8 + 0.4 * Math.random());
    attempt += 1;
    state.retryAt = Date.now() + delay;
    setConn("closed");
    setTimeout(connect, delay);
  };
}
