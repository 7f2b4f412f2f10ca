"""The report's data: what the store holds about a period, judged as the live path judged it.

``build_report(store, period)`` gives, per project and session of the period: the series
checked, conforming, differing (each parameter's expected and got values and the
difference), acknowledged (with the operator's reason), accepted template changes,
series with no template, incomplete and missing series from the session checklist, and
failure streaks (the same parameter of the same series failing on consecutive scan days
of that series). ``project_history(store, project, period)`` gives, per series of a
project, each varied parameter's value per session against the template, and the
conformance rate per week (what ``plots`` draws).

Pure apart from the store calls (blocking: run it in a worker thread from trio).

How a series is judged: as the live path judged it, against the template its Project
x SequenceName had when the series was acquired (the template's history in the store:
learnt, accepted, imported, pinned), with ``rules.check`` (live series in live context).
A series acquired before any template is "no template" (not onboarded); a series a
person accepted as the new reference is "accepted".

Exclusions (localizer, scout, 3-plane, survey by default) live in the rules TOML::

    [report]
    exclude = ["localizer", "scout", "3.?plane", "survey", "^AAHead"]  # regexes, any case
    exclude_projects = ["Phantom QA"]      # whole projects left out of reports
    [report.project."Brain^Wellness"]
    exclude = ["_ND$"]                     # more patterns for one project
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, field, replace
from os import PathLike
from typing import Any
from typing import Protocol as TypingProtocol

from mrqart.headers.phi import initials
from mrqart.rules.check import (
    DEFAULT_RULES,
    NULL,
    REPORT_TABLE,
    Rules,
    RulesFileError,
    check,
    fmt,
    squash,
    template_name,
)
from mrqart.rules.protocol import Checklist, Protocol
from mrqart.rules.templates import acquired_at

#: Series descriptions left out of reports unless the rules TOML says otherwise: the
#: positioning scans, whose parameters the scanner picks.
DEFAULT_EXCLUDE: tuple[str, ...] = ("localizer", "scout", r"3.?plane", "survey")
#: How far back a failure streak is followed before the period (calendar days).
STREAK_LOOKBACK_DAYS = 90

Status = str  # "conform" | "differ" | "no_template" | "accepted"


class Store(TypingProtocol):
    """What the report reads (``mrqart.store.Store`` provides it)."""

    def series_on(self, day: str) -> list[dict[str, Any]]: ...

    def series_sets(self, day: str) -> list[dict[str, Any]]: ...

    def param_sets(self, project: str, sequence_name: str) -> list[dict[str, Any]]: ...

    def protocol(self, project: str, *, exclude: str | None = None) -> Protocol: ...

    def acks(self, session: str) -> dict[str, dict[str, Any]]: ...

    def history(self, project: str, sequence_name: str) -> list[dict[str, Any]]: ...

    def template_changes(self, *, project: str | None = None, kinds: Iterable[str] | None = None,
                         since: str | None = None) -> list[dict[str, Any]]: ...


# -- configuration -----------------------------------------------------------------------


def _fold(name: str) -> str:
    return squash(str(name)).casefold()


@dataclass(frozen=True)
class Exclusions:
    """Which series and projects reports leave out (see the module doc)."""

    patterns: tuple[str, ...] = DEFAULT_EXCLUDE
    projects: tuple[str, ...] = ()
    per_project: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # (project, name) -> excluded: a report asks once per series, about a few names
    _seen: dict[tuple[str, str], bool] = field(default_factory=dict, compare=False, repr=False)

    def project_excluded(self, project: str) -> bool:
        return _fold(project) in {_fold(p) for p in self.projects}

    def series_excluded(self, project: str, sequence_name: str) -> bool:
        key = (project, sequence_name)
        if key not in self._seen:
            extra = next((v for k, v in self.per_project.items() if _fold(k) == _fold(project)),
                         ())
            self._seen[key] = any(re.search(p, sequence_name, re.IGNORECASE)
                                  for p in (*self.patterns, *extra))
        return self._seen[key]


def _patterns(path: object, where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesFileError(f"{path}: {where} must be a list of strings")
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as e:
            raise RulesFileError(f"{path}: {where}: {pattern!r} is not a regex: {e}") from None
    return tuple(value)


def load_exclusions(path: str | PathLike[str] | None) -> Exclusions:
    """The ``[report]`` table of a rules TOML file (defaults without a file or a table).

    Raises ``RulesFileError`` for an unknown key or a malformed list or regex,
    ``tomllib.TOMLDecodeError`` and ``OSError`` as ``load_rules`` does."""
    if path is None:
        return Exclusions()
    with open(path, "rb") as f:
        table = tomllib.load(f).get(REPORT_TABLE, {})
    known = {"exclude", "exclude_projects", "project"}
    if unknown := set(table) - known:
        raise RulesFileError(f"{path}: [{REPORT_TABLE}] unknown keys {sorted(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
    per_project = {}
    for project, sub in table.get("project", {}).items():
        if not isinstance(sub, dict) or set(sub) - {"exclude"}:
            raise RulesFileError(f"{path}: [{REPORT_TABLE}.project.{project!r}] takes exclude")
        per_project[project] = _patterns(path, f"[{REPORT_TABLE}.project] exclude",
                                         sub.get("exclude", []))
    return Exclusions(
        patterns=_patterns(path, f"[{REPORT_TABLE}] exclude",
                           table.get("exclude", list(DEFAULT_EXCLUDE))),
        projects=_patterns(path, f"[{REPORT_TABLE}] exclude_projects",
                           table.get("exclude_projects", [])),
        per_project=per_project,
    )


#: Reports leave out the positioning scans (DEFAULT_EXCLUDE) unless told otherwise.
DEFAULT_EXCLUSIONS = Exclusions()


@dataclass(frozen=True)
class Period:
    """Calendar days from ``first`` to ``last``, both included."""

    first: dt.date
    last: dt.date

    @classmethod
    def day(cls, day: dt.date) -> Period:
        return cls(day, day)

    @classmethod
    def parse(cls, day: str | None = None, since: str | None = None,
              today: dt.date | None = None) -> Period:
        """The period a command line or URL asks for: ``day`` alone, or ``since`` to
        today (each "YYYY-MM-DD", "today" or "yesterday"); neither: yesterday, the
        morning report's day. ValueError for anything else, or a period after today
        or ending before it starts."""
        today = today or dt.date.today()

        def date(text: str) -> dt.date:
            named = {"today": today, "yesterday": today - dt.timedelta(1)}
            if text in named:
                return named[text]
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{text!r}: give a date as YYYY-MM-DD, today or yesterday"
                                 ) from None

        if day is not None and since is not None:
            raise ValueError("give a day or a first day (since), not both")
        if since is not None:
            first = date(since)
            if first > today:
                raise ValueError(f"{first} is after today")
            return cls(first, today)
        return cls.day(date("yesterday" if day is None else day))

    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(n) for n in range((self.last - self.first).days + 1)]

    @property
    def label(self) -> str:
        """"2026-11-30", or "2026-11-24 to 2026-11-30"."""
        first, last = self.first.isoformat(), self.last.isoformat()
        return first if first == last else f"{first} to {last}"

    def to_json(self) -> dict[str, str]:
        return {"first": self.first.isoformat(), "last": self.last.isoformat()}


# -- the report's data ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """An operator's acknowledgement: what they saw, why it is fine, when, and who
    (None where the store did not record it: before schema 4)."""

    text: str
    reason: str
    at: str
    by: str | None = None


@dataclass(frozen=True)
class Difference:
    """One parameter that differs: ``"FA: expected 52, got 60 (+8)"``. ``streak``: the
    consecutive scan days of this series (this one included) on which it differed."""

    param: str
    expected: Any
    got: Any
    difference: float | None
    text: str
    streak: int = 1


@dataclass(frozen=True)
class AcceptedChange:
    """A person made a series' parameters the new reference of its template."""

    project: str
    sequence_name: str
    at: str
    by: str
    reason: str
    session: str | None
    series_number: int | None
    changes: tuple[Difference, ...]


