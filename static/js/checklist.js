// The session checklist panel: the expected series of the shown station's session, their
// file counts and verdicts, a summary ("7 of 7 acquired, 2 differ"), and the buttons that
// pin a session as its project's protocol.
//
// Sequence names, project names and reasons are inserted with textContent, never as HTML.
//
// Test hooks: checklist items carry data-state, data-series and data-verdict (conform |
// differs | acknowledged | accepted | no_template | ""); #checklist-summary carries
// data-differ (the number of series that differ and are not acknowledged or accepted).

import { putAlert } from "./alerts.js";
import { fmt } from "./format.js";
import { shownChecklist, state } from "./model.js";
import { ui } from "./ui.js";
import { verdictOf } from "./verdict.js";

const MAX_ITEMS = 80; // checklist items shown (a protocol is a dozen series)
// Checklist states: an icon and a word each, so no state is told by colour alone.
const ITEM_STATE = {
  done: ["✓", "done"], running: ["▶", "running"], pending: ["○", "not yet"],
  incomplete: ["◐", "incomplete"], missing: ["✗", "missing"], repeated: ["↻", "repeated"],
  unexpected: ["?", "unexpected"],
};

/** A station's checklist View from the service, with the alerts it carries. */
export function putChecklist(name, view) {
  state.checklists.set(name, view);
  // The view lists alerts newest first: put the oldest first so that ranks follow time.
  for (const alert of [...(view.alerts || [])].reverse()) putAlert(name, alert, alert.ack ?? null);
}

export function renderChecklist() {
  const [name, view] = shownChecklist();
  ui.checklist.hidden = !view;
  document.querySelector("main").classList.toggle("with-checklist", Boolean(view));
  if (!view) return;
  const items = (view.items || []).slice(0, MAX_ITEMS);
  const where = state.view ? "" : `${name}  ·  `;
  ui.checklistMeta.textContent = `${where}${fmt(view.project)}  ·  ${view.pinned ? "pinned protocol" : "learnt protocol"}`
    + `${view.finished ? "  ·  session finished" : ""}`;
  for (const item of items) Object.assign(item, verdictOf(name, item.series));
  showSummary(items);
  const learnt = items.some((i) => i.state !== "unexpected");
  ui.checklistNote.hidden = learnt;
  ui.checklistNote.textContent = learnt ? "" : `No protocol learnt for ${fmt(view.project)} yet: `
    + "series are listed as they come. Pin this session to set one.";
  ui.items.replaceChildren(...items.map((item) => {
    const el = ui.itemTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.state = item.state;
    el.dataset.series = item.series ?? "";
    el.dataset.verdict = item.verdict;
    el.querySelector(".item-verdict").textContent = item.text;
    // A series that differs shows ✗ whatever its completion: red until acknowledged.
    el.querySelector(".icon").textContent = item.verdict === "differs" ? "✗" : (ITEM_STATE[item.state] ?? ["·"])[0];
    el.querySelector(".name").textContent = fmt(item.sequence_name)
      + (item.series_number === null || item.series_number === undefined ? "" : `  #${item.series_number}`);
    item.el = el;
    showProgress(item);
    return el;
  }));
  ui.unpin.hidden = !view.pinned;
  ui.pinStart.disabled = !view.session || !(view.items || []).some((i) => i.series);
}

/** "7 of 7 acquired, 2 differ, 1 incomplete": what the session has, and what is wrong. */
function showSummary(items) {
  const expected = items.filter((i) => i.state !== "repeated" && i.state !== "unexpected");
  const acquired = expected.filter((i) => i.series).length;
  const n = (pred) => items.filter(pred).length;
  const differ = n((i) => i.verdict === "differs");
  const acked = n((i) => i.verdict === "acknowledged");
  const parts = [`${acquired} of ${expected.length} acquired`];
  if (differ + acked) parts.push(`${differ + acked} differ${acked ? ` (${acked} acknowledged)` : ""}`);
  for (const st of ["incomplete", "missing"]) {
    if (n((i) => i.state === st)) parts.push(`${n((i) => i.state === st)} ${st}`);
  }
  ui.checklistSummary.textContent = parts.join(", ");
  ui.checklistSummary.dataset.differ = String(differ);
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
export function updateItem(name, key, nFiles) {
  const item = state.checklists.get(name)?.items?.find((i) => i.series === key);
  if (!item) return;
  item.n_files = Math.max(item.n_files ?? 0, nFiles);
  showProgress(item);
}

// ---------------------------------------------------------------- pinning the protocol

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

/** The pin, confirm, cancel and unpin buttons of the panel (called once, by main.js). */
export function wirePinButtons() {
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
}
