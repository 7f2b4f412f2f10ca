// Formatting helpers: header values, times and ages as text. Pure functions, no DOM.

/** A header value as readable text: lists joined, floats without float noise. */
export function fmt(value, param) {
  if (value === null || value === undefined || value === "null") return "—";
  if (Array.isArray(value)) {
    const sep = param === "Matrix" || param === "PixelResol" ? " × " : ", ";
    return value.map((v) => fmt(v)).join(sep);
  }
  if (typeof value === "number") {
    return Number.isInteger(value) ? String(value) : String(parseFloat(value.toFixed(4)));
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// The invariant parameters (mrqart.rules.check PARAMS): the order differences are told in.
export const PARAMS = [
  "Project", "SequenceName", "iPAT", "Comments", "SequenceType", "PED_major", "Phase",
  "TR", "TE", "Matrix", "PixelResol", "BWP", "BWPPE", "FA", "TA", "FoV", "SequenceFile",
];

/** Sort key of a parameter name: PARAMS order, others after. */
export function order(param) {
  const i = PARAMS.indexOf(param);
  return i < 0 ? PARAMS.length : i;
}

/** "TR should be 1300 but is 2000" for one entry of CheckResult.errors. */
/** "TR 2000, expected 1300": the short form for the checklist, banner and wall. */
export function shortDiff(param, { expect, have }) {
  return `${param} ${fmt(have, param)}, expected ${fmt(expect, param)}`;
}

export function sentence(param, { expect, have }) {
  const is = have === null || have === undefined || have === "null" ? "is missing" : `is ${fmt(have, param)}`;
  return `${param} should be ${fmt(expect, param)} but ${is}`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** "24 Nov " for a day that is not today, "" for today (dates only where they differ). */
function dayPrefix(year, month, day) {
  const now = new Date();
  if (year === now.getFullYear() && month === now.getMonth() && day === now.getDate()) return "";
  const y = year === now.getFullYear() ? "" : ` ${year}`;
  return `${day} ${MONTHS[month]}${y} `;
}

/** DICOM TM "HHMMSS.ffffff" (and DA "YYYYMMDD") as "10:32", "24 Nov 10:32" on another day.
 * The scanner writes its local time, the console's. Anything unparsable unchanged. */
export function fmtTime(tm, da) {
  const m = /^(\d\d)(\d\d)/.exec(String(tm ?? ""));
  if (!m) return fmt(tm);
  const d = /^(\d{4})(\d\d)(\d\d)$/.exec(String(da ?? ""));
  const day = d ? dayPrefix(Number(d[1]), Number(d[2]) - 1, Number(d[3])) : "";
  return `${day}${m[1]}:${m[2]}`;
}

/** A Date as the console's local "10:32" ("24 Nov 10:32" on another day). */
export function clock(date) {
  const hm = date.toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit" });
  return dayPrefix(date.getFullYear(), date.getMonth(), date.getDate()) + hm;
}

/** An ISO timestamp from the service as local clock time; anything unparsable unchanged. */
export function fmtAt(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? fmt(iso) : clock(d);
}

export function ago(date) {
  const s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}
