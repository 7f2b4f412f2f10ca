"""Template policy: which series vote, when a parameter set becomes the template, and
what a person's acceptance or a scanner software change does to a verdict.

Pure: no I/O. The store keeps the tallies and calls :func:`elect`; the live service
calls :func:`votes`, :func:`announce_software_change` and :func:`accepted_result`.

The policy (issue 12):

- **Who votes.** Trusted series: imported history, live series that conformed to
  the template when they were checked (or had none yet), and series a person
  accepted. A live series that did not conform does not vote until it is accepted,
  so one wrong acquisition never becomes the reference.
- **Ties keep the established set.** A set replaces the established template only
  when it has strictly more votes. With no established set, the set with most
  votes wins (ties: the latest acquired).
- **A person's decision starts a new count.** Accepting a series (or importing a
  template file) makes its set the template and resets every set's votes of that
  Project x SeriesDescription: the accepted series is the one vote, and later
  trusted series add to it. Otherwise the old set's history would outvote the
  decision at once.
- **Software upgrades.** The first series of each sequence on a station after its
  (0018,1020) SoftwareVersions changed is announced as such instead of being
  flagged parameter by parameter; it does not vote until a person accepts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Statuses of a live verdict whose series vote (see the module doc).
TRUSTED_STATUSES = frozenset({"conform", "no_template", "accepted"})
#: Who decided a change the store made by counting votes.
LEARNT_BY = "mrqart"
#: Kinds of template change kept in the history.
CHANGE_KINDS = ("learnt", "accepted", "imported", "pinned", "unpinned")


@dataclass(frozen=True, slots=True)
class Tally:
    """One parameter set's trusted votes since the last decision by a person."""

    set_id: int
    votes: int
    last_seen: str | None = None  # "YYYYMMDD HHMMSS.ffffff", the latest acquisition


@dataclass(frozen=True, slots=True)
class Election:
    """The outcome of a count: the template's set and, when it changed, why."""

    winner: int | None
    changed: bool
    reason: str = ""


def votes(source: str, result: Mapping[str, Any] | None = None) -> bool:
    """Whether a series is trusted (votes): imported history always; a live series when
    its verdict ``result`` (a CheckResult) conformed, had no template yet, or was accepted."""
    if source == "import":
        return True
    return result is not None and result.get("status") in TRUSTED_STATUSES


def elect(established: int | None, tallies: Iterable[Tally]) -> Election:
    """The template after a count: the established set unless another set strictly
    outnumbers it; with none established, the set with most votes (ties: latest seen)."""
    ranked = sorted(tallies, key=lambda t: (t.votes, t.last_seen or "", t.set_id), reverse=True)
    if not ranked or ranked[0].votes <= 0:
        return Election(established, False)
    best = ranked[0]
    if established is None:
        return Election(best.set_id, True, _votes_text(best.votes))
    held = next((t.votes for t in ranked if t.set_id == established), 0)
    if best.set_id == established or best.votes <= held:
        return Election(established, False)
    return Election(best.set_id, True,
                    f"{_votes_text(best.votes)} against {held} for the established set")


def _votes_text(n: int) -> str:
    return "first trusted series" if n == 1 else f"{n} trusted series"


def software_change(previous: Any, current: Any) -> tuple[str, str] | None:
    """(from, to) when a station's SoftwareVersions changed between the last series of a
    sequence and this one; None when either is unknown or they are equal."""
    if previous in (None, "null", "") or current in (None, "null", ""):
        return None
    before, after = _version_text(previous), _version_text(current)
    return None if before.casefold() == after.casefold() else (before, after)


def _version_text(value: Any) -> str:
    # SoftwareVersions is multi-valued LO: the walker gives a list for "a\b".
    return " / ".join(map(str, value)) if isinstance(value, list) else " ".join(str(value).split())


def announce_software_change(result: Mapping[str, Any], change: tuple[str, str]) -> dict[str, Any]:
    """The verdict of the first series of a sequence since the software changed: the
    differences stay listed under ``errors`` but the status says why, once
    (``"software_changed"`` when anything differs, else the verdict unchanged), with the
    sentence in ``"note"``."""
    note = f"first series since the software changed from {change[0]} to {change[1]}"
    status = "software_changed" if result.get("errors") else result.get("status")
    return {**result, "status": status, "note": note,
            "software": {"from": change[0], "to": change[1]}}


def accepted_result(
    result: Mapping[str, Any], *, reason: str, by: str, at: str
) -> dict[str, Any]:
    """A verdict after a person accepted the series as intended: it conforms, its status
    is ``"accepted"``, ``"note"`` reads "accepted: <reason>", and the differences it had
    from the old template move to ``accepted["changes"]``."""
    return {
        **result, "conforms": True, "status": "accepted", "errors": {},
        # what later series compare against: the old template with this series' values
        "template": {**result.get("template", {}),
                     **{p: e["have"] for p, e in result.get("errors", {}).items()}},
        "note": f"accepted: {reason}",
        "accepted": {"reason": reason, "by": by, "at": at,
                     "changes": dict(result.get("errors", {}))},
    }


def acquired_at(last_seen: str | None) -> str | None:
    """A stored acquisition "YYYYMMDD HHMMSS.ffffff" as ISO 8601 ("2026-11-24T10:15:00"),
    or None when unknown or malformed."""
    if not last_seen:
        return None
    day, _, clock = last_seen.partition(" ")
    if len(day) != 8 or not day.isdigit() or len(clock) < 6 or not clock[:6].isdigit():
        return None
    return f"{day[:4]}-{day[4:6]}-{day[6:]}T{clock[:2]}:{clock[2:4]}:{clock[4:6]}"
