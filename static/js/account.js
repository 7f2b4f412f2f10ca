// Who is using the page: the account shown in the header, logging out, and the way to
// the login page when the session is missing or has ended (HTTP 401, WebSocket 4401).
//
// The server decides everything (roles, patient data); this only shows it. Test hooks on
// <body>: data-role = viewer | operator | physicist, data-auth = accounts | proxy |
// local | none.

import { ui } from "./ui.js";

/** WebSocket close code the server sends when the session ended. */
export const SESSION_ENDED = 4401;

export function toLogin() {
  location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
}

/** Ask the server who we are and show it; false (and to the login page) if nobody. */
export async function showAccount() {
  const r = await fetch("/api/me", { cache: "no-store" });
  if (r.status === 401) {
    toLogin();
    return false;
  }
  if (!r.ok) return true; // a service without accounts support: nothing to show
  const me = await r.json();
  document.body.dataset.role = me.role;
  document.body.dataset.auth = me.auth;
  ui.authMode.hidden = me.auth !== "none";
  ui.userName.textContent = me.auth === "local" || me.auth === "none" ? "" : `${me.name} · ${me.role}`;
  ui.logout.hidden = me.csrf === null;
  return true;
}

/** After the WebSocket closed: to the login page if the session is gone. */
export async function checkSession(code) {
  if (code === SESSION_ENDED) {
    toLogin();
    return;
  }
  try {
    await showAccount();
  } catch {
    // the service is down: the reconnect loop retries
  }
}

export function wireLogout() {
  ui.logout.addEventListener("click", async () => {
    await fetch("/api/logout", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    toLogin();
  });
}
