"""The sqlite engine: the embedded default, one file beside one scanner's mrqart.

Pure (no trio). The service calls a ``Store`` from worker threads, one call at a
time (a CapacityLimiter of 1); a lock makes that safe even if it did not. The
queries, the schema and its migrations are ``base``'s; the schema version is
sqlite's ``PRAGMA user_version``.

sqlite errors propagate unchanged in type (the service decides what a read-only
or full disk means), with a note naming the database file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from os import PathLike
from typing import ClassVar, TypeVar

from mrqart.store import base
from mrqart.store.base import SCHEMA_VERSION, NewerSchemaError, param_set_of

__all__ = ["SCHEMA_VERSION", "NewerSchemaError", "Store", "param_set_of"]

R = TypeVar("R")

#: How often a change feed looks at the database's data_version (sqlite has no
#: notifications; another process's commit changes the number).
CHANGE_POLL_SECONDS = 0.5


class Store(base.Store):
    """The series history and templates in one sqlite file (``":memory:"`` works)."""

    errors: ClassVar[tuple[type[Exception], ...]] = (sqlite3.Error,)

    def __init__(self, path: str | PathLike[str]) -> None:
        """Open (creating if needed) and migrate the database at ``path``.

        Raises ``NewerSchemaError`` if a newer mrqart wrote it, ``sqlite3.Error``
        if it cannot be opened or migrated (with a note naming ``path``).
        """
        super().__init__()
        self.path = str(path)
        self._lock = threading.RLock()  # re-entered by writes inside batch()
        try:
            self._conn = _connect(self.path)
        except sqlite3.Error as e:
            e.add_note(f"mrqart database: {self.path}")
            raise
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    @property
    def _db(self) -> sqlite3.Connection:  # type: ignore[override]
        return self._conn

    def _schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def _set_schema_version(self, version: int) -> None:
        self._conn.execute(f"PRAGMA user_version = {int(version)}")

    def _run(self, op: Callable[[], R], write: bool) -> R:
        if not write:
            with self._lock:
                return op()
        with self._write():
            return op()

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """Hold the lock and a write transaction: a new one, or the open batch().
        BEGIN IMMEDIATE takes the write lock first, so the version read by a
        migration is the one it bumps."""
        with self._lock:
            if self._conn.in_transaction:
                yield
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.rollback()
                self._set_ids.clear()  # it may name sets the rollback removed
                raise
            self._conn.commit()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Make the writes inside one transaction (one commit instead of one each).

        Other threads wait until it ends, and so do other processes' writes: keep
        batches short (the importer commits every few dozen series). An exception
        leaving the block rolls back every write in it.
        """
        with self._write():
            yield

    def close(self) -> None:
        """Close the database; the Store is unusable afterwards."""
        with self._lock:
            self._conn.close()

    def changes(self) -> DataVersionFeed:
        return DataVersionFeed(self.path)


def _connect(path: str) -> sqlite3.Connection:
    # timeout: wait for a lock from the first statement on (journal_mode=WAL needs one)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    db.row_factory = sqlite3.Row
    # WAL lets `mrqart templates` read while the service writes; NORMAL is
    # durable enough in WAL mode and far faster than FULL for imports.
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=5000")
    return db


class DataVersionFeed:
    """Another process's commits to one sqlite file, seen by polling ``PRAGMA
    data_version`` on a connection of its own (it does not change for this process's
    own writes: the service knows those). Says both kinds changed: sqlite cannot tell."""

    def __init__(self, path: str) -> None:
        self._stop = threading.Event()
        self._conn = None if path == ":memory:" else sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self._version = self._data_version()

    def _data_version(self) -> int | None:
        return None if self._conn is None else self._conn.execute(
            "PRAGMA data_version").fetchone()[0]

    def wait(self, timeout: float) -> set[str]:
        waited = 0.0
        while waited < timeout and not self._stop.is_set():
            step = min(CHANGE_POLL_SECONDS, timeout - waited)
            self._stop.wait(step)
            waited += step
            version = self._data_version()
            if version != self._version:
                self._version = version
                return {base.TEMPLATES, base.PROTOCOLS}
        return set()

    def close(self) -> None:
        self._stop.set()
        if self._conn is not None:
            self._conn.close()