@dataclass(frozen=True)
class SeriesLine:
    series_number: int
    sequence_name: str
    time: str
    n_files: int
    status: Status
    differences: tuple[Difference, ...] = ()
    acks: tuple[Ack, ...] = ()
    #: a person accepted this series as the new reference: "accepted by <who>", why, when
    accepted: Ack | None = None


@dataclass(frozen=True)
class AlertLine:
    """A checklist alert of the session (incomplete, cross-series), acknowledged or not."""

    kind: str
    series_number: int | None
    text: str
    ack: Ack | None


@dataclass(frozen=True)
class Counts:
    series: int = 0
    conform: int = 0
    differ: int = 0
    no_template: int = 0
    accepted: int = 0
    acknowledged: int = 0
    incomplete: int = 0
    missing: int = 0
    excluded: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(astuple(self), astuple(other))))


@dataclass(frozen=True)
class SessionReport:
    session: str
    project: str
    station: str
    subject: str
    date: str
    time: str
    series: tuple[SeriesLine, ...]
    alerts: tuple[AlertLine, ...]
    missing: tuple[str, ...]
    missing_ack: Ack | None
    counts: Counts


@dataclass(frozen=True)
class Streak:
    """A parameter of a series differing on ``days`` consecutive scan days until ``last``."""

    sequence_name: str
    param: str
    days: int
    since: str
    last: str
    expected: Any
    got: Any


