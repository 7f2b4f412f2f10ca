// What the service cannot do right now, in one banner: watched directories that are
// gone (a share unmounted, a directory deleted), "not watching /srv/scanner since 10:02",
// and a database that does not answer, "database unreachable since 10:02" (verdicts go
// on from the service's template cache; writes wait on its disk).

const banner = document.getElementById("watch-banner");
const parts = { roots: [], database: [] };

function show() {
  const lines = [...parts.roots, ...parts.database];
  banner.textContent = lines.join("; ");
  banner.hidden = lines.length === 0;
}

/** Show {root: ISO time since when} from /healthz or a "watch" message; {} hides it. */
export function showWatching(notWatching) {
  const hhmm = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  parts.roots = Object.entries(notWatching || {}).map(
    ([root, since]) => `not watching ${root} since ${hhmm(since)}`);
  show();
}

/** Show {reachable, unreachable_since: "HH:MM"} from /healthz or a "database" message. */
export function showDatabase(database) {
  parts.database = database && database.reachable === false
    ? [`database unreachable since ${database.unreachable_since || "?"}`] : [];
  show();
}
