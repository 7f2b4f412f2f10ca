"""The outbox: writes kept on local disk while the database is away, replayed in order
into either engine (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mrqart.store import BaseStore
from mrqart.store.outbox import Outbox, OutboxFull
from tests.test_store import series


def record(key: str, header: dict[str, Any], n_files: int) -> tuple[str, str, dict[str, Any]]:
    return (key, "record_series",
            {"header": header, "n_files": n_files, "source": "live", "session": "s1"})


class Unreachable(BaseStore):
    """A store whose database is away: every write fails as a connection would."""

    errors = (ConnectionError,)
    path = "unreachable"

    def batch(self) -> Any:
        raise ConnectionError("database unreachable")


def test_waiting_writes_survive_a_restart_and_replay_in_order(
        tmp_path: Path, store: BaseStore) -> None:
    first, second = series(SeriesNumber=1, TR=2000.0), series(SeriesNumber=2, TR=1300.0)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.put([record("s1:1", first, 1), record("s1:2", second, 1)])
    outbox.put([record("s1:1", first, 40)])  # a later count replaces it, in its place
    with pytest.raises(ConnectionError):
        outbox.drain(Unreachable())
    assert len(outbox) == 2
    outbox.close()

    outbox = Outbox(tmp_path / "outbox.sqlite")  # the service restarted
    assert outbox.drain(store, batch=1) == 2
    assert len(outbox) == 0
    assert store.session_series("s1") == [("RewardedAnti", 40), ("RewardedAnti", 1)]
    # series 1 came first: its set was the first trusted one and is the template
    assert store.template("Brain^Wellness", "RewardedAnti")["TR"] == 2000.0  # type: ignore[index]
    assert outbox.drain(store) == 0
    outbox.close()


def test_the_outbox_is_bounded(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", limit=2)
    outbox.put([record("a", series(), 1), record("b", series(), 1)])
    with pytest.raises(OutboxFull):
        outbox.put([record("c", series(), 1), record("a", series(), 2)])
    assert len(outbox) == 2  # none of the refused put was kept
    outbox.put([record("a", series(), 3)])  # a waiting key still takes its update
    outbox.close()


def test_only_the_live_writes_are_replayed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a write"):
        Outbox(tmp_path / "outbox.sqlite").put([("k", "unpin", {})])


def test_what_was_kept_survives_a_restart(tmp_path: Path, store: BaseStore) -> None:
    store.record_series(series(), n_files=1)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    assert outbox.kept("templates") is None
    outbox.keep("templates", store.templates())
    outbox.close()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    assert outbox.kept("templates") == store.templates()
    outbox.close()


def test_a_count_update_keeps_the_echo_times_waiting(tmp_path: Path, store: BaseStore) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    first = record("s1:1", series(TE=14.2), 1)
    outbox.put([(first[0], first[1], {**first[2], "echo_times": [14.2, 38.93]})])
    outbox.put([record("s1:1", series(TE=14.2), 12)])  # no echo times: they stay
    outbox.drain(store)
    assert store.session_series("s1") == [("RewardedAnti", 12)]
    assert store.template("Brain^Wellness", "RewardedAnti")["TE"] == [14.2, 38.93]  # type: ignore[index]
    outbox.close()
