// One series card: the verdict, what differs from the template, and the parameter tables.
//
// Every value that comes from a DICOM header is inserted with textContent, never as
// HTML: a series description is whatever the operator typed at the scanner.
//
// Test hooks: each series element carries data-status (conform|nonconform|no_template|accepted|software_changed),
// data-station and data-key.

import { addTemplateControls } from "./accept.js";
import { PARAMS, fmt, fmtTime, order, sentence } from "./format.js";
import { ui } from "./ui.js";
import { differences, notRecorded } from "./verdict.js";

const TABLE_ROWS = 9; // two side-by-side tables for the 17 parameters

const VERDICT = {
  conform: "✓ OK", nonconform: "✗ DIFFERS", no_template: "NO TEMPLATE",
  accepted: "✓ ACCEPTED", software_changed: "SOFTWARE CHANGED",
};

/** The card of a series record (model.putSeries), cached on the record as rec.el. */
export function buildCard(rec) {
  const { content, status } = rec;
  const input = content.input || {};
  const template = content.template || {};
  const errors = content.errors || {};
  const el = ui.template.content.firstElementChild.cloneNode(true);
  el.dataset.status = status;
  el.dataset.station = rec.station;
  el.dataset.key = rec.key;
  if (rec.fresh) el.classList.add("fresh");
  el.querySelector(".verdict").textContent = VERDICT[status] ?? status;
  el.querySelector(".seq").textContent = fmt(input.SequenceName);

  const meta = el.querySelector(".meta");
  const parts = [`#${fmt(input.SeriesNumber)}`, fmtTime(input.AcqTime, input.AcqDate), fmt(input.Project)];
  meta.append(document.createTextNode(parts.join("  ·  ")));
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = `  ·  ${rec.station}`;
  meta.append(where);

  const problems = el.querySelector(".problems");
  const wrong = differences(content);
  for (const [param, error] of wrong) {
    const li = document.createElement("li");
    li.textContent = sentence(param, error);
    problems.append(li);
  }
  problems.hidden = wrong.length === 0;

  const note = el.querySelector(".note");
  if (status === "accepted" && !content.note) {
    note.textContent = `accepted as intended: ${fmt(content.accepted?.reason)}`;
  } else if (status === "no_template") {
    note.textContent = `No template yet for ${fmt(input.Project)} × ${fmt(input.SequenceName)}: nothing to compare against.`;
  } else if (content.note) {
    // "accepted: <reason>", or "first series since the software changed from X to Y"
    note.textContent = String(content.note);
  } else {
    note.hidden = true;
  }

  const keys = Object.keys(template).length ? Object.keys(template) : PARAMS.filter((p) => p in input);
  keys.sort((a, b) => order(a) - order(b));
  // Side-by-side tables of TABLE_ROWS rows keep a red card within one screen.
  const tables = el.querySelector(".tables");
  const unrecorded = notRecorded(content);
  for (let i = 0; i < keys.length; i += TABLE_ROWS) {
    const table = ui.tableTemplate.content.firstElementChild.cloneNode(true);
    for (const param of keys.slice(i, i + TABLE_ROWS)) {
      const tr = table.tBodies[0].insertRow();
      // A field this scanner does not record is not a difference (headers' not_recorded).
      const missing = unrecorded.has(param);
      if (missing) tr.className = "not-recorded";
      else if (param in errors) tr.className = "diff";
      const current = missing ? "not recorded by this scanner" : fmt(input[param], param);
      for (const text of [param, current, fmt(template[param], param)]) {
        tr.insertCell().textContent = text;
      }
    }
    tables.append(table);
  }
  el.querySelector("details").open = status === "nonconform";
  addTemplateControls(el, rec);
  rec.el = el;
  showCount(rec);
  return el;
}

/** The file count on a series card already built. */
export function showCount(rec) {
  if (rec.el) rec.el.querySelector(".count").textContent = fmt(rec.nFiles);
}
