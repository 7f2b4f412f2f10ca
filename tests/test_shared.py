"""The service's side of a shared database (mrqart.live.shared): reachability, and the
change feed that tells this process what another one changed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

from mrqart.live import shared
from mrqart.store import PROTOCOLS, TEMPLATES, Store


def test_reachability_is_noted_once_per_outage() -> None:
    r = shared.Reachability()
    assert r.view() == {"reachable": True, "unreachable_since": None}
    assert r.failed() is True and r.failed() is False  # logged once
    assert r.view()["reachable"] is False and len(r.view()["unreachable_since"]) == 5
    assert r.answered() is True and r.answered() is False
    assert r.view()["reachable"] is True


async def test_another_process_pinning_is_followed(tmp_path: Path) -> None:
    """Two processes on one sqlite file: the second pins a protocol, the first hears of
    it through its feed (sqlite: data_version, polled)."""
    here, there = Store(tmp_path / "db.sqlite"), Store(tmp_path / "db.sqlite")
    heard: list[set[str]] = []
    changed = trio.Event()

    async def on_change(what: set[str]) -> None:
        heard.append(what)
        changed.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            feed = here.changes()  # opened now: its baseline is before the pin
            nursery.start_soon(shared.follow_changes, lambda: feed, on_change)
            await trio.to_thread.run_sync(
                there.pin_protocol, "P", [{"sequence_name": "rest", "n_files": None}])
            await changed.wait()
            nursery.cancel_scope.cancel()
    assert heard == [{TEMPLATES, PROTOCOLS}]
    here.close()
    there.close()


async def test_a_failing_feed_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # (real time: the feed waits in threads, which an autojump clock would not wait for)
    monkeypatch.setattr(shared, "RETRY_S", 0.01)

    class Flaky:
        """A feed whose database is away for its first two waits."""

        calls = 0
        closed = False

        def wait(self, timeout: float) -> set[str]:
            self.calls += 1
            if self.calls <= 2:
                raise sqlite3.OperationalError("unable to open database file")
            return {TEMPLATES}

        def close(self) -> None:
            self.closed = True

    feed = Flaky()
    heard = trio.Event()

    async def on_change(what: set[str]) -> None:
        heard.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shared.follow_changes, lambda: feed, on_change)
            await heard.wait()
            nursery.cancel_scope.cancel()
    assert feed.calls >= 3 and feed.closed  # two failures, then the change
