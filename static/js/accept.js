// "Accept as intended" on a series card, and the history of its template.
//
// A person (a physicist; the server refuses anyone else) accepts a series that differs
// from its template: its parameters become the template, later series compare against
// them, and the service sends the series again with status "accepted" (the card is
// rebuilt by the "new" message). At a shared console without accounts the page asks
// for the person's name; with accounts the server records the signed-in user.
//
// Everything from a header or a person goes in with textContent.
//
// Test hooks: .accept-open (the button), .accept-form with .accept-reason, .accept-by
// and .accept-error; .history-open and .history (a list, one li per change).

import { fmt, fmtAt } from "./format.js";

const MAX_REASON = 200; // characters, as the service accepts
const ACCEPTABLE = new Set(["nonconform", "software_changed"]);
const SHOWN = ["TR", "TE", "FA", "Matrix", "PixelResol", "iPAT"];

function button(cls, text) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = text;
  return b;
}

function field(cls, placeholder, maxLength) {
  const input = document.createElement("input");
  input.className = cls;
  input.placeholder = placeholder;
  input.maxLength = maxLength;
  return input;
}

/** Whether this page's user may accept: the server decides, this only hides the button
 * from roles it would refuse (data-role is set by account.js once /api/me answers). */
function mayAccept() {
  const role = document.body.dataset.role;
  return role === undefined || role === "physicist";
}

/** Whether the server records a typed name (a console without accounts). */
function sharedConsole() {
  const auth = document.body.dataset.auth;
  return auth === undefined || auth === "local" || auth === "none";
}

function acceptForm(el, rec, controls) {
  const form = document.createElement("form");
  form.className = "accept-form";
  form.hidden = true;
  const reason = field("accept-reason", "why this change is intended", MAX_REASON);
  const by = field("accept-by", "your name", MAX_REASON);
  const error = document.createElement("span");
  error.className = "accept-error";
  const submit = button("accept-submit", "Accept");
  submit.type = "submit";
  const cancel = button("accept-cancel", "Cancel");
  form.append(reason, by, submit, cancel, error);
  const open = button("accept-open", "Accept as intended");
  open.hidden = !mayAccept();
  open.addEventListener("click", () => {
    by.hidden = !sharedConsole();
    form.hidden = false;
    open.hidden = true;
    reason.focus();
  });
  cancel.addEventListener("click", () => {
    form.hidden = true;
    open.hidden = false;
    error.textContent = "";
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { reason: reason.value.trim() };
    if (!body.reason) {
      error.textContent = "Say why (up to 200 characters).";
      return;
    }
    if (!by.hidden) {
      body.by = by.value.trim();
      if (!body.by) {
        error.textContent = "Say who accepts.";
        return;
      }
    }
    error.textContent = "saving…";
    try {
      const r = await fetch(`/api/series/${encodeURIComponent(rec.key)}/accept`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (!r.ok) throw new Error(r.status === 403 ? "a physicist accepts template changes" : `HTTP ${r.status}`);
      error.textContent = "accepted";
      // The service's "new" message for this series rebuilds the card.
    } catch (err) {
      error.textContent = `Not accepted (${err.message}).`;
    }
  });
  controls.append(open, form);
}

function describeChange(h) {
  const params = h.params ? SHOWN.map((p) => `${p} ${fmt(h.params[p], p)}`).join(", ") : "no set";
  const series = h.session ? ` (series ${h.series_number})` : "";
  return `${fmtAt(h.at)} · ${h.kind} by ${h.by}: ${h.reason}${series} — ${params}`;
}

function historyView(rec, controls) {
  const input = rec.content.input || {};
  const list = document.createElement("ol");
  list.className = "history";
  list.hidden = true;
  const open = button("history-open", "Template history");
  open.addEventListener("click", async () => {
    if (!list.hidden) {
      list.hidden = true;
      return;
    }
    list.replaceChildren();
    const name = input.ImageType?.[2] === "P" ? `${input.SequenceName} (phase)` : input.SequenceName;
    const query = new URLSearchParams({ project: String(input.Project), sequence: String(name) });
    try {
      const r = await fetch(`/api/templates/history?${query}`, { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const history = await r.json();
      for (const h of history) {
        const li = document.createElement("li");
        li.dataset.kind = h.kind;
        li.textContent = describeChange(h);
        list.append(li);
      }
      if (history.length === 0) list.append(Object.assign(document.createElement("li"), { textContent: "no changes yet" }));
    } catch (err) {
      list.append(Object.assign(document.createElement("li"), { textContent: `history unavailable (${err.message})` }));
    }
    list.hidden = false;
  });
  controls.append(open, list);
}

/** Add the template controls to a series card (card.buildCard): "Accept as intended"
 * when the series differs, and its template's history. */
export function addTemplateControls(el, rec) {
  const controls = document.createElement("div");
  controls.className = "template-controls";
  if (ACCEPTABLE.has(rec.status)) acceptForm(el, rec, controls);
  if (rec.status !== "no_template") historyView(rec, controls);
  el.append(controls);
}
