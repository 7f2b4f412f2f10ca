// mrqart console page: one WebSocket to /ws for live verdicts, /state and /api/... to
// (re)build the picture after every (re)connect.
//
// Every value that comes from a DICOM header is inserted with textContent, never as
// HTML: a series description is whatever the operator typed at the scanner.
//
// Test hooks on <body>: data-ready="1" after the first sync, data-conn =
// connecting|open|closed, data-syncs = number of completed syncs. Each series element
// carries data-status (conform|nonconform|no_template), data-station and data-key.
// Checklist items carry data-state and data-series; alerts data-id, data-kind, data-acked.
"use strict";

// The page stays open at the console for days: keep the DOM and memory bounded.
const MAX_SERIES = 60; // per station (and in the all-stations view)
const MAX_UNREADABLE = 20;
const MAX_ITEMS = 80; // checklist items shown (a protocol is a dozen series)
const MAX_ALERTS = 30; // the oldest alerts are forgotten first
const MAX_REASON = 200; // characters, as the service accepts
const TABLE_ROWS = 9; // two side-by-side tables for the 17 parameters
// Reconnect backoff: quick first retry (a service restart takes a second or two),
// capped so a console left on a dead service still comes back within 10 s.
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;

// The invariant parameters (mrqart.check.PARAMS), the table order when there is no template.
const PARAMS = [
  "Project", "SequenceName", "iPAT", "Comments", "SequenceType", "PED_major", "Phase",
  "TR", "TE", "Matrix", "PixelResol", "BWP", "BWPPE", "FA", "TA", "FoV", "SequenceFile",
];
const VERDICT = { conform: "✓ OK", nonconform: "✗ DIFFERS", no_template: "NO TEMPLATE" };
// Checklist states: an icon and a word each, so no state is told by colour alone.
const ITEM_STATE = {
  done: ["✓", "done"], running: ["▶", "running"], pending: ["○", "not yet"],
  incomplete: ["◐", "incomplete"], missing: ["✗", "missing"], repeated: ["↻", "repeated"],
  unexpected: ["?", "unexpected"],
};

const $ = (id) => document.getElementById(id);
const ui = {
  list: $("series-list"), empty: $("empty"), banner: $("banner"), dot: $("dot"),
  name: $("station-name"), select: $("station-select"), lastFile: $("last-file"),
  nConform: $("n-conform"), nNonconform: $("n-nonconform"), nNoTemplate: $("n-no-template"),
  unreadableBox: $("unreadable-box"), unreadable: $("unreadable-list"),
  nUnreadable: $("n-unreadable"), unreadableLatest: $("unreadable-latest"),
  template: $("series-template"), tableTemplate: $("table-template"),
  checklist: $("checklist"), checklistMeta: $("checklist-meta"), checklistNote: $("checklist-note"),
  items: $("checklist-items"), itemTemplate: $("item-template"),
  alerts: $("alerts"), alertList: $("alert-list"), alertTemplate: $("alert-template"),
  pinStart: $("pin-start"), pinConfirm: $("pin-confirm"), pinQuestion: $("pin-question"),
  pinYes: $("pin-yes"), pinNo: $("pin-no"), unpin: $("unpin"), pinStatus: $("pin-status"),
};

const state = {
  stations: new Map(), // name -> {series: [record] newest first, counts, lastSeen: Date|null}
  view: stationFromPath(), // "" = all stations
  rank: 0, // insertion counter: orders series across stations in the all-stations view
  conn: "connecting",
  retryAt: 0,
  syncs: 0,
  unreadable: 0, // since the page opened; the list shows the last MAX_UNREADABLE
  checklists: new Map(), // station -> the service's checklist View (its current session)
  alerts: new Map(), // alert id -> {station, alert, ack, rank, el}; kept across sessions
};

// ---------------------------------------------------------------- formatting

