"""The store, against both engines (tests/conftest.py: sqlite on ":memory:" and a
PostgreSQL schema), and what is particular to each: sqlite's WAL file and notes,
PostgreSQL's concurrent writers."""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from mrqart.rules.check import PARAMS, check
from mrqart.store import (
    SCHEMA_VERSION,
    BaseStore,
    NewerSchemaError,
    Store,
    open_store,
    param_set_of,
)
from mrqart.synth import DEFAULT_FIELDS
from tests.conftest import DB_ERRORS, rows

# The synthetic scanner's header, as another project's series on 2026-11-24.
BASE: dict[str, Any] = {
    **DEFAULT_FIELDS, "Project": "Brain^Wellness", "SequenceName": "RewardedAnti",
    "AcqDate": "20261124", "AcqTime": "101500.000000", "StudyUID": "1.2.3", "SeriesNumber": 5,
}

_counter = iter(range(10**6))


def series(**fields: Any) -> dict[str, Any]:
    """A header of a new series (unique session unless given)."""
    return {**BASE, "StudyUID": f"1.2.{next(_counter)}", **fields}


def template_of(store: BaseStore, project: str = "Brain^Wellness",
                sequence: str = "RewardedAnti") -> dict[str, Any]:
    template = store.template(project, sequence)
    assert template is not None
    return template


def test_empty_store_has_no_template(store: BaseStore) -> None:
    assert store.template("Brain^Wellness", "RewardedAnti") is None
    assert store.templates() == []
    assert store.series_on("20261124") == []


def test_template_holds_the_17_params_in_order(store: BaseStore) -> None:
    store.record_series(series(), n_files=1)
    template = store.template("Brain^Wellness", "RewardedAnti")
    assert template is not None
    assert list(template) == list(PARAMS)
    assert template == param_set_of(BASE)
    # stored rounded to 6 decimals: float noise gone, nothing check() could see
    assert template["PixelResol"] == [2.291667, 2.291667]
    assert check(BASE, template)["status"] == "conform"


def test_template_is_most_frequent(store: BaseStore) -> None:
    for tr in (2000.0, 1300.0, 1300.0, 2000.0, 1300.0):
        store.record_series(series(TR=tr), n_files=1)
    assert template_of(store)["TR"] == 1300.0


@pytest.mark.parametrize(
    "dates",
    [
        # (date, time) of a TR=1300 series then a TR=2000 series: one each, a tie,
        # whatever their acquisition order
        (("20261101", "090000"), ("20261102", "090000")),
        (("20261102", "090000"), ("20261101", "090000")),
        (("20261101", "090000"), ("20261101", "090000")),
        (("20261101", "090000"), ("null", "null")),
    ],
)
def test_a_tie_keeps_the_established_set(store: BaseStore, dates: Any) -> None:
    for tr, (day, time) in zip((1300.0, 2000.0), dates):
        store.record_series(series(TR=tr, AcqDate=day, AcqTime=time), n_files=1)
    assert template_of(store)["TR"] == 1300.0
    store.record_series(series(TR=2000.0), n_files=1)  # 2 against 1: now it outnumbers
    assert template_of(store)["TR"] == 2000.0
    history = store.history("Brain^Wellness", "RewardedAnti")
    assert [(h["kind"], h["params"]["TR"], h["reason"]) for h in history] == [
        ("learnt", 1300.0, "first trusted series"),
        ("learnt", 2000.0, "2 trusted series against 1 for the established set"),
    ]


@pytest.mark.parametrize(
    ("project", "sequence"),
    [("brain^wellness", "rewardedanti"), ("BRAIN^WELLNESS", "RewardedAnti"),
     ("Brain^Wellness", "REWARDEDANTI")],
)
def test_names_match_case_insensitively(store: BaseStore, project: str, sequence: str) -> None:
    store.record_series(series(), n_files=1)
    assert store.template(project, sequence) is not None
    assert store.template(project, "Other") is None


