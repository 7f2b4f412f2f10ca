"""Session-level compliance, pure: protocol learning, the checklist, completeness, shims."""

from __future__ import annotations

import pytest

from mrqart.rules.protocol import (
    Checklist,
    Expected,
    Protocol,
    learn_protocol,
    looks_finished,
)

USUAL = [("localizer", 3), ("T1w", 192), ("fmap", 72), ("fmap", 72), ("rest", 300)]


@pytest.mark.parametrize(
    ("sessions", "expected"),
    [
        ([], ()),
        ([USUAL], tuple(Expected(n, c) for n, c in USUAL)),
        # a series in fewer than half the sessions is not expected
        ([USUAL, USUAL, [*USUAL, ("extra", 10)]], tuple(Expected(n, c) for n, c in USUAL)),
        # the usual count is the most frequent one, not the last or the largest
        ([[("rest", 300)], [("rest", 300)], [("rest", 120)], [("rest", 500)]],
         (Expected("rest", 300),)),
        # order by median position; names matched case- and space-insensitively
        ([[("b", 1), ("a", 1)], [("B ", 1), ("a", 1)], [("a", 1), ("b", 1)]],
         (Expected("b", 1), Expected("a", 1))),
    ],
)
def test_learn_protocol(sessions: list, expected: tuple) -> None:
    assert learn_protocol("P", sessions).expected == expected


def protocol() -> Protocol:
    return Protocol("P", (Expected("fmap", 2), Expected("rest", 300), Expected("dwi", 100)))


def header(n: int, name: str, shims: list | str = "null") -> dict:
    return {"SeriesNumber": n, "SequenceName": name, "Shims": shims}


def states(checklist: Checklist) -> list[tuple[str, str]]:
    return [(i["sequence_name"], i["state"]) for i in checklist.view()["items"]]


def test_checklist_states_and_alerts_through_a_session() -> None:
    c = Checklist("S", protocol())
    assert c.on_series("S:1", header(1, "fmap", [1, 2])) == []
    c.on_count("S:1", 2)
    assert c.on_series("S:2", header(2, "rest", [1, 2])) == []
    c.on_count("S:2", 180)
    assert states(c) == [("fmap", "done"), ("rest", "running"), ("dwi", "pending")]
    assert c.view()["items"][1]["n_files"] == 180
    # the next series starts: rest stopped short
    alerts = c.on_series("S:3", header(3, "localizer"))
    assert [a.text for a in alerts] == ["rest series 2 incomplete: 180 of 300"]
    assert states(c) == [("fmap", "done"), ("rest", "incomplete"), ("dwi", "pending"),
                         ("localizer", "unexpected")]
    alerts = c.finish()
    assert [(a.kind, a.text) for a in alerts] == [("missing", "missing: dwi")]
    assert states(c)[2] == ("dwi", "missing")
    assert c.finish() == []  # once


def test_repeated_series_are_shown_as_repeats() -> None:
    c = Checklist("S", protocol())
    c.on_series("S:1", header(1, "rest"))
    c.on_count("S:1", 300)
    c.on_series("S:2", header(2, "rest"))
    assert states(c)[-1] == ("rest", "repeated")


@pytest.mark.parametrize(
    ("fmap_shims", "bold_shims", "alert"),
    [
        ([1, 2, 3], [1, 2, 3], None),
        ([1, 2, 3], [1, 2, 4], "shims changed since fieldmap series 1"),
        ("null", [1, 2, 4], None),  # no shims read: nothing to compare
    ],
)
def test_shims_must_match_the_preceding_fieldmap(fmap_shims, bold_shims, alert) -> None:
    c = Checklist("S", protocol())
    c.on_series("S:1", header(1, "fmap", fmap_shims))
    c.on_count("S:1", 2)
    alerts = c.on_series("S:2", header(2, "rest", bold_shims))
    assert [a.text for a in alerts] == ([alert] if alert else [])


def test_no_fieldmap_no_cross_series_alert() -> None:
    c = Checklist("S", protocol())
    assert c.on_series("S:1", header(1, "rest", [1])) == []


@pytest.mark.parametrize(("last", "now", "finished"), [(0, 599, False), (0, 600, True)])
def test_looks_finished(last: float, now: float, finished: bool) -> None:
    assert looks_finished(last, now, minutes=10) is finished


def test_late_files_resolve_an_incomplete_alert() -> None:
    c = Checklist("S", protocol())
    c.on_series("S:2", header(2, "rest"))
    assert c.on_count("S:2", 100) == ([], [])
    (alert,) = c.on_series("S:3", header(3, "dwi"))  # rest judged at 100 of 300
    (updated,), resolved = c.on_count("S:2", 299)  # held-back files arrive after all
    assert (updated.id, updated.text, resolved) == (
        alert.id, "rest series 2 incomplete: 299 of 300", [])
    assert c.on_count("S:2", 300) == ([], [updated])
    assert c.on_count("S:2", 300) == ([], [])
    assert states(c)[1] == ("rest", "done")


def test_a_series_that_differs_raises_one_acknowledgeable_alert() -> None:
    c = Checklist("S", protocol())
    errors = {"TR": {"expect": 1300.0, "have": 2000.0}, "FA": {"expect": 52, "have": "null"}}
    (alert,) = c.on_series("S:2", header(2, "rest"), errors)
    assert (alert.id, alert.kind, alert.series) == ("S:2:nonconform", "nonconform", "S:2")
    assert alert.text == "rest series 2: TR 2000, expected 1300 (+1 more)"
    # rest stopped short too: that is a second, separate alert
    alerts = c.on_series("S:3", header(3, "dwi"), {"Matrix": {"expect": [96, 96], "have": [64, 64]}})
    assert [(a.kind, a.text) for a in alerts] == [
        ("incomplete", "rest series 2 incomplete: 1 of 300"),
        ("nonconform", "dwi series 3: Matrix 64 × 64, expected 96 × 96")]
    c.on_count("S:3", 100)
    assert c.on_series("S:4", header(4, "fmap"), {}) == []