/** A header value as readable text: lists joined, floats without float noise. */
function fmt(value, param) {
  if (value === null || value === undefined || value === "null") return "—";
  if (Array.isArray(value)) {
    const sep = param === "Matrix" || param === "PixelResol" ? " × " : ", ";
    return value.map((v) => fmt(v)).join(sep);
  }
  if (typeof value === "number") {
    return Number.isInteger(value) ? String(value) : String(parseFloat(value.toFixed(4)));
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** "TR should be 1300 but is 2000" for one entry of CheckResult.errors. */
function sentence(param, { expect, have }) {
  const is = have === null || have === undefined || have === "null" ? "is missing" : `is ${fmt(have, param)}`;
  return `${param} should be ${fmt(expect, param)} but ${is}`;
}

/** DICOM TM "HHMMSS.ffffff" as "HH:MM:SS"; anything else unchanged. */
function fmtTime(tm) {
  const m = /^(\d\d)(\d\d)(\d\d)/.exec(String(tm ?? ""));
  return m ? `${m[1]}:${m[2]}:${m[3]}` : fmt(tm);
}

function clock(date) {
  return date.toLocaleTimeString([], { hour12: false });
}

function ago(date) {
  const s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

function statusOf(content) {
  if (content.status) return content.status;
  if (!content.template || Object.keys(content.template).length === 0) return "no_template";
  return content.conforms ? "conform" : "nonconform";
}

// ---------------------------------------------------------------- model

function stationFromPath() {
  const m = /^\/station\/([^/]+)\/?$/.exec(location.pathname);
  return m ? decodeURIComponent(m[1]) : "";
}

function station(name) {
  let st = state.stations.get(name);
  if (!st) {
    st = { series: [], counts: { conform: 0, nonconform: 0, no_template: 0 }, lastSeen: null };
    state.stations.set(name, st);
  }
  return st;
}

/** A series key when the message carries none (older wire format): session + number. */
function keyOf(content) {
  const h = content.input || {};
  return `${h.StudyUID ?? ""}:${h.SeriesNumber ?? ""}`;
}

/** Insert or replace a series (newest first), keeping at most MAX_SERIES per station. */
function putSeries(name, key, content, nFiles, { live }) {
  const st = station(name);
  const rec = {
    station: name, key: String(key ?? keyOf(content)), content, status: statusOf(content),
    nFiles, el: null, rank: ++state.rank,
  };
  const i = st.series.findIndex((r) => r.key === rec.key);
  if (i >= 0) {
    // A message queued during a sync may be older than the synced count: never go back.
    rec.nFiles = Math.max(rec.nFiles ?? 0, st.series[i].nFiles ?? 0);
    st.counts[st.series[i].status] -= 1;
    st.series.splice(i, 1);
  }
  st.counts[rec.status] = (st.counts[rec.status] ?? 0) + 1;
  st.series.unshift(rec);
  st.series.length = Math.min(st.series.length, MAX_SERIES);
  if (live) {
    rec.fresh = true;
    st.lastSeen = new Date();
  }
  return rec;
}

// ---------------------------------------------------------------- rendering

function buildCard(rec) {
  const { content, status } = rec;
  const input = content.input || {};
  const template = content.template || {};
  const errors = content.errors || {};
  const el = ui.template.content.firstElementChild.cloneNode(true);
  el.dataset.status = status;
  el.dataset.station = rec.station;
  el.dataset.key = rec.key;
  if (rec.fresh) el.classList.add("fresh");
  el.querySelector(".verdict").textContent = VERDICT[status] ?? status;
  el.querySelector(".seq").textContent = fmt(input.SequenceName);

  const meta = el.querySelector(".meta");
  const parts = [`#${fmt(input.SeriesNumber)}`, fmtTime(input.AcqTime), fmt(input.Project)];
  meta.append(document.createTextNode(parts.join("  ·  ")));
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = `  ·  ${rec.station}`;
  meta.append(where);

  const problems = el.querySelector(".problems");
  const wrong = Object.keys(errors).sort((a, b) => order(a) - order(b));
  for (const param of wrong) {
    const li = document.createElement("li");
    li.textContent = sentence(param, errors[param]);
    problems.append(li);
  }
  problems.hidden = wrong.length === 0;

  const note = el.querySelector(".note");
  if (status === "no_template") {
    note.textContent = `No template yet for ${fmt(input.Project)} × ${fmt(input.SequenceName)}: nothing to compare against.`;
  } else {
    note.hidden = true;
  }

  const keys = Object.keys(template).length ? Object.keys(template) : PARAMS.filter((p) => p in input);
  keys.sort((a, b) => order(a) - order(b));
  // Side-by-side tables of TABLE_ROWS rows keep a red card within one screen.
  const tables = el.querySelector(".tables");
  for (let i = 0; i < keys.length; i += TABLE_ROWS) {
    const table = ui.tableTemplate.content.firstElementChild.cloneNode(true);
    for (const param of keys.slice(i, i + TABLE_ROWS)) {
      const tr = table.tBodies[0].insertRow();
      if (param in errors) tr.className = "diff";
      for (const text of [param, fmt(input[param], param), fmt(template[param], param)]) {
        tr.insertCell().textContent = text;
      }
    }
    tables.append(table);
  }
  el.querySelector("details").open = status === "nonconform";
  rec.el = el;
  showCount(rec);
  return el;
}

function order(param) {
  const i = PARAMS.indexOf(param);
  return i < 0 ? PARAMS.length : i;
}

function showCount(rec) {
  if (rec.el) rec.el.querySelector(".count").textContent = fmt(rec.nFiles);
}

/** The series of the current view, newest first. */
function visible() {
  if (state.view) return state.stations.get(state.view)?.series ?? [];
  const all = [...state.stations.values()].flatMap((st) => st.series);
  return all.sort((a, b) => b.rank - a.rank).slice(0, MAX_SERIES);
}

function render() {
  const recs = visible();
  // Cards are built once and cached on the record; re-rendering only reorders them.
  ui.list.replaceChildren(...recs.map((r) => r.el ?? buildCard(r)));
  ui.empty.hidden = recs.length > 0;
  document.body.dataset.view = state.view ? "one" : "all";
  ui.name.textContent = state.view || "all stations";
  const shown = state.view ? [station(state.view)] : [...state.stations.values()];
  const sum = (k) => shown.reduce((n, st) => n + st.counts[k], 0);
  ui.nConform.textContent = sum("conform");
  ui.nNonconform.textContent = sum("nonconform");
  ui.nNoTemplate.textContent = sum("no_template");
  const mark = recs[0] ? { conform: "✓", nonconform: "✗", no_template: "·" }[recs[0].status] : "";
  document.title = `${mark} ${state.view || "all stations"} · mrqart`.trim();
  renderStations();
  renderChecklist();
  renderAlerts();
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

/** Once a second: the "last file" age and the reconnect countdown. */
function tick() {
  const shown = state.view ? [state.stations.get(state.view)] : [...state.stations.values()];
  const last = shown.map((st) => st?.lastSeen).filter(Boolean).sort((a, b) => b - a)[0];
  ui.lastFile.textContent = last ? `${clock(last)} (${ago(last)})` : "–";
  if (state.conn === "closed") {
    const s = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    ui.banner.textContent = `Disconnected from mrqart — retrying in ${s} s…`;
  }
}

function setConn(conn) {
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

// ---------------------------------------------------------------- messages

function handle(msg) {
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
    case "checklist":
      putChecklist(msg.station, msg.content);
      renderChecklist();
      renderAlerts();
      break;
    case "alert":
      putAlert(msg.station, msg.content, msg.content.ack ?? null);
      renderAlerts();
      break;
    case "ack":
      applyAck(msg.content);
      break;
    case "resolved": // late files completed a series: its "incomplete" alert is withdrawn
      state.alerts.delete(msg.content.id);
      renderAlerts();
      break;
    case "unreadable":
      addUnreadable(msg.station, msg.content || {});
      break;
    default:
      // New message types may be added to the wire format; older pages ignore them.
      break;
  }
}

function addUnreadable(name, { path = "", reason = "" }) {
  const li = document.createElement("li");
  const file = String(path).split("/").pop();
  li.textContent = `${clock(new Date())}  ${name ? name + ": " : ""}${file} — ${reason}`;
  li.title = String(path);
  ui.unreadable.prepend(li);
  while (ui.unreadable.children.length > MAX_UNREADABLE) ui.unreadable.lastElementChild.remove();
  state.unreadable += 1;
  ui.nUnreadable.textContent = `${state.unreadable} unreadable ${state.unreadable === 1 ? "file" : "files"}`;
  ui.unreadableLatest.textContent = li.textContent;
  ui.unreadableBox.hidden = false;
}

// ---------------------------------------------------------------- checklist and alerts

/** The checklist shown: the selected station's; in the all-stations view, the only one. */
function shownChecklist() {
  if (state.view) return [state.view, state.checklists.get(state.view)];
  return state.checklists.size === 1 ? [...state.checklists][0] : [null, undefined];
}

function renderChecklist() {
  const [name, view] = shownChecklist();
  ui.checklist.hidden = !view;
  document.querySelector("main").classList.toggle("with-checklist", Boolean(view));
  if (!view) return;
  const items = (view.items || []).slice(0, MAX_ITEMS);
  const done = items.filter((i) => i.state === "done").length;
  const expected = items.filter((i) => i.state !== "repeated" && i.state !== "unexpected");
  const where = state.view ? "" : `${name}  ·  `;
  ui.checklistMeta.textContent = `${where}${fmt(view.project)}  ·  ${view.pinned ? "pinned protocol" : "learnt protocol"}`
    + `  ·  ${done} of ${expected.length} done${view.finished ? "  ·  session finished" : ""}`;
  const learnt = items.some((i) => i.state !== "unexpected");
  ui.checklistNote.hidden = learnt;
  ui.checklistNote.textContent = learnt ? "" : `No protocol learnt for ${fmt(view.project)} yet: `
    + "series are listed as they come. Pin this session to set one.";
  ui.items.replaceChildren(...items.map((item) => {
    const el = ui.itemTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.state = item.state;
    el.dataset.series = item.series ?? "";
    el.querySelector(".icon").textContent = (ITEM_STATE[item.state] ?? ["·"])[0];
    el.querySelector(".name").textContent = fmt(item.sequence_name)
      + (item.series_number === null || item.series_number === undefined ? "" : `  #${item.series_number}`);
    item.el = el;
    showProgress(item);
    return el;
  }));
  ui.unpin.hidden = !view.pinned;
  ui.pinStart.disabled = !view.session || !(view.items || []).some((i) => i.series);
}

/** The file count of one checklist item, from its n_files: "180 of 300" with a bar under a
 * running or incomplete series, the bare count beside the state word otherwise. */
function showProgress(item) {
  if (!item.el) return;
  const expected = item.expected_files;
  const count = expected ? `${item.n_files} of ${expected}` : `${item.n_files} files`;
  const [, word] = ITEM_STATE[item.state] ?? [null, String(item.state)];
  const barred = item.state === "running" || item.state === "incomplete";
  item.el.querySelector(".progress").hidden = !barred;
  item.el.querySelector(".word").textContent = word;
  item.el.querySelector(".n").textContent = barred || !item.n_files ? "" : ` · ${item.n_files}`;
  item.el.querySelector(".of").textContent = count;
  const bar = item.el.querySelector(".bar");
  bar.hidden = !expected;
  if (expected) bar.firstElementChild.style.width = `${Math.min(100, (100 * item.n_files) / expected)}%`;
}

/** An "update" message: the file count of the matching checklist item, without a re-render. */
function updateItem(name, key, nFiles) {
  const item = state.checklists.get(name)?.items?.find((i) => i.series === key);
  if (!item) return;
  item.n_files = Math.max(item.n_files ?? 0, nFiles);
  showProgress(item);
}

function putChecklist(name, view) {
  state.checklists.set(name, view);
  for (const alert of view.alerts || []) putAlert(name, alert, alert.ack ?? null);
}

/** Add or refresh an alert; an acknowledgement already known is never taken back. */
function putAlert(name, alert, ack) {
  const old = state.alerts.get(alert.id);
  const rec = old ?? { station: name, rank: ++state.rank, el: null };
  rec.alert = alert;
  rec.ack = ack ?? old?.ack ?? null;
  state.alerts.set(alert.id, rec);
  if (old?.el) fillAlert(rec);
  while (state.alerts.size > MAX_ALERTS) {
    const oldest = [...state.alerts.values()].sort((a, b) => a.rank - b.rank)[0];
    state.alerts.delete(oldest.alert.id);
  }
}

function applyAck({ id, reason, at }) {
  const rec = state.alerts.get(id);
  if (!rec) return;
  rec.ack = { reason, at };
  fillAlert(rec);
  renderAlerts();
}

function buildAlert(rec) {
  const el = ui.alertTemplate.content.firstElementChild.cloneNode(true);
  const form = el.querySelector(".ack-form");
  const input = el.querySelector(".ack-reason");
  const error = el.querySelector(".ack-error");
  input.maxLength = MAX_REASON;
  el.querySelector(".ack-open").addEventListener("click", () => {
    form.hidden = false;
    el.querySelector(".ack-open").hidden = true;
    input.focus();
  });
  const close = () => {
    form.hidden = true;
    error.textContent = "";
    el.querySelector(".ack-open").hidden = Boolean(rec.ack);
  };
  el.querySelector(".ack-cancel").addEventListener("click", close);
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") close();
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const reason = input.value.trim();
    if (!reason) {
      error.textContent = "Say why (up to 200 characters).";
      return;
    }
    error.textContent = "saving…";
    try {
      const r = await fetch(`/api/alerts/${encodeURIComponent(rec.alert.id)}/ack`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason }),
      });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      close();
      applyAck(await r.json());
    } catch (err) {
      error.textContent = `Not saved (${err.message}); try again.`;
    }
  });
  rec.el = el;
  fillAlert(rec);
  return el;
}

