"""Writes waiting for a remote database, kept on local disk.

A service whose store is a remote PostgreSQL must not lose what it saw while the
database was unreachable, not even across its own restart. Each write the live path
makes (a series recorded with its file count and echo times, an acknowledgement)
goes into a small local sqlite file first, and is taken out once the database has
committed it. ``drain`` replays what is waiting in the order it was first put.

It also keeps the last copy of what the service reads at start (the templates), so
that a service restarted during an outage still gives verdicts (``keep``, ``kept``).

Entries are keyed: a later write of the same series is merged into the waiting one
(its arguments win, those it leaves out stay: a count update keeps the echo times
written before it) and keeps its place in the order, so a long
outage costs one entry per series, not one per flush. The file holds at most
``limit`` entries; ``put`` refuses more (``OutboxFull``) and the caller decides.

Pure (no trio): the service calls it from its store thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from mrqart.store.base import Store

#: Entries kept at most: about a month of a busy scanner's series.
MAX_PENDING = 50_000
#: Entries replayed per database transaction.
DRAIN_BATCH = 200
#: The store methods an entry may name (the live path's writes).
METHODS = frozenset({"record_series", "acknowledge"})


class OutboxFull(RuntimeError):
    """The outbox holds ``limit`` entries already."""


class Outbox:
    """Keyed, ordered writes waiting for the store, in one local sqlite file."""

    def __init__(self, path: str | PathLike[str], *, limit: int = MAX_PENDING) -> None:
        self.path, self.limit = str(path), limit
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an entry put is on disk when put returns (a power cut loses nothing)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS pending (
                   seq INTEGER PRIMARY KEY AUTOINCREMENT,
                   key TEXT NOT NULL UNIQUE,
                   method TEXT NOT NULL,
                   kwargs TEXT NOT NULL
               )""")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kept (name TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM pending").fetchone()[0]

    def put(self, entries: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
        """Keep ``(key, method, kwargs)`` entries, in one transaction; an entry is merged
        into a waiting one of the same key (its kwargs win), in its place. Raises ``OutboxFull`` (keeping none of
        them) when the new keys would pass the limit."""
        entries = list(entries)
        for _, method, _ in entries:
            if method not in METHODS:
                raise ValueError(f"not a write the outbox replays: {method!r}")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, method, kwargs in entries:
                    old = self._db.execute("SELECT kwargs FROM pending WHERE key = ?",
                                           (key,)).fetchone()
                    merged = {**(json.loads(old[0]) if old else {}), **kwargs}
                    self._db.execute(
                        """INSERT INTO pending (key, method, kwargs) VALUES (?, ?, ?)
                           ON CONFLICT (key) DO UPDATE SET method = excluded.method,
                                                           kwargs = excluded.kwargs""",
                        (key, method, json.dumps(merged)))
                n = self._db.execute("SELECT count(*) FROM pending").fetchone()[0]
                if n > self.limit:
                    raise OutboxFull(f"{self.path}: {n} writes waiting, at most {self.limit}")
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    def drain(self, store: Store, *, batch: int = DRAIN_BATCH) -> int:
        """Replay the waiting entries into ``store`` in order, ``batch`` per transaction,
        and forget each batch once the store committed it; the number replayed. The
        store's errors propagate (what was not committed stays, in its place)."""
        done = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, key, method, kwargs FROM pending ORDER BY seq LIMIT ?",
                    (batch,)).fetchall()
            if not rows:
                return done
            with store.batch():
                for _, _, method, kwargs in rows:
                    getattr(store, method)(**json.loads(kwargs))
            with self._lock:
                # an entry replaced meanwhile (same key, new kwargs) keeps its seq: delete
                # only what was replayed as it was read
                self._db.executemany(
                    "DELETE FROM pending WHERE seq = ? AND kwargs = ?",
                    [(seq, kwargs) for seq, _, _, kwargs in rows])
            done += len(rows)

    def keep(self, name: str, value: Any) -> None:
        """Keep the latest ``value`` (JSON-native) of ``name``."""
        with self._lock:
            self._db.execute(
                """INSERT INTO kept (name, value) VALUES (?, ?)
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value""",
                (name, json.dumps(value)))

    def kept(self, name: str) -> Any:
        """What ``keep`` kept last under ``name``, or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM kept WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