@dataclass(frozen=True)
class ProjectReport:
    project: str
    sessions: tuple[SessionReport, ...]
    accepted_changes: tuple[AcceptedChange, ...]
    streaks: tuple[Streak, ...]
    counts: Counts


@dataclass(frozen=True)
class Report:
    period: Period
    projects: tuple[ProjectReport, ...]
    counts: Counts

    def with_phi(self, mode: str) -> Report:
        """The report with each session's subject shown as ``mode`` says (see
        ``mrqart.headers.phi``): ``show``, ``initials`` ("D.J."), ``hide`` (blank)."""
        if mode == "show":
            return self

        def masked(s: SessionReport) -> SessionReport:
            return replace(s, subject=initials(s.subject) if mode == "initials" else "")

        return replace(self, projects=tuple(
            replace(p, sessions=tuple(masked(s) for s in p.sessions)) for p in self.projects))

    def to_json(self) -> dict[str, Any]:
        """The whole report as JSON-native values (what ``--format json`` prints)."""
        return {"period": self.period.to_json(), "counts": asdict(self.counts),
                "projects": [_native(p) for p in self.projects]}

    def only(self, projects: Collection[str]) -> Report:
        """The report of some of its projects (named as in the report)."""
        kept = tuple(p for p in self.projects if p.project in projects)
        return Report(self.period, kept, sum((p.counts for p in kept), Counts()))

    def subject(self) -> str:
        """The e-mail subject: ``"mrqart 2026-11-30: 2 of 41 series differ, 1 missing"``."""
        return f"mrqart {self.period.label}: {summary(self.counts)}"


def _native(value: Any) -> Any:
    """A dataclass of the report as JSON-native values: dicts, lists (not tuples)."""
    if hasattr(value, "__dataclass_fields__"):
        return {f: _native(getattr(value, f)) for f in value.__dataclass_fields__}
    if isinstance(value, (list, tuple)):
        return [_native(v) for v in value]
    return value


def summary(c: Counts) -> str:
    """``"2 of 41 series differ, 1 missing"``; ``"41 series, all conform"``; ``"3 series,
    none differs, 2 without template"``."""
    if c.series == 0 and c.missing == 0:
        return "no series"
    if c.differ:
        parts = [f"{c.differ} of {c.series} series differ"]
    else:
        parts = [f"{c.series} series, " + (
            "all conform" if c.conform + c.accepted == c.series else "none differs")]
    parts += [f"{n} {what}" for n, what in ((c.incomplete, "incomplete"), (c.missing, "missing"),
                                            (c.no_template, "without template")) if n]
    return ", ".join(parts)


# -- judging one series ----------------------------------------------------------------------


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def difference(expected: Any, got: Any) -> float | None:
    """got - expected for two numbers; for a list of allowed numbers (multi-echo TE),
    the difference to the nearest; else None."""
    g = _number(got)
    if g is None:
        return None
    options = expected if isinstance(expected, list) else [expected]
    numbers = [e for e in map(_number, options) if e is not None]
    if not numbers:
        return None
    return round(min((g - e for e in numbers), key=abs), 6)


def _signed(x: float) -> str:
    return ("+" if x > 0 else "") + fmt(x)


def describe_difference(param: str, expected: Any, got: Any) -> Difference:
    diff = difference(expected, got)
    got_text = "missing" if got in (None, NULL) else fmt(got, param)
    text = f"{param}: expected {fmt(expected, param)}, got {got_text}"
    if diff is not None:
        text += f" ({_signed(diff)})"
    return Difference(param, expected, got, diff, text)


@dataclass(frozen=True)
class _Change:
    """One step of a template's history: from ``at`` on, ``template`` holds."""

    at: str  # ISO 8601 to the second, no zone (compared as text with acquisitions)
    template: Mapping[str, Any] | None
    series: tuple[str, int] | None  # (session, number) of the series that decided it
    kind: str


@dataclass(frozen=True)
class _Judged:
    """One stored series with its verdict and the template it was judged against."""

    session: str
    project: str
    station: str
    subject: str
    day: str  # YYYYMMDD
    time: str  # HHMMSS...
    series_number: int
    sequence_name: str
    template_key: tuple[str, str]
    n_files: int
    header: Mapping[str, Any]
    status: Status
    differences: tuple[Difference, ...]
    template: Mapping[str, Any] | None


def _timeline(history: Sequence[Mapping[str, Any]]) -> list[_Change]:
    """A template's history (``Store.history``) as the template after each change, in
    time order: a pin wins while it lasts, else the established (learnt, accepted or
    imported) set."""
    established: Mapping[str, Any] | None = None
    pinned: Mapping[str, Any] | None = None
    out = []
    for c in sorted(history, key=lambda c: (str(c["at"])[:19], c["id"])):
        if c["kind"] == "pinned":
            pinned = c["params"]
        elif c["kind"] == "unpinned":
            pinned = None
        else:
            established = c["params"]
        series = None if c.get("session") is None else (c["session"], c["series_number"])
        out.append(_Change(str(c["at"])[:19], pinned or established, series, c["kind"]))
    return out


