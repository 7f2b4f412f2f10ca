// Alerts: open ones in the alarm banner across the top of the page (role="alert", in the
// sticky header, so it stays in view however far the list is scrolled), acknowledged
// ones, muted and with their reason, in the list under the header. Each is acknowledged
// with a reason typed at the console, in the banner itself.
//
// Alert texts and acknowledgement reasons are inserted with textContent, never as HTML.
//
// Test hooks: alerts carry data-id, data-kind and data-acked (0|1); an acknowledgement
// saved from this page dispatches "mrqart:changed" on document (main.js re-renders).

import { announce } from "./alarm.js";
import { fmtAt } from "./format.js";
import { state } from "./model.js";
import { placeChildren, ui } from "./ui.js";
import { inView, isOpen } from "./verdict.js";

const MAX_ALERTS = 30; // the oldest alerts are forgotten first
const MAX_REASON = 200; // characters, as the service accepts

/** Add or refresh an alert; an acknowledgement already known is never taken back. */
export function putAlert(name, alert, ack) {
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

/** A late file completed a series: its "incomplete" alert is withdrawn. */
export function removeAlert(id) {
  state.alerts.delete(id);
  renderAlerts();
}

export function applyAck({ id, reason, at }) {
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
      document.dispatchEvent(new Event("mrqart:changed"));
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
  el.querySelector(".icon").textContent = alert.kind === "nonconform" ? "✗" : "⚠";
  el.querySelector(".text").textContent = alert.text;
  el.querySelector(".where").textContent = state.view ? "" : `  ·  ${rec.station}`;
  // A series that differed and was accepted as intended since needs no acknowledgement.
  const accepted = alert.kind === "nonconform" && !isOpen(rec) && !ack;
  el.dataset.acked = ack || accepted ? "1" : "0";
  el.querySelector(".ack-note").textContent = ack ? `acknowledged ${fmtAt(ack.at)}: ${ack.reason}`
    : accepted ? "accepted as intended" : "";
  if (ack || accepted) el.querySelector(".ack-form").hidden = true;
  el.querySelector(".ack-open").hidden = Boolean(ack || accepted) || !el.querySelector(".ack-form").hidden;
}

/** Put each alert element in its place: open ones in the banner, the others in the list,
 * newest first. Elements are moved, not rebuilt. */
export function renderAlerts() {
  const recs = [...state.alerts.values()].filter(inView).sort((a, b) => b.rank - a.rank);
  // Refilled each time: the station shown beside an alert depends on the view.
  const el = (r) => (r.el ? (fillAlert(r), r.el) : buildAlert(r));
  placeChildren(ui.alarmList, recs.filter(isOpen).map(el));
  placeChildren(ui.alertList, recs.filter((r) => !isOpen(r)).map(el));
  ui.alarm.hidden = ui.alarmList.children.length === 0;
  ui.alerts.hidden = ui.alertList.children.length === 0;
  announce();
}
