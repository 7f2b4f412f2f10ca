// The alarm beyond the banner: the tab title flashes the newest open alert ("✗ rest: TR"),
// an optional short sound (off by default; the switch is remembered in localStorage; the
// sound file is static/alarm.wav, served by mrqart) and a desktop notification when the
// browser allows it. Sound and notification come once per new alert, not for the alerts
// already open when the page loads.
//
// Test hooks on <body>: data-alarm = the number of open alerts; data-announced = the
// number of alerts announced since the page opened; data-notified = the number of
// desktop notifications shown.

import { state } from "./model.js";
import { ui } from "./ui.js";
import { alarmTitle, openAlarms } from "./verdict.js";

const SOUND_KEY = "mrqart.sound";
const announced = new Set(); // alert ids already announced (or open at the first sync)
let baseTitle = "mrqart";
let count = 0;
let notified = 0;

/** The switch, read from and written to localStorage; the notification button. */
export function wireAlarmSettings() {
  ui.soundSwitch.checked = localStorage.getItem(SOUND_KEY) === "on";
  ui.soundSwitch.addEventListener("change", () => {
    localStorage.setItem(SOUND_KEY, ui.soundSwitch.checked ? "on" : "off");
    if (ui.soundSwitch.checked) play(); // let the operator hear what it will sound like
  });
  const notifications = "Notification" in window;
  ui.notifyButton.hidden = !notifications || Notification.permission !== "default";
  ui.notifyButton.addEventListener("click", async () => {
    await Notification.requestPermission();
    ui.notifyButton.hidden = Notification.permission !== "default";
  });
}

function play() {
  ui.sound.currentTime = 0;
  // Browsers refuse to play before the first click on the page: the banner still shows.
  ui.sound.play().catch((err) => console.warn("mrqart: alarm sound not played", err));
}

/** The page's title without an alarm (page.render sets it). */
export function setBaseTitle(title) {
  baseTitle = title;
  flashTitle();
}

/** Announce the open alerts that are new; called after every change of the alerts. */
export function announce() {
  const open = openAlarms();
  document.body.dataset.alarm = String(open.length);
  for (const rec of open) {
    if (announced.has(rec.alert.id)) continue;
    announced.add(rec.alert.id);
    if (state.syncs === 0) continue; // open before this page loaded: no sound, no pop-up
    count += 1;
    document.body.dataset.announced = String(count);
    if (ui.soundSwitch.checked) play();
    if ("Notification" in window && Notification.permission === "granted") {
      new Notification(`mrqart ${rec.station}`, { body: rec.alert.text, tag: rec.alert.id });
      notified += 1;
      document.body.dataset.notified = String(notified);
    }
  }
  flashTitle();
}

/** Once a second (page.tick) and after every change: the title alternates between the
 * newest open alert and the page's own title, so a background tab catches the eye. */
export function flashTitle() {
  const [newest] = openAlarms();
  const odd = Math.floor(Date.now() / 1000) % 2 === 1;
  const text = newest && !odd ? alarmTitle(newest) : baseTitle;
  if (document.title !== text) document.title = text;
}