class _Judge:
    """Judges stored series as the live path did: against the template in effect when
    each was acquired (the template's history, read once per template)."""

    def __init__(self, store: Store, rules: Rules) -> None:
        self.store = store
        self.rules = rules
        self._timelines: dict[tuple[str, str], list[_Change]] = {}
        self._spellings: dict[tuple[str, str], list[_Change]] = {}
        self._accepted: dict[str, tuple[AcceptedChange, ...]] = {}
        # (template id, live, the header's values of the template's parameters) ->
        # differences: most series repeat a parameter set already judged
        self._checked: dict[tuple[Any, ...], tuple[Difference, ...]] = {}
        self._sets: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
        self._keys: dict[tuple[str, str], tuple[str, str]] = {}

    def timeline(self, project: str, name: str) -> list[_Change]:
        raw = (project, name)  # names repeat verbatim: fold each spelling once
        if raw not in self._spellings:
            key = (_fold(project), _fold(name))
            if key not in self._timelines:
                self._timelines[key] = _timeline(self.store.history(project, name))
            self._spellings[raw] = self._timelines[key]
        return self._spellings[raw]

    def template_at(self, project: str, name: str, acquired: str,
                    series: tuple[str, int]) -> tuple[Mapping[str, Any] | None, bool]:
        """The template of a Project x SequenceName when ``series`` was acquired (None
        before any; a change this series decided came after its check), and whether a
        person accepted this series."""
        template, accepted = None, False
        for change in self.timeline(project, name):
            if change.series == series:
                accepted = accepted or change.kind == "accepted"
                continue
            if change.at <= acquired:
                template = change.template
        return template, accepted

    def current(self, project: str, name: str) -> Mapping[str, Any] | None:
        changes = self.timeline(project, name)
        return changes[-1].template if changes else None

    def accepted(self, project: str) -> tuple[AcceptedChange, ...]:
        """The project's accepted template changes (asked once per project)."""
        key = _fold(project)
        if key not in self._accepted:
            self._accepted[key] = tuple(accepted_changes(self.store, project))
        return self._accepted[key]

    def _differences(self, header: Mapping[str, Any], template: Mapping[str, Any],
                     live: bool, values_key: Any = None) -> tuple[Difference, ...]:
        """The differences of ``header`` from ``template``, remembered by the template and
        the header's values (``values_key`` names them when the caller knows them)."""
        if values_key is None:
            # repr: a cheap exact key of JSON values (lists included)
            values_key = (repr([header.get(p, NULL) for p in template]),
                          repr(header.get("not_recorded")))
        # the template objects live as long as this judge (its timelines): ids are stable
        key = (id(template), live, values_key)
        if key not in self._checked:
            result = check(header, template, self.rules, live=live)
            self._checked[key] = tuple(describe_difference(p, e["expect"], e["have"])
                                       for p, e in result["errors"].items())
        return self._checked[key]

    def _verdict(self, project: str, name: str, series: tuple[str, int], acquired: str,
                 values: Mapping[str, Any], live: bool, values_key: Any = None,
                 ) -> tuple[Status, tuple[Difference, ...], Mapping[str, Any] | None]:
        template, accepted = self.template_at(project, name, acquired, series)
        if accepted:
            return "accepted", (), template
        if template is None:
            return "no_template", (), None
        differences = self._differences(values, template, live, values_key)
        return ("differ" if differences else "conform"), differences, template

    def judge(self, row: Mapping[str, Any]) -> _Judged:
        """A series as ``Store.series_on`` gives it, judged on its header."""
        header = row["header"]
        project, name = str(header.get("Project", NULL)), template_name(header)
        number = int(row["series_number"])
        day, clock = str(header.get("AcqDate", NULL)), str(header.get("AcqTime", NULL))
        status, differences, template = self._verdict(
            project, name, (row["session"], number), acquired_at(f"{day} {clock}") or "",
            header, row["source"] == "live")
        return _Judged(
            session=row["session"], project=project, station=str(row["station"]),
            subject=str(header.get("SubID", NULL)), day=day, time=clock, series_number=number,
            sequence_name=str(header.get("SequenceName", NULL)),
            template_key=(_fold(project), _fold(name)), n_files=int(row["n_files"]),
            header=header, status=status, differences=differences, template=template,
        )

    def key_of(self, project: str, name: str) -> tuple[str, str]:
        """How a Project x template name is matched (case and white space folded)."""
        key = self._keys.get((project, name))
        if key is None:
            key = self._keys[(project, name)] = (_fold(project), _fold(name))
        return key

    def judge_set(self, row: Mapping[str, Any]) -> _Judged:
        """A series as ``Store.series_sets`` gives it (no header), judged on its stored
        parameter set: what scanning history needs, without reading every header."""
        project, name = str(row["project"]), str(row["sequence_name"])
        if (project, name) not in self._sets:
            self._sets[(project, name)] = {
                s["id"]: s["params"] for s in self.store.param_sets(project, name)}
        values = self._sets[(project, name)][row["set_id"]]
        day, clock, number = str(row["acq_date"]), str(row["acq_time"]), int(row["series_number"])
        status, differences, template = self._verdict(
            project, name, (row["session"], number), acquired_at(f"{day} {clock}") or "",
            values, row["source"] == "live", values_key=("set", row["set_id"]))
        key = self.key_of(project, name)
        return _Judged(
            session=row["session"], project=project, station="", subject="", day=day,
            time=clock, series_number=number, sequence_name=name, template_key=key, n_files=0,
            header=values, status=status, differences=differences, template=template)


