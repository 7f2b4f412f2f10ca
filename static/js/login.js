// The login page (static/login.html): POST /api/login, then back to the page that sent
// us here (?next=/station/X), which must be one of ours.
//
// Test hooks on <body>: data-state = ready | sending | failed.

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

/** Where to go after logging in: a path on this site only (never //elsewhere). */
function next() {
  const target = new URLSearchParams(location.search).get("next") ?? "/";
  return target.startsWith("/") && !target.startsWith("//") && !target.startsWith("/\\") ? target : "/";
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  document.body.dataset.state = "sending";
  error.textContent = "";
  const body = {
    name: document.getElementById("login-name").value.trim(),
    password: document.getElementById("login-password").value,
  };
  let r;
  try {
    r = await fetch("/api/login", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  } catch (err) {
    r = null;
    error.textContent = `mrqart did not answer (${err.message}); try again.`;
  }
  if (r?.ok) {
    location.assign(next());
    return;
  }
  if (r) {
    error.textContent = r.status === 401 ? "Wrong name or password."
      : r.status === 429 ? "Too many failed logins for this name: try again in 5 minutes."
      : r.status === 404 ? "This console has no accounts: open it without logging in."
        : `Not logged in (HTTP ${r.status}).`;
  }
  document.body.dataset.state = "failed";
});
document.body.dataset.state = "ready";
