"""The store's template policy: trusted votes, acceptance, imported templates, history,
software versions (the pure policy is tests/test_templates_policy.py); against both
engines (tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from mrqart.store import BaseStore as Store
from mrqart.store import Store as SqliteStore
from mrqart.synth import DEFAULT_FIELDS

P, S = "Brain^Wellness", "rest"
_counter = iter(range(10**6))


def series(**fields: Any) -> dict[str, Any]:
    """A header of a new series, in its own session, acquired in order."""
    n = next(_counter)
    return {**DEFAULT_FIELDS, "Project": P, "SequenceName": S, "StudyUID": f"s{n}",
            "SeriesNumber": 3, "AcqDate": "20261124", "AcqTime": f"{100000 + n:06d}.000000",
            **fields}


def tr(store: Store) -> float | None:
    template = store.template(P, S)
    return None if template is None else template["TR"]


def test_untrusted_series_never_vote(store: Store) -> None:
    store.record_series(series(TR=1300.0), n_files=1, trusted=True)
    for _ in range(3):
        store.record_series(series(TR=2000.0), n_files=1, trusted=False)
    assert tr(store) == 1300.0
    sets = store.param_sets(P, S)
    assert [(s["params"]["TR"], s["count"], s["votes"]) for s in sets] == [
        (1300.0, 1, 1), (2000.0, 3, 0)]


def test_no_trusted_series_no_template(store: Store) -> None:
    store.record_series(series(TR=2000.0), n_files=1, trusted=False)
    assert tr(store) is None and store.templates() == []
    assert store.param_sets(P, S)[0]["count"] == 1  # still listed, for `templates sets`


def test_accept_makes_the_set_the_template_and_restarts_the_count(store: Store) -> None:
    for _ in range(3):
        store.record_series(series(TR=1300.0), n_files=1)
    wrong = series(TR=2000.0)
    store.record_series(wrong, n_files=1, trusted=False)
    change = store.accept(wrong["StudyUID"], 3, reason="new protocol v2", by="ana",
                          at="2026-11-30T11:00:00+00:00")
    assert tr(store) == 2000.0
    assert {k: change[k] for k in ("kind", "by", "reason", "at", "session", "series_number")} == {
        "kind": "accepted", "by": "ana", "reason": "new protocol v2",
        "at": "2026-11-30T11:00:00+00:00", "session": wrong["StudyUID"], "series_number": 3}
    assert change["params"]["TR"] == 2000.0
    # the old set's three votes belong to the old count: one later series does not undo it
    store.record_series(series(TR=1300.0), n_files=1)
    assert tr(store) == 2000.0  # 1 against 1: a tie keeps the accepted set
    store.record_series(series(TR=1300.0), n_files=1)
    assert tr(store) == 1300.0  # 2 against 1: trusted history outnumbers it again
    kinds = [(h["kind"], h["params"]["TR"], h["by"]) for h in store.history(P, S)]
    assert kinds == [("learnt", 1300.0, "mrqart"), ("accepted", 2000.0, "ana"),
                     ("learnt", 1300.0, "mrqart")]


def test_accept_unknown_series(store: Store) -> None:
    with pytest.raises(LookupError):
        store.accept("nope", 1, reason="r", by="b")


def test_pin_and_unpin_are_in_the_history(store: Store) -> None:
    store.record_series(series(TR=1300.0), n_files=1)
    set_id = store.pin(P, S, header=series(TR=1500.0), by="ana", reason="vendor advice")
    assert tr(store) == 1500.0
    assert store.unpin(P, S, by="bo", reason="done")
    assert tr(store) == 1300.0
    history = store.history(P, S)
    assert [(h["kind"], h["set_id"], h["by"], h["reason"]) for h in history[1:]] == [
        ("pinned", set_id, "ana", "vendor advice"), ("unpinned", None, "bo", "done")]


def test_adopt_keeps_history_once(store: Store) -> None:
    # another site's database (sqlite) exports; the store under test imports
    with SqliteStore(":memory:") as site_a:
        site_a.record_series(series(TR=1300.0), n_files=1)
        params = site_a.template(P, S)
        assert params is not None
        old = site_a.history(P, S)
    for _ in range(2):  # importing twice keeps one copy of the old history
        change = store.adopt({**params, "TR": 2000.0}, S, reason="from site A", by="ana",
                             history=old)
    assert store.template(P, S) == {**params, "TR": 2000.0}
    assert change["kind"] == "imported"
    history = store.history(P, S)
    assert [(h["kind"], h["reason"]) for h in history] == [
        ("learnt", "first trusted series"), ("imported", "from site A"),
        ("imported", "from site A")]
    # the decision holds one vote (by default): another set needs two
    store.record_series(series(TR=1300.0), n_files=1)
    assert store.template(P, S)["TR"] == 2000.0  # type: ignore[index]
    store.record_series(series(TR=1300.0), n_files=1)
    assert store.template(P, S)["TR"] == 1300.0  # type: ignore[index]


def test_adopt_refuses_a_partial_set(store: Store) -> None:
    with pytest.raises(ValueError, match="lacks"):
        store.adopt({"Project": P, "TR": 1.0}, S, reason="r", by="b")


def test_template_changes_filter(store: Store) -> None:
    store.record_series(series(TR=1300.0), n_files=1)
    wrong = series(TR=2000.0)
    store.record_series(wrong, n_files=1, trusted=False)
    store.accept(wrong["StudyUID"], 3, reason="r", by="b", at="2026-11-30T11:00:00")
    assert [c["kind"] for c in store.template_changes(kinds=("accepted",))] == ["accepted"]
    assert [c["kind"] for c in store.template_changes(project="brain^wellness")] == [
        "learnt", "accepted"]
    assert store.template_changes(since="2099") == []


def test_previous_software_per_station_and_sequence(store: Store) -> None:
    first = series()
    assert store.previous_software(first) is None
    store.record_series(first, n_files=1)
    assert store.previous_software(series(SoftwareVersions="syngo MR XA30")) == "syngo MR E11"
    assert store.previous_software(series(Station="OTHER")) is None
    assert store.previous_software(series(SequenceName="T1w")) is None
    store.record_series(series(SoftwareVersions="syngo MR XA30"), n_files=1, trusted=False)
    assert store.previous_software(series()) == "syngo MR XA30"


def test_multi_echo_update_moves_the_vote(store: Store) -> None:
    first = series(TE=14.2)
    store.record_series(first, n_files=1)
    store.record_series(first, n_files=3, echo_times=(14.2, 38.9))
    assert store.template(P, S)["TE"] == [14.2, 38.9]  # type: ignore[index]
    assert [s["votes"] for s in store.param_sets(P, S)] == [1]