def accepted_changes(store: Store, project: str) -> list[AcceptedChange]:
    """The template changes people accepted for ``project``, oldest first, each with
    what changed from the template it replaced."""
    out = []
    for a in store.template_changes(project=project, kinds=("accepted",)):
        previous = None
        if a["previous_set_id"] is not None:
            previous = next((s["params"] for s in store.param_sets(project, a["sequence_name"])
                             if s["id"] == a["previous_set_id"]), None)
        out.append(AcceptedChange(
            project=str(a["project"]), sequence_name=str(a["sequence_name"]), at=str(a["at"]),
            by=str(a["by"]), reason=str(a["reason"]), session=a["session"],
            series_number=a["series_number"], changes=_changes(previous, a["params"] or {})))
    return out


def _changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> tuple[Difference, ...]:
    """What an accepted set changed: ``"TE: 89 -> 92 (+3)"`` per parameter."""
    if before is None:
        return ()
    out = []
    for p, e in check(after, before).get("errors", {}).items():
        d = describe_difference(p, e["expect"], e["have"])
        text = f"{p}: {fmt(e['expect'], p)} -> {fmt(e['have'], p)}"
        out.append(replace(d, text=text + (f" ({_signed(d.difference)})"
                                           if d.difference is not None else "")))
    return tuple(out)


# -- dates ---------------------------------------------------------------------------------


