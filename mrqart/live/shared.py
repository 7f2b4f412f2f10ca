"""The service's side of a database other processes share, and that may be away.

- :class:`Reachability`: since when the database has been failing, for ``/healthz``
  and the page ("database unreachable since 10:02").
- :func:`follow_changes`: the store's change feed (PostgreSQL LISTEN, sqlite's
  data_version), so that a template accepted or a protocol pinned by another
  process is used here at once.
- :func:`follow_stations`: every station in the database, for ``--all-stations``.

These tasks move data and decide nothing: the pipeline says what a change means.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import trio

from mrqart.store import BaseStore, database_errors
from mrqart.store.base import ChangeFeed

log = logging.getLogger("mrqart")

#: Longest wait for one change notification: bounds how long a cancelled feed thread
#: lingers (the thread cannot be interrupted).
CHANGE_WAIT_S = 1.0
#: Pause before asking a failing database again.
RETRY_S = 1.0
#: How often the stations of the whole database are read again (--all-stations).
STATIONS_S = 5.0


@dataclass
class Reachability:
    """Whether the store's last unit of work reached the database, and since when not."""

    since: float | None = None  # time.time() of the first failure in a row

    def failed(self) -> bool:
        """Note a failure; True if it is the first of a run (log it then, once)."""
        if self.since is not None:
            return False
        self.since = time.time()
        return True

    def answered(self) -> bool:
        """Note a success; True if the database was failing until now."""
        was, self.since = self.since, None
        return was is not None

    def view(self) -> dict[str, Any]:
        """``{"reachable", "unreachable_since"}``: the local wall clock's HH:MM."""
        since = None if self.since is None else datetime.fromtimestamp(self.since).strftime(
            "%H:%M")
        return {"reachable": self.since is None, "unreachable_since": since}


async def follow_changes(
    open_feed: Callable[[], ChangeFeed],
    on_change: Callable[[set[str]], Awaitable[None]],
) -> None:
    """Await ``on_change(what)`` whenever another process changed what the store's
    templates or protocols are (``store.TEMPLATES``, ``store.PROTOCOLS``).

    Owns the feed (closed on exit). Each wait runs in a thread for at most
    CHANGE_WAIT_S; cancellation abandons it and the feed is closed once it returns.
    A database that does not answer is asked again every RETRY_S (the feed
    reconnects and then reports everything changed: notifications sent meanwhile
    are lost). Cancelled with the pipeline.
    """
    limiter = trio.CapacityLimiter(1)  # the feed's one connection, one thread at a time
    feed = await trio.to_thread.run_sync(open_feed, limiter=limiter)
    try:
        while True:
            try:
                what = await trio.to_thread.run_sync(
                    feed.wait, CHANGE_WAIT_S, limiter=limiter, abandon_on_cancel=True)
            except database_errors():
                await trio.sleep(RETRY_S)
                continue
            if what:
                await on_change(what)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(feed.close, limiter=limiter)


async def follow_stations(
    store: BaseStore,
    limiter: trio.CapacityLimiter,
    publish: Callable[[list[dict[str, Any]]], None],
) -> None:
    """``publish`` every station in the database (``store.stations()``) now and every
    STATIONS_S; a failing database keeps the last list. Cancelled with the pipeline."""
    while True:
        try:
            publish(await trio.to_thread.run_sync(store.stations, limiter=limiter))
        except database_errors() as error:
            log.debug("stations not read: %s", error)
        await trio.sleep(STATIONS_S)
