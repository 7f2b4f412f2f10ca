// Watched directories that are gone (a share unmounted, a directory deleted):
// "not watching /srv/scanner since 10:02" until the service watches them again.

const banner = document.getElementById("watch-banner");

/** Show {root: ISO time since when} from /healthz or a "watch" message; {} hides it. */
export function showWatching(notWatching) {
  const gone = Object.entries(notWatching || {});
  const hhmm = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  banner.textContent = gone.map(([root, since]) => `not watching ${root} since ${hhmm(since)}`).join("; ");
  banner.hidden = gone.length === 0;
}