def _dicom_day(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


def _iso_day(dicom_day: str) -> str:
    if len(dicom_day) == 8 and dicom_day.isdigit():
        return f"{dicom_day[:4]}-{dicom_day[4:6]}-{dicom_day[6:]}"
    return dicom_day


def _clock(dicom_time: str) -> str:
    """"101500.000000" -> "10:15"."""
    return f"{dicom_time[:2]}:{dicom_time[2:4]}" if dicom_time[:4].isdigit() else ""


# -- building the report --------------------------------------------------------------------


def _series_key(session: str, number: int) -> str:
    # The live path's key of a series (mrqart.live.session.series_key), which alert ids
    # and acknowledgements carry; rebuilt here because the report never imports live.
    return f"{session}:{number}"


def _ack(a: Mapping[str, Any]) -> Ack:
    return Ack(text=str(a["text"]), reason=str(a["reason"]), at=str(a["at"]), by=a.get("by"))


ALERT_KINDS = ("incomplete", "cross_series")


def _session_report(
    rows: Sequence[_Judged], protocol: Protocol, acks: Mapping[str, Mapping[str, Any]],
    exclusions: Exclusions, streak: Callable[[_Judged, str], int],
    accepted: Mapping[tuple[str, int], AcceptedChange],
) -> SessionReport:
    """One session: its series lines, and its checklist rebuilt from its stored series.

    Alerts are those the checklist raises now and those an operator acknowledged (with
    the text they saw then); acknowledgements of anything else about a series (such as
    a difference) go on the series' line."""
    first = rows[0]
    session, project = first.session, first.project
    rows = sorted(rows, key=lambda r: r.series_number)
    checklist = Checklist(session, protocol)
    raised = []
    for j in rows:
        key = _series_key(session, j.series_number)
        raised += checklist.on_series(key, dict(j.header))
        checklist.on_count(key, j.n_files)
    raised += checklist.finish()
    by_key = {_series_key(session, j.series_number): j for j in rows}
    alerts: dict[str, tuple[str, str | None, str]] = {
        a.id: (a.kind, a.series, a.text) for a in raised if a.kind in ALERT_KINDS}
    for alert_id, a in acks.items():
        if a["kind"] in ALERT_KINDS and alert_id not in alerts:
            alerts[alert_id] = (a["kind"], a["series"], a["text"])
    lines = []
    for alert_id, (kind, series, text) in alerts.items():
        j = by_key.get(series or "")
        if j is not None and exclusions.series_excluded(project, j.sequence_name):
            continue
        ack = acks.get(alert_id)
        lines.append(AlertLine(kind, j.series_number if j else None, text,
                               _ack(ack) if ack else None))
    lines.sort(key=lambda a: (a.series_number is None, a.series_number or 0, a.kind))
    series_lines = []
    excluded = 0
    for key, j in by_key.items():
        if exclusions.series_excluded(project, j.sequence_name):
            excluded += 1
            continue
        own_acks = tuple(_ack(a) for a in acks.values() if a["series"] == key
                         and a["kind"] not in (*ALERT_KINDS, "missing"))
        differences = tuple(replace(d, streak=streak(j, d.param)) for d in j.differences)
        change = accepted.get((session, j.series_number)) if j.status == "accepted" else None
        series_lines.append(SeriesLine(
            series_number=j.series_number, sequence_name=j.sequence_name, time=_clock(j.time),
            n_files=j.n_files, status=j.status, differences=differences, acks=own_acks,
            accepted=change and Ack(f"accepted by {change.by}", change.reason, change.at, change.by)))
    missing = tuple(item["sequence_name"] for item in checklist.view()["items"]
                    if item["state"] == "missing"
                    and not exclusions.series_excluded(project, item["sequence_name"]))
    missing_ack = acks.get(f"{session}:missing") if missing else None
    statuses = Counter(line.status for line in series_lines)
    counts = Counts(
        series=len(series_lines), conform=statuses["conform"], differ=statuses["differ"],
        no_template=statuses["no_template"], accepted=statuses["accepted"],
        acknowledged=sum(1 for s in series_lines if s.acks) + sum(1 for a in lines if a.ack)
        + (missing_ack is not None),
        incomplete=sum(1 for a in lines if a.kind == "incomplete"), missing=len(missing),
        excluded=excluded,
    )
    return SessionReport(
        session=session, project=project, station=first.station, subject=first.subject,
        date=_iso_day(first.day), time=_clock(first.time), series=tuple(series_lines),
        alerts=tuple(lines), missing=missing,
        missing_ack=_ack(missing_ack) if missing_ack else None, counts=counts,
    )


class _Days:
    """The judged series of each scan day, read from the store once per day."""

    def __init__(self, store: Store, judge: _Judge, keep: Callable[[str], bool]) -> None:
        self.store, self.judge, self.keep = store, judge, keep
        self._days: dict[str, list[_Judged]] = {}
        self._sets: dict[str, list[_Judged]] = {}

    def on(self, day: dt.date) -> list[_Judged]:
        key = _dicom_day(day)
        if key not in self._days:
            rows = [r for r in self.store.series_on(key)
                    if self.keep(str(r["header"].get("Project", NULL)))]
            self._days[key] = [self.judge.judge(r) for r in rows]
        return self._days[key]

    def sets_on(self, day: dt.date) -> list[_Judged]:
        """The day's series judged on their parameter sets (no header read): for history."""
        key = _dicom_day(day)
        if key not in self._sets:
            self._sets[key] = [self.judge.judge_set(r) for r in self.store.series_sets(key)
                               if self.keep(str(r["project"]))]
        return self._sets[key]

    def sets_of(self, day: dt.date, keys: Collection[tuple[str, str]]) -> list[_Judged]:
        """The day's series of these templates only, judged on their parameter sets (a
        look back in history: judged, not kept)."""
        key = _dicom_day(day)
        if key in self._sets:
            return [j for j in self._sets[key] if j.template_key in keys]
        return [self.judge.judge_set(r) for r in self.store.series_sets(key)
                if self.judge.key_of(r["project"], r["sequence_name"]) in keys]


#: (template key, parameter, scan day YYYYMMDD) -> the streak as of that day
Streaks = dict[tuple[tuple[str, str], str, str], Streak]


def _streaks(days: _Days, period: Period, exclusions: Exclusions) -> Streaks:
    """The run of consecutive scan days (days the series was acquired and judged) on
    which each parameter of each series differed, as of every scan day of the period
    where it differed. Runs are followed back before the period (at most
    STREAK_LOOKBACK_DAYS) for the series that differ in it."""
    # template key -> scan day -> parameter -> its difference that day (empty: conformed)
    fails: dict[tuple[str, str], dict[str, dict[str, Difference]]] = defaultdict(dict)

    def note(rows: Iterable[_Judged]) -> None:
        for j in rows:
            if (j.status == "no_template"
                    or exclusions.series_excluded(j.project, j.sequence_name)):
                continue
            day = fails[j.template_key].setdefault(j.day, {})
            for d in j.differences:
                day.setdefault(d.param, d)

    for day in period.days():
        note(days.on(day))
    failing = {k for k, by_day in fails.items() if any(by_day.values())}
    # runs that may go on before the period: a parameter that differed on its series'
    # earliest scan day loaded; each earlier scan day of the series ends or extends them
    open_runs = {(k, p) for k in failing for p in fails[k][min(fails[k])]}
    day = period.first
    for _ in range(STREAK_LOOKBACK_DAYS):
        if not open_runs:
            break
        day -= dt.timedelta(1)
        keys = {k for k, _ in open_runs}
        before = {k: len(fails[k]) for k in keys}
        note(days.sets_of(day, keys))
        scanned = {k for k in keys if len(fails[k]) > before[k]}
        open_runs = {(k, p) for k, p in open_runs
                     if k not in scanned or p in fails[k][_dicom_day(day)]}
    out: Streaks = {}
    for k in failing:
        run: dict[str, tuple[int, str]] = {}  # parameter -> (length, first day) of its run
        for day_key in sorted(fails[k]):
            today = fails[k][day_key]
            run = {p: (run.get(p, (0, day_key))[0] + 1, run.get(p, (0, day_key))[1])
                   for p in today}
            for p, (length, since) in run.items():
                d = today[p]
                out[(k, p, day_key)] = Streak("", p, length, _iso_day(since), _iso_day(day_key),
                                              d.expected, d.got)
    return out


def _project_streaks(
    streaks: Streaks, sessions: Mapping[str, list[_Judged]], period: Period,
) -> tuple[Streak, ...]:
    """Each (series, parameter) of the project that differed on two or more consecutive
    scan days up to one in the period: its latest run, longest first."""
    names = {j.template_key: j.sequence_name for rows in sessions.values() for j in rows}
    latest: dict[tuple[tuple[str, str], str], Streak] = {}
    for (key, param, _day), s in streaks.items():
        if key not in names or s.last < period.first.isoformat():
            continue
        if (key, param) not in latest or s.last > latest[(key, param)].last:
            latest[(key, param)] = s
    out = [replace(s, sequence_name=names[k]) for (k, _p), s in latest.items() if s.days >= 2]
    return tuple(sorted(out, key=lambda s: (-s.days, _fold(s.sequence_name), s.param)))


# -- a project's history (the /projects/<project> page and its plots) --------------------------


@dataclass(frozen=True)
class Point:
    """One series' value of one parameter."""

    session: str
    date: str
    time: str
    value: Any
    template: Any  # the template's value this series was judged against (None: none yet)
    differs: bool
    accepted: bool


@dataclass(frozen=True)
class ParamHistory:
    """A parameter that varied: its values per session and the template's value now."""

    param: str
    template: Any
    points: tuple[Point, ...]


@dataclass(frozen=True)
class SeriesHistory:
    sequence_name: str
    n_series: int
    n_differ: int
    params: tuple[ParamHistory, ...]
    accepted: tuple[AcceptedChange, ...]


@dataclass(frozen=True)
class WeekRate:
    """Series judged in the ISO week starting on ``week`` (a Monday), and how many conformed
    (accepted ones included; series without a template are not counted)."""

    week: str
    series: int
    conform: int


@dataclass(frozen=True)
class ProjectHistory:
    project: str
    period: Period
    series: tuple[SeriesHistory, ...]
    weeks: tuple[WeekRate, ...]

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "period": self.period.to_json(),
                "series": [_native(s) for s in self.series],
                "weeks": [_native(w) for w in self.weeks]}


