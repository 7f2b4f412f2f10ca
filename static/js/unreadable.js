// The unreadable-files box: files the service could not read, newest first.
//
// File paths and reasons are inserted with textContent, never as HTML.

import { clock } from "./format.js";
import { ui } from "./ui.js";

const MAX_UNREADABLE = 20;
let count = 0; // since the page opened; the list shows the last MAX_UNREADABLE

export function addUnreadable(name, { path = "", reason = "" }) {
  const li = document.createElement("li");
  const file = String(path).split("/").pop();
  li.textContent = `${clock(new Date())}  ${name ? name + ": " : ""}${file} — ${reason}`;
  li.title = String(path);
  ui.unreadable.prepend(li);
  while (ui.unreadable.children.length > MAX_UNREADABLE) ui.unreadable.lastElementChild.remove();
  count += 1;
  ui.nUnreadable.textContent = `${count} unreadable ${count === 1 ? "file" : "files"}`;
  ui.unreadableLatest.textContent = li.textContent;
  ui.unreadableBox.hidden = false;
}