def test_case_variants_count_together(store: BaseStore) -> None:
    store.record_series(series(Project="brain^wellness", TR=2000.0), n_files=1)
    store.record_series(series(Project="BRAIN^WELLNESS", TR=2000.0), n_files=1)
    store.record_series(series(TR=1300.0), n_files=1)
    assert template_of(store)["TR"] == 2000.0
    assert len(store.templates()) == 1


def test_pin_wins_over_counts(store: BaseStore) -> None:
    for _ in range(3):
        store.record_series(series(TR=1300.0), n_files=1)
    store.record_series(series(TR=2000.0), n_files=1)
    rare = next(s for s in store.param_sets("Brain^Wellness", "RewardedAnti")
                if s["params"]["TR"] == 2000.0)
    assert store.pin("brain^wellness", "RewardedAnti", set_id=rare["id"]) == rare["id"]
    assert template_of(store)["TR"] == 2000.0
    sets = store.param_sets("Brain^Wellness", "RewardedAnti")
    assert [(s["count"], s["pinned"]) for s in sets] == [(1, True), (3, False)]
    assert store.templates()[0]["pinned"] is True
    assert store.unpin("Brain^Wellness", "RewardedAnti") is True
    assert store.unpin("Brain^Wellness", "RewardedAnti") is False
    assert template_of(store)["TR"] == 1300.0


def test_pin_from_a_header_never_seen(store: BaseStore) -> None:
    store.record_series(series(TR=1300.0), n_files=1)
    set_id = store.pin("Brain^Wellness", "RewardedAnti", header=series(TR=1500.0))
    assert template_of(store)["TR"] == 1500.0
    assert store.param_sets("Brain^Wellness", "RewardedAnti")[0]["id"] == set_id
    # a pin on a Project x SequenceName with no series at all still is its template
    store.pin("Other", "seq", header=series(Project="Other", SequenceName="seq"))
    assert store.template("other", "SEQ") is not None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"set_id": 999}, LookupError),
        ({"header": {**BASE, "Project": "Other"}}, ValueError),
        ({}, TypeError),
        ({"set_id": 1, "header": BASE}, TypeError),
    ],
)
def test_pin_refuses(store: BaseStore, kwargs: dict[str, Any], error: type[Exception]) -> None:
    store.record_series(series(), n_files=1)
    store.record_series(series(Project="Other"), n_files=1)
    other_id = store.param_sets("Other", "RewardedAnti")[0]["id"]
    with pytest.raises(error):
        store.pin("Brain^Wellness", "RewardedAnti", **kwargs)
    with pytest.raises(LookupError):  # a set of another project
        store.pin("Brain^Wellness", "RewardedAnti", set_id=other_id)


def test_record_series_is_an_idempotent_upsert(store: BaseStore) -> None:
    header = series()
    assert store.record_series(header, n_files=1) is True
    assert store.record_series(header, n_files=40) is False
    assert store.record_series(header, n_files=41, source="import") is False
    rows = store.series_on("20261124")
    assert [(r["n_files"], r["source"]) for r in rows] == [(41, "live")]
    assert store.param_sets("Brain^Wellness", "RewardedAnti")[0]["count"] == 1


def test_session_key_defaults_to_study_uid(store: BaseStore) -> None:
    header = series()
    assert store.record_series(header, n_files=1)
    assert store.record_series(header, n_files=1, session="dir/a")
    assert not store.record_series(header, n_files=2, session="dir/a")
    assert store.record_series({**header, "SeriesNumber": 6}, n_files=1)
    sessions = {(r["session"], r["series_number"]) for r in store.series_on("20261124")}
    assert sessions == {(header["StudyUID"], 5), ("dir/a", 5), (header["StudyUID"], 6)}


def test_identical_params_share_one_set(store: BaseStore) -> None:
    store.record_series(series(), n_files=1)
    # another subject, day and shims; live export rounding and white space
    store.record_series(series(SubID="sub2", AcqDate="20261125", Shims="null",
                               PixelResol=[2.29166663, 2.2916666],
                               Comments="Unaliased  MB3/PE4/LB SENSE1 "), n_files=1)
    sets = store.param_sets("Brain^Wellness", "RewardedAnti")
    assert len(sets) == 1 and sets[0]["count"] == 2