#: The parameters that name a template rather than describe it.
_NAMING = frozenset({"Project", "SequenceName"})


# -- reading the store --------------------------------------------------------------------


class Reader:
    """Reads reports and project histories from one store, sharing what it has read
    (each day's series, judged once; each template's history): one per page or e-mail."""

    def __init__(self, store: Store, *, rules: Rules = DEFAULT_RULES,
                 exclusions: Exclusions = DEFAULT_EXCLUSIONS) -> None:
        self.store, self.rules, self.exclusions = store, rules, exclusions
        self.judge = _Judge(store, rules)
        self.days = _Days(store, self.judge, lambda name: not exclusions.project_excluded(name))

    def report(self, period: Period, project: str | None = None) -> Report:
        """The compliance report of ``period`` (of one ``project``, or every project).

        Each project's checklist is its protocol as the store gives it now (pinned, or
        learnt from its recent sessions)."""
        store, exclusions = self.store, self.exclusions
        streaks = _streaks(self.days, period, exclusions)

        def streak(j: _Judged, param: str) -> int:
            s = streaks.get((j.template_key, param, j.day))
            return s.days if s else 1

        by_project: dict[str, dict[str, list[_Judged]]] = {}
        for day in period.days():
            for j in self.days.on(day):
                if project is None or _fold(j.project) == _fold(project):
                    by_project.setdefault(j.project, {}).setdefault(j.session, []).append(j)
        projects = []
        first, last = period.first.isoformat(), period.last.isoformat()
        for name in sorted(by_project, key=_fold):
            protocol = store.protocol(name)
            accepted = {(a.session or "", a.series_number or 0): a
                        for a in self.judge.accepted(name)}
            sessions = sorted(
                (_session_report(rows, protocol, store.acks(rows[0].session), exclusions, streak,
                                 accepted)
                 for rows in by_project[name].values()),
                key=lambda s: (s.date, s.time, s.session))
            changes = tuple(a for a in self.judge.accepted(name) if first <= a.at[:10] <= last)
            projects.append(ProjectReport(
                project=name, sessions=tuple(sessions), accepted_changes=changes,
                streaks=_project_streaks(streaks, by_project[name], period),
                counts=sum((s.counts for s in sessions), Counts())))
        return Report(period, tuple(projects), sum((p.counts for p in projects), Counts()))

    def history(self, project: str, period: Period,
                only: Collection[str] | None = None) -> ProjectHistory:
        """Every series of ``project`` acquired in ``period``, per template: the parameters
        that varied (a value differed from the template, or took more than one value),
        and the conformance rate per week. Series come in the protocol's order, then by
        name. ``only``: just these series descriptions (case and white space ignored).

        Read from the stored parameter sets, not the headers (a year of a project is
        thousands of series): the values are the canonical ones the templates hold."""
        wanted = None if only is None else {_fold(n) for n in only}
        by_key: dict[tuple[str, str], list[_Judged]] = {}
        weeks: dict[str, Counter[str]] = {}
        for day in period.days():
            for j in self.days.sets_on(day):
                if (_fold(j.project) != _fold(project)
                        or self.exclusions.series_excluded(j.project, j.sequence_name)
                        or (wanted is not None and _fold(j.sequence_name) not in wanted)):
                    continue
                by_key.setdefault(j.template_key, []).append(j)
                if j.status != "no_template":
                    week = (day - dt.timedelta(day.weekday())).isoformat()
                    weeks.setdefault(week, Counter())[j.status] += 1
        accepted = self.judge.accepted(project)
        order = {_fold(e.sequence_name): i for i, e in reversed(list(enumerate(
            self.store.protocol(project).expected)))}
        series = []
        for key, rows in sorted(by_key.items(), key=lambda kv: (order.get(kv[0][1], len(order)),
                                                                 kv[0][1])):
            series.append(self._series_history(key, rows, accepted))
        return ProjectHistory(
            project=project, period=period, series=tuple(series),
            weeks=tuple(WeekRate(w, sum(c.values()), c["conform"] + c["accepted"])
                        for w, c in sorted(weeks.items())))

    def _series_history(self, key: tuple[str, str], rows: Sequence[_Judged],
                        accepted: Sequence[AcceptedChange]) -> SeriesHistory:
        template = self.judge.current(rows[-1].project, rows[-1].sequence_name) or {}
        differing = [{d.param for d in j.differences} for j in rows]
        when = [(_iso_day(j.day), _clock(j.time)) for j in rows]
        params = []
        for param in template:
            if param in _NAMING or (param in self.rules and self.rules[param].ignore):
                continue
            values = [j.header.get(param, NULL) for j in rows]
            # the values are a parameter set's canonical ones: repr tells them apart
            if not any(param in d for d in differing) and len(set(map(repr, values))) < 2:
                continue
            points = tuple(Point(
                session=j.session, date=date, time=clock, value=value,
                template=None if j.template is None else j.template.get(param),
                differs=param in d, accepted=j.status == "accepted")
                for j, (date, clock), value, d in zip(rows, when, values, differing))
            params.append(ParamHistory(param, template[param], points))
        return SeriesHistory(
            sequence_name=rows[-1].sequence_name, n_series=len(rows),
            n_differ=sum(1 for j in rows if j.status == "differ"), params=tuple(params),
            accepted=tuple(a for a in accepted if _fold(a.sequence_name) == key[1]))


def build_report(
    store: Store,
    period: Period,
    *,
    project: str | None = None,
    rules: Rules = DEFAULT_RULES,
    exclusions: Exclusions = DEFAULT_EXCLUSIONS,
) -> Report:
    """The compliance report of ``period`` (see ``Reader.report``)."""
    return Reader(store, rules=rules, exclusions=exclusions).report(period, project)


def project_history(
    store: Store,
    project: str,
    period: Period,
    *,
    rules: Rules = DEFAULT_RULES,
    exclusions: Exclusions = DEFAULT_EXCLUSIONS,
    only: Collection[str] | None = None,
) -> ProjectHistory:
    """A project's history over ``period`` (see ``Reader.history``)."""
    return Reader(store, rules=rules, exclusions=exclusions).history(project, period, only)