function fillAlert(rec) {
  const { el, alert, ack } = rec;
  if (!el) return;
  el.dataset.id = alert.id;
  el.dataset.kind = alert.kind;
  el.dataset.acked = ack ? "1" : "0";
  el.querySelector(".text").textContent = alert.text;
  el.querySelector(".where").textContent = state.view ? "" : `  ·  ${rec.station}`;
  el.querySelector(".ack-note").textContent = ack ? `acknowledged ${fmtAt(ack.at)}: ${ack.reason}` : "";
  if (ack) el.querySelector(".ack-form").hidden = true;
  el.querySelector(".ack-open").hidden = Boolean(ack) || !el.querySelector(".ack-form").hidden;
}

function fmtAt(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? fmt(iso) : clock(d);
}

/** Open alerts first, newest first; moved in place so a half-typed reason keeps its focus. */
function renderAlerts() {
  const recs = [...state.alerts.values()]
    .filter((r) => !state.view || r.station === state.view)
    .sort((a, b) => Number(Boolean(a.ack)) - Number(Boolean(b.ack)) || b.rank - a.rank);
  // Refilled each time: the station shown beside an alert depends on the view.
  const els = recs.map((r) => (r.el ? (fillAlert(r), r.el) : buildAlert(r)));
  els.forEach((el, i) => {
    if (ui.alertList.children[i] !== el) ui.alertList.insertBefore(el, ui.alertList.children[i] ?? null);
  });
  while (ui.alertList.children.length > els.length) ui.alertList.lastElementChild.remove();
  ui.alerts.hidden = els.length === 0;
}

