"""The daily report's model and renderings over a month of synthetic sessions (tests/reportkit)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reportkit import (
    ACCEPT_AT,
    ACCEPT_BY,
    ACCEPT_REASON,
    ACK_AT,
    ACK_BY,
    ACK_REASON,
    DAY,
    DAY1,
    DAY2,
    KIDS,
    KIDS_DAY,
    PROJECT,
    build_month,
)

from mrqart.cli import main
from mrqart.report import Exclusions, Period, build_report, load_exclusions, project_history
from mrqart.report.model import Counts, summary
from mrqart.report.render import to_html, to_json, to_text
from mrqart.rules.check import RulesFileError, load_rules
from mrqart.store import Store


@pytest.fixture(scope="module")
def month() -> Iterator[Store]:
    with Store(":memory:") as store:
        build_month(store)
        yield store


def counts(**fields: int) -> dict[str, int]:
    return {**{f: 0 for f in Counts.__dataclass_fields__}, **fields}


def line(number: int, name: str, time: str, n_files: int, status: str = "conform",
         differences: tuple[dict[str, Any], ...] = (), **rest: Any) -> dict[str, Any]:
    return {"series_number": number, "sequence_name": name, "time": time, "n_files": n_files,
            "status": status, "differences": list(differences), "acks": [], "accepted": None,
            **rest}


def session(key: str, subject: str, time: str, series: list[dict[str, Any]], *,
            project: str = PROJECT, station: str = "AWP167046", **rest: Any) -> dict[str, Any]:
    return {"session": key, "project": project, "station": station, "subject": subject,
            "date": "2026-11-30", "time": time, "series": series, "alerts": [],
            "missing": [], "missing_ack": None, **rest}


EXPECTED_DAY = {
    "period": {"first": "2026-11-30", "last": "2026-11-30"},
    "counts": counts(series=8, conform=4, differ=2, no_template=1, accepted=1,
                     acknowledged=1, incomplete=1, missing=1, excluded=2),
    "projects": [
        {
            "project": PROJECT,
            "sessions": [
                session(DAY1, "sub-a", "09:01", [
                    line(2, "T1w", "09:02", 192),
                    line(3, "rest", "09:03", 300, "differ", ({
                        "param": "TR", "expected": 1300.0, "got": 2000.0, "difference": 700.0,
                        "text": "TR: expected 1300, got 2000 (+700)", "streak": 4},)),
                ], missing=["dwi"], counts=counts(series=2, conform=1, differ=1, missing=1,
                                                  excluded=1)),
                session(DAY2, "sub-b", "11:01", [
                    line(2, "T1w", "11:02", 192, "differ", ({
                        "param": "FA", "expected": 9.0, "got": 12.0, "difference": 3.0,
                        "text": "FA: expected 9, got 12 (+3)", "streak": 1},)),
                    line(3, "rest", "11:03", 250),
                    line(4, "dwi", "11:04", 64, "accepted", accepted={
                        "text": f"accepted by {ACCEPT_BY}", "reason": ACCEPT_REASON,
                        "at": ACCEPT_AT, "by": ACCEPT_BY}),
                    line(5, "fmap_new", "11:05", 72, "no_template"),
                ], alerts=[{
                    "kind": "incomplete", "series_number": 3,
                    "text": "rest series 3 incomplete: 250 of 300",
                    "ack": {"text": "rest series 3 incomplete: 250 of 300",
                            "reason": ACK_REASON, "at": ACK_AT, "by": ACK_BY},
                }], counts=counts(series=4, conform=1, differ=1, no_template=1, accepted=1,
                                  acknowledged=1, incomplete=1, excluded=1)),
            ],
            "accepted_changes": [{
                "project": PROJECT, "sequence_name": "dwi", "at": ACCEPT_AT, "by": ACCEPT_BY,
                "reason": ACCEPT_REASON, "session": DAY2, "series_number": 4,
                "changes": [{"param": "TE", "expected": 89.0, "got": 92.0, "difference": 3.0,
                             "text": "TE: 89 -> 92 (+3)", "streak": 1}],
            }],
            "streaks": [{"sequence_name": "rest", "param": "TR", "days": 4,
                         "since": "2026-11-25", "last": "2026-11-30", "expected": 1300.0,
                         "got": 2000.0}],
            "counts": counts(series=6, conform=2, differ=2, no_template=1, accepted=1,
                             acknowledged=1, incomplete=1, missing=1, excluded=2),
        },
        {
            "project": KIDS,
            "sessions": [session(KIDS_DAY, "kid02", "14:01", [
                line(1, "T1w", "14:01", 192), line(2, "rest", "14:02", 300),
            ], project=KIDS, station="AWP2", counts=counts(series=2, conform=2))],
            "accepted_changes": [],
            "streaks": [],
            "counts": counts(series=2, conform=2),
        },
    ],
}


def test_the_day_report_json_exactly(month: Store) -> None:
    report = build_report(month, Period.day(DAY))
    assert json.loads(to_json(report)) == EXPECTED_DAY
    assert report.subject() == (
        "mrqart 2026-11-30: 2 of 8 series differ, 1 incomplete, 1 missing, 1 without template")


def test_one_project(month: Store) -> None:
    report = build_report(month, Period.day(DAY), project="kids/study  2")
    assert report.to_json()["projects"] == EXPECTED_DAY["projects"][1:]
    assert report.subject() == "mrqart 2026-11-30: 2 series, all conform"


def test_streaks_over_a_period(month: Store) -> None:
    """Reported from 11-26: the run started on 11-25, before the period; as of each day."""
    report = build_report(month, Period(dt.date(2026, 11, 26), DAY), project=PROJECT)
    (project,) = report.projects
    rest = [(s.date, d.streak) for s in project.sessions for line in s.series
            for d in line.differences if line.sequence_name == "rest"]
    assert rest == [("2026-11-26", 2), ("2026-11-27", 3), ("2026-11-30", 4)]
    assert [(s.param, s.days, s.since) for s in project.streaks] == [("TR", 4, "2026-11-25")]
    # the 11-25 report sees the first day of the run: no streak yet
    first = build_report(month, Period.day(dt.date(2026, 11, 25)), project=PROJECT)
    assert first.projects[0].streaks == ()
    assert first.projects[0].sessions[0].series[1].differences[0].streak == 1


def test_an_empty_day(month: Store) -> None:
    report = build_report(month, Period.day(dt.date(2026, 11, 28)))
    assert report.projects == () and report.subject() == "mrqart 2026-11-28: no series"
    assert "no series were acquired" in to_text(report)


def test_text_key_lines(month: Store) -> None:
    text = to_text(build_report(month, Period.day(DAY)))
    lines = text.splitlines()
    assert lines[0] == ("mrqart 2026-11-30: 2 of 8 series differ, 1 incomplete, 1 missing, "
                        "1 without template")
    for expected in (
        "Brain^Wellness: 2 of 6 series differ, 1 incomplete, 1 missing, 1 without template",
        "    rest TR: 4 scan days since 2026-11-25 (expected 1300, got 2000)",
        "    XX 3 rest: TR: expected 1300, got 2000 (+700), 4 scan days in a row",
        "    !! missing: dwi",
        "    XX 2 T1w: FA: expected 9, got 12 (+3)",
        "    ?? 5 fmap_new: no template yet (not onboarded)",
        ("    ac 4 dwi: accepted as the new reference: new diffusion scheme, approved by the "
         "PI (accepted by dr. physicist, 2026-11-30 12:10)"),
        ('    !! rest series 3 incomplete: 250 of 300; acknowledged: '
        '"participant moved, stopped early" (2026-11-30 11:40 by otto)'),
        "Kids/Study 2: 2 series, all conform",
    ):
        assert expected in lines


def test_html_key_lines(month: Store) -> None:
    page = to_html(build_report(month, Period.day(DAY)), links=True)
    assert "<title>mrqart 2026-11-30: 2 of 8 series differ" in page
    for expected in (
        ('<tr class="differ"><td>3</td><td>rest</td><td>09:03</td><td>300</td><td>'
        '<span class="verdict">TR: expected 1300, got 2000 (+700), 4 scan days in a row</span>'),
        '<tr class="no_template"><td>5</td><td>fmap_new</td>',
        ('<td>rest series 3 incomplete: 250 of 300 <span class="ack">acknowledged: '
        "participant moved, stopped early (2026-11-30 11:40 by otto)</span>"),
        '<tr class="alert missing"><td></td><td>missing</td><td></td><td></td><td>dwi</td></tr>',
        '<a href="/projects/Kids%2FStudy%202">Kids/Study 2</a>',
        '<a href="/reports?day=2026-11-29">',
        "<li>rest TR: 4 scan days since 2026-11-25 (expected 1300, got 2000)</li>",
    ):
        assert expected in page
    assert "<script" not in page and "http" not in page  # nothing loads from elsewhere


def test_html_escapes_header_and_operator_text(tmp_path: Path) -> None:
    from reportkit import record_session

    evil = '<img src=x onerror="alert(1)">'
    with Store(":memory:") as store:
        for n in range(2):
            record_session(store, f"s{n}", "20261130", 9 + n, ("T1w",), project=evil,
                           subject=evil, changed={"T1w": {"FA": 9.0 + 3 * n}})
        page = to_html(build_report(store, Period.day(DAY)), links=True)
    assert evil not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_exclusions_from_the_rules_toml(month: Store, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[TR]\ntol = 2.0\n[report]\nexclude = ["^fmap"]\n'
                     f'exclude_projects = ["{KIDS}"]\n'
                     '[report.project."brain^wellness"]\nexclude = ["^dwi$"]\n')
    assert load_rules(rules)["TR"].tol == 2.0  # [report] is no parameter
    exclusions = load_exclusions(rules)
    report = build_report(month, Period.day(DAY), exclusions=exclusions)
    (project,) = report.projects
    names = [[line.sequence_name for line in s.series] for s in project.sessions]
    # the localizer is back (the list replaces the defaults), fmap_new and dwi are out
    assert names == [["localizer", "T1w", "rest"], ["localizer", "T1w", "rest"]]
    assert project.sessions[0].missing == ()  # dwi excluded for this project
    assert report.counts.excluded == 2 and report.counts.no_template == 0


@pytest.mark.parametrize("toml", [
    '[report]\nexclude = "localizer"\n',
    '[report]\nexclude = ["("]\n',
    '[report]\nexclde = []\n',
    '[report.project.P]\nskip = []\n',
])
def test_malformed_exclusions_are_refused(tmp_path: Path, toml: str) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(toml)
    with pytest.raises(RulesFileError, match="rules.toml"):
        load_exclusions(rules)


def test_default_exclusions() -> None:
    e = Exclusions()
    assert [e.series_excluded("P", n) for n in (
        "AAHead_Scout_64ch", "localizer_3plane", "3-Plane Loc", "SURVEY", "t1_mprage")] == [
        True, True, True, True, False]
    assert load_exclusions(None) == e


@pytest.mark.parametrize(("day", "since", "expected"), [
    (None, None, ("2026-11-29", "2026-11-29")),
    ("today", None, ("2026-11-30", "2026-11-30")),
    ("2026-11-02", None, ("2026-11-02", "2026-11-02")),
    (None, "2026-11-24", ("2026-11-24", "2026-11-30")),
    (None, "yesterday", ("2026-11-29", "2026-11-30")),
])
def test_period_parse(day: str | None, since: str | None, expected: tuple[str, str]) -> None:
    period = Period.parse(day, since, today=DAY)
    assert (period.first.isoformat(), period.last.isoformat()) == expected


@pytest.mark.parametrize(("day", "since"), [
    ("30/11/2026", None), ("2026-11-30", "2026-11-01"), (None, "2026-12-01"), ("", None)])
def test_period_parse_refuses(day: str | None, since: str | None) -> None:
    with pytest.raises(ValueError):
        Period.parse(day, since, today=DAY)


@pytest.mark.parametrize(("c", "text"), [
    (Counts(series=41, differ=2, missing=1), "2 of 41 series differ, 1 missing"),
    (Counts(series=41, conform=41), "41 series, all conform"),
    (Counts(series=3, incomplete=1, no_template=2), ("3 series, none differs, 1 incomplete, "
     "2 without template")),
    (Counts(), "no series"),
])
def test_summary(c: Counts, text: str) -> None:
    assert summary(c) == text


def test_project_history(month: Store) -> None:
    history = project_history(month, PROJECT, Period(dt.date(2026, 11, 1), DAY))
    assert [s.sequence_name for s in history.series] == ["T1w", "rest", "dwi", "fmap_new"]
    t1w, rest, dwi, fmap = history.series
    assert (rest.n_series, rest.n_differ) == (22, 4)
    (tr,) = rest.params
    assert tr.param == "TR" and tr.template == 1300.0
    assert [(p.date, p.value) for p in tr.points if p.differs] == [
        ("2026-11-25", 2000.0), ("2026-11-26", 2000.0), ("2026-11-27", 2000.0),
        ("2026-11-30", 2000.0)]
    assert {p.value for p in tr.points if not p.differs} == {1300.0}
    assert [p.param for p in t1w.params] == ["FA"]
    # dwi's TE changed once, by a person: the accepted point, judged against 89, is no
    # difference, and the template is 92 from then on
    (te,) = dwi.params
    assert (te.param, te.template) == ("TE", 92.0)
    assert [(p.date, p.value, p.template, p.differs, p.accepted) for p in te.points][-2:] == [
        ("2026-11-27", 89.0, 89.0, False, False), ("2026-11-30", 92.0, 89.0, False, True)]
    assert [a.reason for a in dwi.accepted] == [ACCEPT_REASON]
    assert fmap.n_series == 1 and fmap.params == ()
    # weeks from Monday; series without a template (the first session) are not counted
    assert [(w.week, w.series, w.conform) for w in history.weeks] == [
        ("2026-11-02", 12, 12), ("2026-11-09", 15, 15), ("2026-11-16", 15, 15),
        ("2026-11-23", 15, 12), ("2026-11-30", 5, 3)]
    assert json.loads(json.dumps(history.to_json()))["project"] == PROJECT


def test_cli_report_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "m.sqlite"
    with Store(db) as store:
        build_month(store)
    assert main(["report", "--db", str(db), "--day", "2026-11-30", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == EXPECTED_DAY
    assert main(["report", "--db", str(db), "--day", "2026-11-30", "--project", KIDS]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "mrqart 2026-11-30: 2 series, all conform"
    assert main(["report", "--db", str(db), "--day", "30.11.2026"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
    assert main(["report", "--db", str(db), "--rules", str(tmp_path / "none.toml")]) == 2
    assert "none.toml" in capsys.readouterr().err


def test_series_sets_name_each_series_parameter_set(month: Store) -> None:
    """The store's light rows (the streak look-back reads them) match the headers."""
    from mrqart.store import param_set_of

    headers = {(r["session"], r["series_number"]): r["header"] for r in month.series_on("20261130")}
    rows = month.series_sets("20261130")
    assert sorted((r["session"], r["series_number"]) for r in rows) == sorted(headers)
    for r in rows:
        sets = {s["id"]: s["params"] for s in month.param_sets(r["project"], r["sequence_name"])}
        assert sets[r["set_id"]] == param_set_of(headers[(r["session"], r["series_number"])])


def test_plots_escape_header_text(tmp_path: Path) -> None:
    """Series names are header text: the SVG inlined in the page keeps them text."""
    from mrqart.report import plots
    from mrqart.synth import DEFAULT_FIELDS

    evil = "<script>alert(1)</script>"
    with Store(":memory:") as store:
        for n, fa in enumerate((9.0, 9.0, 12.0)):
            store.record_series({**DEFAULT_FIELDS, "Project": "P", "SequenceName": evil,
                                 "StudyUID": f"s{n}", "AcqDate": f"2026112{n}", "FA": fa},
                                n_files=1, trusted=fa == 9.0)
        history = project_history(store, "P", Period(dt.date(2026, 11, 1), DAY))
    (series,) = history.series
    assert [p.param for p in series.params] == ["FA"]
    svg = plots.svg_markup(plots.series_figure(series, "svg") or b"")
    assert svg.startswith("<svg") and "<script" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
