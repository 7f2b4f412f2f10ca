// One series card: the verdict, what differs from the template, and the parameter tables.
//
// Every value that comes from a DICOM header is inserted with textContent, never as
// HTML: a series description is whatever the operator typed at the scanner.
//
// Test hooks: each series element carries data-status (conform|nonconform|no_template),
// data-station and data-key.

import { fmt, fmtTime, sentence } from "./format.js";
import { ui } from "./ui.js";

const TABLE_ROWS = 9; // two side-by-side tables for the 17 parameters

// The invariant parameters (mrqart.check.PARAMS), the table order when there is no template.
const PARAMS = [
  "Project", "SequenceName", "iPAT", "Comments", "SequenceType", "PED_major", "Phase",
  "TR", "TE", "Matrix", "PixelResol", "BWP", "BWPPE", "FA", "TA", "FoV", "SequenceFile",
];
const VERDICT = { conform: "✓ OK", nonconform: "✗ DIFFERS", no_template: "NO TEMPLATE" };

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
  const parts = [`#${fmt(input.SeriesNumber)}`, fmtTime(input.AcqTime), fmt(input.Project)];
  meta.append(document.createTextNode(parts.join("  ·  ")));
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = `  ·  ${rec.station}`;
  meta.append(where);

  const problems = el.querySelector(".problems");
  const wrong = Object.keys(errors).sort((a, b) => order(a) - order(b));
  for (const param of wrong) {
    const li = document.createElement("li");
    li.textContent = sentence(param, errors[param]);
    problems.append(li);
  }
  problems.hidden = wrong.length === 0;

  const note = el.querySelector(".note");
  if (status === "no_template") {
    note.textContent = `No template yet for ${fmt(input.Project)} × ${fmt(input.SequenceName)}: nothing to compare against.`;
  } else {
    note.hidden = true;
  }

  const keys = Object.keys(template).length ? Object.keys(template) : PARAMS.filter((p) => p in input);
  keys.sort((a, b) => order(a) - order(b));
  // Side-by-side tables of TABLE_ROWS rows keep a red card within one screen.
  const tables = el.querySelector(".tables");
  for (let i = 0; i < keys.length; i += TABLE_ROWS) {
    const table = ui.tableTemplate.content.firstElementChild.cloneNode(true);
    for (const param of keys.slice(i, i + TABLE_ROWS)) {
      const tr = table.tBodies[0].insertRow();
      if (param in errors) tr.className = "diff";
      for (const text of [param, fmt(input[param], param), fmt(template[param], param)]) {
        tr.insertCell().textContent = text;
      }
    }
    tables.append(table);
  }
  el.querySelector("details").open = status === "nonconform";
  rec.el = el;
  showCount(rec);
  return el;
}

function order(param) {
  const i = PARAMS.indexOf(param);
  return i < 0 ? PARAMS.length : i;
}

/** The file count on a series card already built. */
export function showCount(rec) {
  if (rec.el) rec.el.querySelector(".count").textContent = fmt(rec.nFiles);
}