function setPinStep(confirming, status = "") {
  ui.pinStart.hidden = confirming;
  ui.pinConfirm.hidden = !confirming;
  ui.pinStatus.textContent = status;
}

async function pinRequest(method, body) {
  const [, view] = shownChecklist();
  if (!view) return;
  setPinStep(false, "saving…");
  try {
    const r = await fetch(`/api/projects/${encodeURIComponent(view.project)}/protocol`, {
      method, headers: { "Content-Type": "application/json" }, body: body && JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const protocol = method === "POST" ? await r.json() : null;
    setPinStep(false, protocol ? `Pinned ${protocol.expected.length} series as the protocol of ${view.project}.`
      : `The protocol of ${view.project} is learnt from history again.`);
  } catch (err) {
    setPinStep(false, `Not saved (${err.message}); try again.`);
  }
}

ui.pinStart.addEventListener("click", () => {
  const [, view] = shownChecklist();
  const n = (view?.items || []).filter((i) => i.series).length;
  ui.pinQuestion.textContent = `Make the ${n} series of this session the expected protocol of ${fmt(view?.project)}?`;
  setPinStep(true);
  ui.pinYes.focus();
});
ui.pinNo.addEventListener("click", () => setPinStep(false));
ui.pinYes.addEventListener("click", () => pinRequest("POST", { from_session: shownChecklist()[1]?.session }));
ui.unpin.addEventListener("click", () => pinRequest("DELETE"));

// ---------------------------------------------------------------- sync and connection

async function getJSON(url, { missing } = {}) {
  const r = await fetch(url, { cache: "no-store" });
  if (r.status === 404 && missing !== undefined) return missing;
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

/** Rebuild the whole model from /api/stations, each station's series and /state. */
async function sync() {
  const [snapshot, stations] = await Promise.all([getJSON("/state"), getJSON("/api/stations")]);
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

function connect() {
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
  ws.onclose = () => {
    if (socket !== ws) return;
    socket = null;
    // Jittered exponential backoff so a room of consoles does not reconnect in lockstep.
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** attempt) * (0.8 + 0.4 * Math.random());
    attempt += 1;
    state.retryAt = Date.now() + delay;
    setConn("closed");
    setTimeout(connect, delay);
  };
}

ui.select.addEventListener("change", () => {
  state.view = ui.select.value;
  history.pushState(null, "", state.view ? `/station/${encodeURIComponent(state.view)}` : "/");
  render();
});
window.addEventListener("popstate", () => {
  state.view = stationFromPath();
  render();
});
setInterval(tick, 1000);
render();
connect();