@pytest.mark.parametrize(
    ("echo_times", "te"),
    [
        ((), 30.0),
        ((30.0,), 30.0),
        ((30.0, 30.0), 30.0),
        ((38.93, 14.2), [14.2, 38.93]),
        ((14.2, 38.93, 63.66, 14.2), [14.2, 38.93, 63.66]),
    ],
)
def test_multi_echo_te_list(store: BaseStore, echo_times: tuple[float, ...], te: Any) -> None:
    store.record_series(series(), n_files=3, echo_times=echo_times)
    assert template_of(store)["TE"] == te


def test_live_multi_echo_gets_its_echoes_on_update(store: BaseStore) -> None:
    header = series(TE=14.2)
    store.record_series(header, n_files=1)
    store.record_series(header, n_files=6, echo_times=(14.2, 38.93))
    assert template_of(store)["TE"] == [14.2, 38.93]
    # the series moved sets: the single-echo set has no series left and is gone
    [only] = store.param_sets("Brain^Wellness", "RewardedAnti")
    assert (only["count"], only["last_seen"]) == (1, "20261124 101500.000000")


def test_series_on_a_day(store: BaseStore) -> None:
    store.record_series(series(AcqTime="120000", SeriesNumber=2, Station="B"), n_files=3,
                        session="s1")
    store.record_series(series(AcqTime="090000", SeriesNumber=1), n_files=7, source="import",
                        session="s1")
    store.record_series(series(AcqDate="20261123"), n_files=1)
    rows = store.series_on("20261124")
    assert [(r["station"], r["session"], r["series_number"], r["n_files"], r["source"])
            for r in rows] == [("AWP167046", "s1", 1, 7, "import"), ("B", "s1", 2, 3, "live")]
    assert rows[1]["header"]["AcqTime"] == "120000"
    assert set(rows[0]) == {"station", "session", "series_number", "header", "n_files", "source"}


def test_bad_source_is_refused(store: BaseStore) -> None:
    with pytest.raises(store.errors, match="CHECK|check"):
        store.record_series(series(), n_files=1, source="guess")


def test_param_set_of_fills_missing_with_null() -> None:
    params = param_set_of({"Project": "P", "TR": 2.0000001})
    assert params["SequenceName"] == "null" and params["TR"] == 2.0


def test_file_store_persists_with_wal_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with Store(path) as s:
        s.record_series(series(), n_files=1)
    with Store(path) as s:
        assert s.template("Brain^Wellness", "RewardedAnti") is not None
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(NewerSchemaError, match="upgrade mrqart"):
        Store(path)


