"""Session-level compliance: the expected protocol, the live checklist, series
completeness and cross-series checks. Pure: no trio, no I/O, no clock of its own.

- :func:`learn_protocol` turns a project's recent sessions (from the store) into the
  series that usually appear, in their usual order, each with its usual file count.
- :class:`Checklist` follows one station's current session: every expected series is
  done, running, missing, repeated or unexpected; it raises alerts for a series that
  stopped short, a cross-series rule that fails, and, when the session ends, for the
  expected series that never came.
- :data:`CROSS_SERIES_RULES` is the table of cross-series checks; add a row to add one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from mrqart.rules.check import fmt

#: A series belongs to the expected protocol if it appears in at least this share of
#: the project's recent sessions.
MIN_SHARE = 0.5
#: How many recent sessions the protocol is learnt from.
RECENT_SESSIONS = 20
#: Minutes without a new file after which a session looks finished.
FINISHED_AFTER_MINUTES = 10.0


def normalise(name: str) -> str:
    """Series descriptions are compared as the templates compare strings."""
    return " ".join(str(name).split()).lower()


@dataclass(frozen=True, slots=True)
class Expected:
    """One series the protocol expects: its description and usual number of files."""

    sequence_name: str
    n_files: int | None


@dataclass(frozen=True, slots=True)
class Protocol:
    project: str
    expected: tuple[Expected, ...]
    pinned: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project, "pinned": self.pinned,
            "expected": [{"sequence_name": e.sequence_name, "n_files": e.n_files}
                         for e in self.expected],
        }


def learn_protocol(
    project: str, sessions: Sequence[Sequence[tuple[str, int]]], *, min_share: float = MIN_SHARE
) -> Protocol:
    """The expected protocol of a project from its past sessions.

    Each session is its series in acquisition order, as (description, file count). A
    description belongs to the protocol when it appears in at least ``min_share`` of the
    sessions; the protocol lists it as often as it usually appears (a fieldmap's
    magnitude and phase share one description), ordered by its median position; its file
    count is the most frequent count among its past series (ties: the larger count).
    """
    if not sessions:
        return Protocol(project, ())
    appearances: dict[str, Counter[int]] = {}  # name -> times it appears in a session
    positions: dict[tuple[str, int], list[float]] = {}
    counts: dict[tuple[str, int], Counter[int]] = {}
    display: dict[str, str] = {}
    for session in sessions:
        seen: Counter[str] = Counter()
        for index, (name, n_files) in enumerate(session):
            norm = normalise(name)
            display.setdefault(norm, name)
            occurrence = seen[norm]
            seen[norm] += 1
            positions.setdefault((norm, occurrence), []).append(index / max(len(session), 1))
            counts.setdefault((norm, occurrence), Counter())[n_files] += 1
        for norm, times in seen.items():
            appearances.setdefault(norm, Counter())[times] += 1
    expected: list[tuple[float, Expected]] = []
    for norm, times in appearances.items():
        if sum(times.values()) < min_share * len(sessions):
            continue
        usual_times = max(times.items(), key=lambda kv: (kv[1], -kv[0]))[0]
        for occurrence in range(usual_times):
            c = counts[(norm, occurrence)]
            n_files = max(c.items(), key=lambda kv: (kv[1], kv[0]))[0]
            expected.append(
                (median(positions[(norm, occurrence)]), Expected(display[norm], n_files))
            )
    expected.sort(key=lambda pair: pair[0])
    return Protocol(project, tuple(e for _, e in expected))


# -- cross-series rules ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrossRule:
    """A series matching ``applies_to`` must have the same ``param`` as the most recent
    earlier series of the session matching ``reference``."""

    name: str
    applies_to: str  # regex on the series description (case-insensitive)
    reference: str  # regex on the reference series' description
    param: str
    message: str  # formatted with reference=<series number>

    def matches(self, pattern: str, sequence_name: str) -> bool:
        return re.search(pattern, sequence_name, re.IGNORECASE) is not None


CROSS_SERIES_RULES: tuple[CrossRule, ...] = (
    CrossRule(
        name="shims_since_fieldmap",
        applies_to=r"bold|rest|task|fmri|dwi|diff|dti|mb\d*|me_",
        reference=r"field|fmap|gre_field",
        param="Shims",
        message="shims changed since fieldmap series {reference}",
    ),
)


# -- the live checklist --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alert:
    """Something the operator should see and may acknowledge."""

    id: str
    kind: str  # incomplete | missing | cross_series | nonconform
    session: str
    series: str | None  # series key, None for session-wide alerts
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "session": self.session,
                "series": self.series, "text": self.text}


@dataclass(slots=True)
class _Seen:
    key: str
    series_number: Any
    sequence_name: str
    header: dict[str, Any]
    n_files: int = 1
    slot: int | None = None  # index into the protocol's expected list


@dataclass
class Checklist:
    """One station's current session against the project's expected protocol."""

    session: str
    protocol: Protocol
    rules: tuple[CrossRule, ...] = CROSS_SERIES_RULES
    series: list[_Seen] = field(default_factory=list)
    finished: bool = False
    _running: _Seen | None = None
    _incomplete: dict[str, Alert] = field(default_factory=dict)  # series key -> open alert

    def on_series(
        self, key: str, header: dict[str, Any],
        errors: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[Alert]:
        """A new series started: close the previous one, place this one, run the rules.

        ``errors`` are the series' differences from its template (CheckResult.errors):
        a series that differs raises a "nonconform" alert, so that the operator can
        acknowledge it with a reason like any other alert."""
        alerts = self._close_running()
        name = str(header.get("SequenceName", "null"))
        seen = _Seen(key, header.get("SeriesNumber"), name, header)
        seen.slot = self._free_slot(name)
        if errors:
            alerts.append(self._nonconform_alert(seen, errors))
        alerts += self._cross_series(seen)
        self.series.append(seen)
        self._running = seen
        return alerts

    def on_count(self, key: str, n_files: int) -> tuple[list[Alert], list[Alert]]:
        """Another file of a series; the "incomplete" alerts this count (updated, resolved).

        A series is judged when the next one starts, but files can arrive late: the
        watcher holds back files found by a directory scan until they settle, so a burst
        can reach us out of order. A late file updates its series' alert ("5 of 8", not
        "1 of 8"), and one that completes the series takes the alert back."""
        for seen in reversed(self.series):
            if seen.key == key:
                seen.n_files = max(seen.n_files, n_files)
                if key not in self._incomplete or seen.slot is None:
                    return [], []
                expected = self.protocol.expected[seen.slot].n_files or 0
                if seen.n_files >= expected:
                    return [], [self._incomplete.pop(key)]
                self._incomplete[key] = alert = self._incomplete_alert(seen, expected)
                return [alert], []
        return [], []

    def finish(self) -> list[Alert]:
        """The session ended (a new one started, or it went quiet): the last series is
        checked for completeness and every expected series that never came is reported."""
        if self.finished:
            return []
        self.finished = True
        alerts = self._close_running()
        missing = [e.sequence_name for i, e in enumerate(self.protocol.expected)
                   if i not in self._used_slots()]
        if missing:
            alerts.append(Alert(
                id=f"{self.session}:missing", kind="missing", session=self.session, series=None,
                text="missing: " + ", ".join(missing),
            ))
        return alerts

    def view(self) -> dict[str, Any]:
        """The checklist as the page shows it: one item per expected or extra series."""
        items: list[dict[str, Any]] = []
        by_slot = {s.slot: s for s in self.series if s.slot is not None}
        for i, expected in enumerate(self.protocol.expected):
            seen = by_slot.get(i)
            items.append(self._item(expected.sequence_name, expected.n_files, seen))
        for seen in self.series:
            if seen.slot is None:
                expected_files = self._expected_files(seen.sequence_name)
                state = "repeated" if expected_files is not None else "unexpected"
                items.append({**self._item(seen.sequence_name, expected_files, seen), "state": state})
        return {"session": self.session, "project": self.protocol.project,
                "pinned": self.protocol.pinned, "finished": self.finished, "items": items}

    # -- internals ------------------------------------------------------------------
    def _item(self, name: str, expected: int | None, seen: _Seen | None) -> dict[str, Any]:
        if seen is None:
            state = "missing" if self.finished else "pending"
        elif seen is self._running and not self.finished and (expected is None or seen.n_files < expected):
            state = "running"
        elif expected is not None and seen.n_files < expected:
            state = "incomplete"
        else:
            state = "done"
        return {"sequence_name": name, "expected_files": expected, "state": state,
                "n_files": seen.n_files if seen else 0,
                "series": seen.key if seen else None,
                "series_number": seen.series_number if seen else None}

    def _used_slots(self) -> set[int]:
        return {s.slot for s in self.series if s.slot is not None}

    def _free_slot(self, name: str) -> int | None:
        used = self._used_slots()
        for i, expected in enumerate(self.protocol.expected):
            if i not in used and normalise(expected.sequence_name) == normalise(name):
                return i
        return None

    def _expected_files(self, name: str) -> int | None:
        for expected in self.protocol.expected:
            if normalise(expected.sequence_name) == normalise(name):
                return expected.n_files
        return None

    def _close_running(self) -> list[Alert]:
        running, self._running = self._running, None
        if running is None or running.slot is None:
            return []
        expected = self.protocol.expected[running.slot].n_files
        if expected is None or running.n_files >= expected:
            return []
        alert = self._incomplete[running.key] = self._incomplete_alert(running, expected)
        return [alert]

    def _incomplete_alert(self, seen: _Seen, expected: int) -> Alert:
        return Alert(
            id=f"{seen.key}:incomplete", kind="incomplete", session=self.session,
            series=seen.key, text=f"{seen.sequence_name} series {seen.series_number} "
            f"incomplete: {seen.n_files} of {expected}",
        )

    def _nonconform_alert(self, seen: _Seen, errors: Mapping[str, Mapping[str, Any]]) -> Alert:
        """"rest series 3: TR 2000, expected 1300 (+1 more)": the first difference, in
        the order of the rules, as the page's checklist writes it."""
        param, first = next(iter(errors.items()))
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return Alert(
            id=f"{seen.key}:nonconform", kind="nonconform", session=self.session,
            series=seen.key, text=f"{seen.sequence_name} series {seen.series_number}: {param} "
            f"{fmt(first['have'], param)}, expected {fmt(first['expect'], param)}{more}",
        )

    def _cross_series(self, seen: _Seen) -> list[Alert]:
        alerts = []
        for rule in self.rules:
            if not rule.matches(rule.applies_to, seen.sequence_name) or rule.matches(
                rule.reference, seen.sequence_name
            ):
                continue
            reference = next((s for s in reversed(self.series)
                              if rule.matches(rule.reference, s.sequence_name)), None)
            if reference is None:
                continue
            have, expect = seen.header.get(rule.param), reference.header.get(rule.param)
            if "null" in (have, expect) or have == expect:
                continue
            alerts.append(Alert(
                id=f"{seen.key}:{rule.name}", kind="cross_series", session=self.session,
                series=seen.key, text=rule.message.format(reference=reference.series_number),
            ))
        return alerts


def looks_finished(last_file: float, now: float, minutes: float = FINISHED_AFTER_MINUTES) -> bool:
    """A session with no new file for ``minutes`` looks finished."""
    return now - last_file >= minutes * 60
