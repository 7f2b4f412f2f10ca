// The wall view (/station/<id>?view=wall), for a second monitor seen from 2-3 m: the
// current session's state in one colour, its checklist and its alarm; no controls but
// acknowledge (style.css hides the rest under html[data-layout="wall"]).
//
//   bad      any open alert of the session (a series differs, stopped short, is missing)
//   running  the session is acquiring and nothing is wrong so far
//   ok       the session is finished and nothing is wrong
//
// Test hooks: #wall-state carries data-state (ok | running | bad | none).

import { fmt } from "./format.js";
import { shownChecklist, state } from "./model.js";
import { ui } from "./ui.js";
import { alarmTitle, openAlarms } from "./verdict.js";

export function renderWall() {
  if (!state.wall) return;
  const [name, view] = shownChecklist();
  const open = openAlarms();
  let word;
  if (!view) {
    ui.wallState.dataset.state = "none";
    word = "Waiting for a session";
  } else if (open.length) {
    ui.wallState.dataset.state = "bad";
    word = open.length === 1 ? alarmTitle(open[0]) : `✗ ${open.length} alerts: ${alarmTitle(open[0]).slice(2)} …`;
  } else if (!view.finished) {
    ui.wallState.dataset.state = "running";
    word = "▶ Running · no difference so far";
  } else {
    ui.wallState.dataset.state = "ok";
    word = "✓ Session complete · all conform";
  }
  document.documentElement.dataset.sessionState = ui.wallState.dataset.state;
  ui.wallWord.textContent = word;
  ui.wallWhere.textContent = view ? `${name ?? ""}  ·  ${fmt(view.project)}` : (name ?? "");
}
