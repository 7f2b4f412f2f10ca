"""The store's session-level part: recent sessions, pinned protocols, acknowledgements,
and the migration of a version-1 database; against both engines (tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from mrqart.live.session import series_key
from mrqart.rules.protocol import Alert, learn_protocol
from mrqart.store import SCHEMA_VERSION, BaseStore, open_store
from mrqart.synth import DEFAULT_FIELDS

USUAL = [("localizer", 3), ("T1w", 192), ("fmap", 72), ("rest", 300)]


def record_session(store: BaseStore, session: str, series: list[tuple[str, int]], *,
                   project: str = "Brain^Wellness", date: str = "20261124",
                   time: str = "101500.000000") -> None:
    """Record ``series`` as one session, numbered 1.. in the order given."""
    for number, (name, n_files) in enumerate(series, start=1):
        header = {**DEFAULT_FIELDS, "Project": project, "SequenceName": name,
                  "SeriesNumber": number, "StudyUID": session, "AcqDate": date,
                  "AcqTime": time}
        store.record_series(header, n_files=n_files)


def test_recent_sessions_newest_first_in_series_order(store: BaseStore) -> None:
    record_session(store, "old", USUAL[:2], date="20261120")
    record_session(store, "new", USUAL, date="20261124", time="080000.000000")
    record_session(store, "mid", list(reversed(USUAL)), date="20261122")
    record_session(store, "undated", [("rest", 1)], date="null")
    record_session(store, "other", USUAL, project="Other")
    assert store.recent_sessions("Brain^Wellness") == [
        USUAL, list(reversed(USUAL)), USUAL[:2], [("rest", 1)]]
    assert store.recent_sessions("Brain^Wellness", limit=2) == [USUAL, list(reversed(USUAL))]
    assert store.recent_sessions("Brain^Wellness", exclude="new", limit=1) == [
        list(reversed(USUAL))]
    assert store.recent_sessions("nobody") == []


@pytest.mark.parametrize("asked", ["brain^wellness", " BRAIN^Wellness ", "Brain^Wellness"])
def test_recent_sessions_match_the_project_like_templates(store: BaseStore, asked: str) -> None:
    record_session(store, "s1", USUAL)
    assert store.recent_sessions(asked) == [USUAL]


def test_a_session_is_as_recent_as_its_first_series(store: BaseStore) -> None:
    """A long session that started earlier is older, however late its last series."""
    record_session(store, "long", USUAL[:1], date="20261124", time="080000.000000")
    store.record_series({**DEFAULT_FIELDS, "Project": "Brain^Wellness", "SequenceName": "late",
                         "SeriesNumber": 9, "StudyUID": "long", "AcqDate": "20261124",
                         "AcqTime": "120000.000000"}, n_files=1)
    record_session(store, "short", USUAL[:1], date="20261124", time="090000.000000")
    assert store.recent_sessions("Brain^Wellness") == [USUAL[:1], [*USUAL[:1], ("late", 1)]]


def test_recent_sessions_feed_learn_protocol(store: BaseStore) -> None:
    for i in range(3):
        record_session(store, f"s{i}", USUAL if i else USUAL[:3], date=f"2026112{i}")
    protocol = learn_protocol("Brain^Wellness", store.recent_sessions("Brain^Wellness"))
    assert [(e.sequence_name, e.n_files) for e in protocol.expected] == USUAL


def test_session_series(store: BaseStore) -> None:
    record_session(store, "s1", USUAL)
    assert store.session_series("s1") == USUAL
    assert store.session_series("unknown") == []


def test_pin_unpin_protocol(store: BaseStore) -> None:
    expected = [{"sequence_name": "T1w", "n_files": 192}, {"sequence_name": "rest",
                                                          "n_files": None}]
    assert store.pinned_protocol("Brain^Wellness") is None
    store.pin_protocol("Brain^Wellness", expected)
    assert store.pinned_protocol(" brain^wellness") == expected
    store.pin_protocol("BRAIN^WELLNESS", expected[:1])  # a second pin replaces the first
    assert store.pinned_protocol("Brain^Wellness") == expected[:1]
    assert store.pinned_protocol("Other") is None
    assert store.unpin_protocol("Brain^Wellness") is True
    assert store.unpin_protocol("Brain^Wellness") is False
    assert store.pinned_protocol("Brain^Wellness") is None


@pytest.mark.parametrize(
    ("expected", "match"),
    [
        ([], "at least one"),
        ([{"sequence_name": "", "n_files": 3}], "sequence_name"),
        ([{"n_files": 3}], "sequence_name"),
        ([{"sequence_name": "rest", "n_files": 0}], "positive"),
        ([{"sequence_name": "rest", "n_files": 2.5}], "positive"),
        ([{"sequence_name": "rest", "n_files": True}], "positive"),
    ],
)
def test_pin_protocol_refuses_malformed(store: BaseStore, expected: list[dict[str, Any]],
                                        match: str) -> None:
    with pytest.raises(ValueError, match=match):
        store.pin_protocol("P", expected)
    assert store.pinned_protocol("P") is None


def alert(kind: str = "incomplete", number: int | None = 4) -> Alert:
    key = None if number is None else series_key("1.2.3", number)
    return Alert(id=f"{key or '1.2.3'}:{kind}", kind=kind, session="1.2.3", series=key,
                 text=f"{kind} <b>text</b>")


def test_acknowledge_upserts_and_keeps_history(store: BaseStore) -> None:
    incomplete, missing = alert(), alert("missing", None)
    store.acknowledge(incomplete.to_json(), "participant asked to stop", "2026-11-24T10:00:00+00:00",
                      "ana")
    store.acknowledge(missing.to_json(), "short session", "2026-11-24T10:05:00+00:00")
    acks = store.acks("1.2.3")
    assert list(acks) == [incomplete.id, missing.id]
    assert acks[incomplete.id] == {**incomplete.to_json(), "reason": "participant asked to stop",
                                   "at": "2026-11-24T10:00:00+00:00", "by": "ana"}
    assert acks[missing.id]["by"] is None
    # A second acknowledgement replaces the reason, time and author.
    store.acknowledge(incomplete.to_json(), "moved", "2026-11-24T10:09:00+00:00", "ben")
    assert {k: store.acks("1.2.3")[incomplete.id][k] for k in ("reason", "by")} == {
        "reason": "moved", "by": "ben"}
    assert [a["id"] for a in store.series_acks("1.2.3", 4)] == [incomplete.id]
    assert store.series_acks("1.2.3", 5) == []
    assert store.acks("other") == {}


def test_acks_survive_reopening(db_url: str) -> None:
    with open_store(db_url) as s:
        s.acknowledge(alert().to_json(), "ok", "2026-11-24T10:00:00+00:00")
    with open_store(db_url) as s:
        assert s.series_acks("1.2.3", 4)[0]["reason"] == "ok"


def test_version_1_database_migrates_keeping_its_series(db_url: str) -> None:
    with open_store(db_url) as s:
        record_session(s, "s1", USUAL)
        record_session(s, "s2", [("rest", 300)])

        def downgrade() -> None:  # to the database a version-1 mrqart left behind
            for table in ("ack", "protocol_pin", "template_change", "template", "last_software"):
                s._db.execute(f"DROP TABLE {table}")
            for table, column in (("series", "trusted"), ("series", "vote"),
                                  ("series", "software"), ("param_set", "n_votes"),
                                  ("param_set", "first_seen")):
                s._db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
            s._set_schema_version(1)

        s._run(downgrade, True)
    with open_store(db_url) as s:
        assert s.session_series("s1") == USUAL
        s.pin_protocol("Brain^Wellness", [{"sequence_name": "rest", "n_files": 300}])
        s.acknowledge(alert().to_json(), "ok", "2026-11-24T10:00:00+00:00")
        # every series voted before version 3: the most used set is established
        (rest,) = s.param_sets("Brain^Wellness", "rest")
        assert rest["established"] and rest["votes"] == 2 == rest["count"]
        assert rest["first_seen"] == "20261124 101500.000000"
        assert [h["kind"] for h in s.history("Brain^Wellness", "rest")] == ["learnt"]
        assert s.previous_software({**DEFAULT_FIELDS, "Project": "Brain^Wellness",
                                    "SequenceName": "rest"}) == "syngo MR E11"
        assert s._run(s._schema_version, True) == SCHEMA_VERSION == 4


def test_protocol_is_pinned_else_learnt(store: BaseStore) -> None:
    assert store.protocol("Brain^Wellness").expected == ()
    record_session(store, "s1", USUAL)
    record_session(store, "now", [("rest", 5)])
    learnt = store.protocol("Brain^Wellness", exclude="now")
    assert not learnt.pinned
    assert [(e.sequence_name, e.n_files) for e in learnt.expected] == USUAL
    store.pin_protocol("Brain^Wellness", [{"sequence_name": "rest", "n_files": None}])
    pinned = store.protocol("brain^wellness")
    assert pinned.pinned and [(e.sequence_name, e.n_files) for e in pinned.expected] == [
        ("rest", None)]


def test_stations_with_their_current_session(store: BaseStore) -> None:
    assert store.stations() == []
    for session, station, time in (("a1", "SiteA", "090000.000000"),
                                   ("b1", "SiteB", "093000.000000"),
                                   ("a2", "SiteA", "110000.000000")):
        for number, (name, n_files) in enumerate(USUAL[:2], start=1):
            store.record_series({**DEFAULT_FIELDS, "Project": "Brain^Wellness", "Station": station,
                                 "SequenceName": name, "SeriesNumber": number,
                                 "StudyUID": session, "AcqDate": "20261124",
                                 "AcqTime": time}, n_files=n_files)
    assert store.stations() == [
        {"station": "SiteA", "session": "a2", "project": "Brain^Wellness", "n_series": 2,
         "last_seen": "2026-11-24T11:00:00"},
        {"station": "SiteB", "session": "b1", "project": "Brain^Wellness", "n_series": 2,
         "last_seen": "2026-11-24T09:30:00"}]
