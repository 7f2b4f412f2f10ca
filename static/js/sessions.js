// The series list grouped by session: a heading per session (subject, start time,
// station, counts), the current session first and open, earlier ones collapsed.
//
// Subject names, station names and series descriptions are inserted with textContent,
// never as HTML.
//
// Test hooks: each session element (<details class="session">) carries data-session,
// data-station and data-current (1 for a station's current session).

import { buildCard } from "./card.js";
import { fmt, fmtTime } from "./format.js";
import { state } from "./model.js";
import { placeChildren, ui } from "./ui.js";

const groups = new Map(); // station + "\n" + session -> {el, current}

/** The session a series belongs to: its StudyInstanceUID (the service keys series by it). */
function sessionOf(rec) {
  const study = rec.content?.input?.StudyUID;
  if (study !== undefined && study !== null && study !== "null") return String(study);
  const i = rec.key.lastIndexOf(":");
  return i > 0 ? rec.key.slice(0, i) : "";
}

/** The series records (newest first) as sessions, the session of the newest series first. */
function bySession(recs) {
  const out = new Map();
  for (const rec of recs) {
    const id = `${rec.station}\n${sessionOf(rec)}`;
    if (!out.has(id)) out.set(id, { id, station: rec.station, session: sessionOf(rec), recs: [] });
    out.get(id).recs.push(rec);
  }
  return [...out.values()];
}

/** Replace the list's content with the sessions of ``recs`` (newest first). */
export function renderSessions(recs) {
  const sessions = bySession(recs);
  const current = new Set([...state.checklists].map(([name, view]) => `${name}\n${view.session}`));
  if (sessions.length) current.add(sessions[0].id); // the newest series' session is current too
  const els = sessions.map((s) => {
    const isCurrent = current.has(s.id);
    let group = groups.get(s.id);
    if (!group) {
      const el = ui.sessionTemplate.content.firstElementChild.cloneNode(true);
      el.dataset.session = s.session;
      el.dataset.station = s.station;
      group = { el, current: null };
      groups.set(s.id, group);
    }
    // Opened or closed only when it becomes or stops being current: a session the
    // operator opened by hand stays open.
    if (group.current !== isCurrent) group.el.open = isCurrent;
    group.current = isCurrent;
    group.el.dataset.current = isCurrent ? "1" : "0";
    fillHeading(group.el, s);
    placeChildren(group.el.querySelector(".session-series"), s.recs.map((r) => r.el ?? buildCard(r)));
    return group.el;
  });
  for (const id of groups.keys()) {
    if (!sessions.some((s) => s.id === id)) groups.delete(id);
  }
  placeChildren(ui.list, els);
}

function fillHeading(el, { station, recs }) {
  const first = recs[recs.length - 1].content?.input || {};
  const subject = recs.map((r) => r.content?.input?.SubID).find((v) => v && v !== "null");
  const count = (status) => recs.filter((r) => r.status === status).length;
  el.querySelector(".subject").textContent = fmt(subject);
  el.querySelector(".started").textContent = fmtTime(first.AcqTime, first.AcqDate);
  el.querySelector(".station").textContent = station;
  el.querySelector(".n-series").textContent = `${recs.length} series`;
  el.querySelector(".n-conform").textContent = count("conform") ? `✓ ${count("conform")}` : "";
  el.querySelector(".n-differ").textContent = count("nonconform") ? `✗ ${count("nonconform")} differ` : "";
  el.querySelector(".n-none").textContent = count("no_template") ? `${count("no_template")} no template` : "";
}
