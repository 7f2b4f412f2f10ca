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

/** "TR should be 1300 but is 2000" for one entry of CheckResult.errors. */
export function sentence(param, { expect, have }) {
  const is = have === null || have === undefined || have === "null" ? "is missing" : `is ${fmt(have, param)}`;
  return `${param} should be ${fmt(expect, param)} but ${is}`;
}

/** DICOM TM "HHMMSS.ffffff" as "HH:MM:SS"; anything else unchanged. */
export function fmtTime(tm) {
  const m = /^(\d\d)(\d\d)(\d\d)/.exec(String(tm ?? ""));
  return m ? `${m[1]}:${m[2]}:${m[3]}` : fmt(tm);
}

export function clock(date) {
  return date.toLocaleTimeString([], { hour12: false });
}

/** An ISO timestamp from the service as a clock time; anything unparsable unchanged. */
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
