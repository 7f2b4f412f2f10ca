// mrqart console page, the entry module (static/index.html loads only this one): wires
// the station picker and the pin buttons, starts the clock and the connection.
//
//   format.js      header values, times and ages as text
//   ui.js          the page's elements, looked up once
//   model.js       the shared state: series per station, checklists, alerts, connection
//   verdict.js     a series' verdict (its CheckResult joined with its alert); open alerts
//   card.js        one series card
//   sessions.js    the series list grouped by session
//   checklist.js   the session checklist panel (verdicts, summary) and the pin buttons
//   alerts.js      the alarm banner (open alerts) and the acknowledged list; acknowledging
//   alarm.js       the flashing title, the alarm sound and desktop notifications
//   wall.js        the wall view's one-colour session state (?view=wall)
//   unreadable.js  the unreadable-files box
//   page.js        the header, station picker and series list; render()
//   messages.js    the live messages of /ws applied to the model and the page
//   socket.js      /ws, the sync after every (re)connect, the reconnect backoff
//   account.js     who is logged in, logging out, the way to the login page
//
// Every value that comes from a DICOM header or a person (series description, alert
// reason) is inserted with textContent, never as HTML, in every module.

import { showAccount, wireLogout } from "./account.js";
import { wireAlarmSettings } from "./alarm.js";
import { wirePinButtons } from "./checklist.js";
import { state, stationFromPath } from "./model.js";
import { render, tick } from "./page.js";
import { connect } from "./socket.js";
import { ui } from "./ui.js";

ui.select.addEventListener("change", () => {
  state.view = ui.select.value;
  history.pushState(null, "", state.view ? `/station/${encodeURIComponent(state.view)}` : "/");
  render();
});
window.addEventListener("popstate", () => {
  state.view = stationFromPath();
  render();
});
// The wall view: style.css lays the page out for a second monitor from this attribute.
if (state.wall) document.documentElement.dataset.layout = "wall";
document.addEventListener("mrqart:changed", render); // an acknowledgement saved here
wirePinButtons();
wireLogout();
wireAlarmSettings();
setInterval(tick, 1000);
render();
showAccount().then((ok) => ok && connect(), () => connect());
