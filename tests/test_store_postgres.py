"""What only the PostgreSQL store does: many processes writing one database at once,
serialization failures retried, change notifications, its schema version and errors.
(Everything else is tested against both engines in test_store*.py.) A process is a
``Store`` of its own here: its own pool of connections."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from mrqart.store import SCHEMA_VERSION, BaseStore, NewerSchemaError, open_store
from mrqart.store.base import PROTOCOLS, TEMPLATES
from tests.conftest import DB_ERRORS, rows
from tests.test_store import BASE

psycopg = pytest.importorskip("psycopg")
from mrqart.store import postgres  # needs psycopg


def header(session: str, number: int, **fields: Any) -> dict[str, Any]:
    return {**BASE, "StudyUID": session, "SeriesNumber": number, **fields}


def in_processes(n: int, pg_url: str, work: Callable[[BaseStore, int], None],
                 check: Callable[[list[BaseStore]], None]) -> None:
    """Run ``work(store, k)`` in ``n`` threads, each with a store of its own (a process),
    then ``check`` the stores; a database error in a thread fails the test."""
    stores = [open_store(pg_url) for _ in range(n)]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            work(stores[k], k)
        except DB_ERRORS as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        check(stores)
    finally:
        for s in stores:
            s.close()


def test_a_deadlocked_batch_is_replayed_not_lost_or_doubled(pg_url: str) -> None:
    """Two processes' batches record two templates' series in opposite orders: each
    holds one template's lock and waits for the other's. PostgreSQL aborts one; it is
    rolled back and replayed in full once the other committed."""
    first_done = [threading.Event(), threading.Event()]
    order = [("rest", "T1w"), ("T1w", "rest")]

    def work(store: BaseStore, k: int) -> None:
        one, two = order[k]
        with store.batch():
            store.record_series(header(f"p{k}", 1, SequenceName=one), n_files=1)
            first_done[k].set()
            first_done[1 - k].wait(10)  # both hold a lock: the next call deadlocks
            store.record_series(header(f"p{k}", 2, SequenceName=two), n_files=2)

    def check(stores: list[BaseStore]) -> None:
        assert sum(s.retries for s in stores) == 1  # type: ignore[attr-defined]
        got = rows(stores[0], "SELECT session, series_number, n_files FROM series")
        assert sorted((r["session"], r["series_number"], r["n_files"]) for r in got) == [
            ("p0", 1, 1), ("p0", 2, 2), ("p1", 1, 1), ("p1", 2, 2)]
        for sequence in ("rest", "T1w"):
            assert [s["count"] for s in stores[0].param_sets("Brain^Wellness", sequence)] == [2]

    in_processes(2, pg_url, work, check)


def test_many_processes_recording_the_same_series(pg_url: str) -> None:
    """Four processes record overlapping series (new ones, repeated counts, echo times
    that move a series between sets), some in batches: each series is there once, with
    a count one of them wrote, and every set's counters equal a recount."""
    keys = [(f"s{i % 3}", i) for i in range(12)]

    def work(store: BaseStore, k: int) -> None:
        rng = random.Random(k)
        for _ in range(3):
            todo = rng.sample(keys, len(keys))
            while todo:
                chunk, todo = todo[:4], todo[4:]
                with store.batch():
                    for session, number in chunk:
                        store.record_series(
                            header(session, number, TR=1300.0 + 100 * (number % 2)),
                            n_files=10 + number, echo_times=rng.choice([(), (14.2, 38.93)]))

    def check(stores: list[BaseStore]) -> None:
        series = rows(stores[0], "SELECT session, series_number, n_files FROM series")
        assert sorted((r["session"], r["series_number"]) for r in series) == sorted(keys)
        assert all(r["n_files"] == 10 + r["series_number"] for r in series)
        recount = {r["param_set"]: r["n"] for r in rows(
            stores[0], "SELECT param_set, count(*) AS n FROM series GROUP BY param_set")}
        kept = {r["id"]: r["n_series"] for r in rows(
            stores[0], "SELECT id, n_series FROM param_set WHERE n_series > 0")}
        assert kept == recount

    in_processes(4, pg_url, work, check)


def test_pins_are_notified_to_other_processes(pg_url: str) -> None:
    with open_store(pg_url) as a, open_store(pg_url) as b:
        feed = b.changes()
        try:
            assert feed.wait(0.1) == {TEMPLATES, PROTOCOLS}  # connected: refresh everything
            assert feed.wait(0.05) == set()
            a.record_series(header("s", 1), n_files=1)
            assert feed.wait(5) == {TEMPLATES}
            a.record_series(header("s", 1), n_files=9)  # a count only: no vote changed
            a.pin_protocol("Brain^Wellness", [{"sequence_name": "rest", "n_files": None}])
            assert feed.wait(5) == {PROTOCOLS}
            with a.batch():  # one notification per kind per transaction, at commit
                a.pin("Brain^Wellness", "RewardedAnti", header=header("s", 2, TR=900.0))
                assert feed.wait(0.05) == set()
                a.unpin_protocol("Brain^Wellness")
            assert feed.wait(5) == {TEMPLATES, PROTOCOLS}
        finally:
            feed.close()


def test_schema_version_is_kept_and_a_newer_one_refused(pg_url: str) -> None:
    with open_store(pg_url) as s:
        assert rows(s, "SELECT version FROM mrqart_schema") == [{"version": SCHEMA_VERSION}]
        s._run(lambda: s._set_schema_version(SCHEMA_VERSION + 1), True)
    with pytest.raises(NewerSchemaError, match="upgrade mrqart"):
        open_store(pg_url)


def test_an_unreachable_server_is_named_without_its_password() -> None:
    from tests.pgserver import _free_port

    url = f"postgresql://mrqart:s3cret@127.0.0.1:{_free_port()}/mrqart"
    with pytest.raises(psycopg.OperationalError) as info:
        postgres.Store(url, timeout=1)
    notes = "\n".join(info.value.__notes__)
    assert f"mrqart database: postgresql://mrqart@127.0.0.1:{url.split(':')[3]}" in notes
    assert "s3cret" not in notes


@pytest.mark.parametrize(
    ("url", "engine"),
    [("postgresql://u@h/db", "postgres"), ("postgres://h/db", "postgres"),
     ("/var/lib/mrqart/db.sqlite", "sqlite"), ("postgresql.sqlite", "sqlite")],
)
def test_open_store_picks_the_engine_by_prefix(url: str, engine: str) -> None:
    from mrqart.store import is_postgres

    assert is_postgres(url) == (engine == "postgres")


def test_a_store_opened_while_the_server_is_away_starts_working_when_it_comes() -> None:
    from tests.pgserver import new_server

    server = new_server()
    server.stop()
    try:
        store = open_store(server.dsn, wait=False)  # returns at once
        with pytest.raises(psycopg.OperationalError):
            store.template("Brain^Wellness", "rest")
        server.start()
        for _ in range(100):  # the pool reconnects in the background (backoff ~1 s)
            try:
                store.record_series(header("s", 1), n_files=2)
                break
            except psycopg.OperationalError:
                threading.Event().wait(0.1)
        assert store.session_series("s") == [("RewardedAnti", 2)]  # migrated, recorded
        store.close()
    finally:
        server.stop()