def test_sqlite_errors_name_the_database(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "db.sqlite"
    with pytest.raises(sqlite3.OperationalError) as info:
        Store(path)
    assert f"mrqart database: {path}" in info.value.__notes__


def test_calls_from_threads_one_after_another(store: BaseStore) -> None:
    def work(i: int) -> None:
        store.record_series(series(SeriesNumber=i), n_files=i)
        store.template("Brain^Wellness", "RewardedAnti")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.param_sets("Brain^Wellness", "RewardedAnti")[0]["count"] == 8


def test_two_processes_creating_one_database(db_url: str) -> None:
    # Two connections racing to create the schema: one migrates, the other waits
    # for its write lock and then finds the schema current.
    errors: list[BaseException] = []
    opened: list[BaseStore] = []

    def opener() -> None:
        try:
            opened.append(open_store(db_url))
        except DB_ERRORS as e:  # e.g. "table param_set already exists": fails below
            errors.append(e)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(opened) == 4
    for s in opened:
        s.close()


@pytest.mark.parametrize("seed", range(5))
def test_counters_match_the_series_table(store: BaseStore, seed: int) -> None:
    # The per-set counters template() ranks by are kept incrementally; after any
    # mix of inserts, repeats and echo changes they equal a recount.
    rng = random.Random(seed)
    for _ in range(60):
        header = {**BASE, "StudyUID": f"s{rng.randrange(4)}", "SeriesNumber": rng.randrange(6),
                  "TR": rng.choice([1300.0, 2000.0]), "AcqTime": f"{rng.randrange(24):02d}0000",
                  "AcqDate": rng.choice(["20261124", "null"])}
        echoes = rng.choice([(), (14.2, 38.93), (14.2, 38.93, 60.0)])
        store.record_series(header, n_files=rng.randrange(1, 9), echo_times=echoes)
    recount = {
        row["param_set"]: (row["n"], row["last"]) for row in rows(
            store, """SELECT param_set, count(*) AS n,
                             max(NULLIF(acq_date, 'null') || ' ' || acq_time) AS last
                      FROM series GROUP BY param_set""")
    }
    kept = {row["id"]: (row["n_series"], row["last_seen"]) for row in rows(
        store, "SELECT id, n_series, last_seen FROM param_set WHERE n_series > 0")}
    assert kept == recount


def test_rolled_back_batch_leaves_nothing(store: BaseStore) -> None:
    with pytest.raises(RuntimeError), store.batch():
        store.record_series(series(TR=1500.0), n_files=1)
        raise RuntimeError("the importer failed half way")
    assert store.template("Brain^Wellness", "RewardedAnti") is None
    assert store.record_series(series(TR=1500.0), n_files=1)  # no stale set id
    assert template_of(store)["TR"] == 1500.0


def test_int_and_float_of_one_value_are_one_set(store: BaseStore) -> None:
    store.record_series(series(TR=1300, Phase=1), n_files=1)
    store.record_series(series(TR=1300.0, Phase=1.0), n_files=1)
    assert [s["count"] for s in store.param_sets("Brain^Wellness", "RewardedAnti")] == [2]


@pytest.mark.parametrize(
    ("recorded", "asked"),
    [("Étude^Cerveau", "ÉTUDE^cerveau"), ("Straße", "STRASSE"),
     ("Brain  Wellness ", "brain wellness")],
)
def test_names_match_beyond_ascii_and_white_space(store: BaseStore, recorded: str, asked: str) -> None:
    store.record_series(series(Project=recorded), n_files=1)
    assert store.template(asked, "rewardedanti") is not None
    store.pin(asked, "RewardedAnti", header=series(Project=recorded, TR=900.0))
    assert template_of(store, asked)["TR"] == 900.0


def test_phase_and_magnitude_of_one_field_map_have_their_own_templates(store: BaseStore) -> None:
    magnitude = {**BASE, "SequenceName": "fmap", "TE": 4.92,
                 "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}
    phase = {**magnitude, "SeriesNumber": 99, "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]}
    store.record_series(magnitude, n_files=2, session="s1")
    store.record_series(phase, n_files=1, session="s1")  # the same parameters, another image
    project = "Brain^Wellness"
    assert store.template(project, "fmap")["TE"] == 4.92
    assert store.template(project, "fmap (phase)")["TE"] == 4.92
    assert [s["count"] for s in store.param_sets(project, "fmap")] == [1]
    assert [s["count"] for s in store.param_sets(project, "fmap (phase)")] == [1]


def test_purge_blanks_who_before_a_day_once(store: BaseStore) -> None:
    old = series(AcqDate="20261101", SubID="sub-01", Operator="ana", Comments="moved")
    store.record_series(old, n_files=1)
    store.record_series(series(SubID="sub-02", Operator="bo"), n_files=1)  # 20261124
    store.record_series(series(AcqDate="null", SubID="sub-03"), n_files=1)  # undated: kept
    assert store.purge_identifying("20261124") == 1
    assert store.purge_identifying("20261124") == 0  # already purged
    [row] = store.series_on("20261101")
    assert not {"SubID", "Operator", "Comments"} & set(row["header"])
    assert row["header"]["TR"] == old["TR"] and row["n_files"] == 1
    assert store.series_on("20261124")[0]["header"]["SubID"] == "sub-02"
