"""The PostgreSQL engine: one database shared by the mrqart of every scanner.

psycopg 3 with its ``ConnectionPool`` (the optional extra ``mrqart[postgres]``); the
queries and the schema are ``base``'s, sent with server-side parameters.

Several processes write at once. Every write transaction runs at READ COMMITTED
(each statement sees what others committed before it) and is safe by construction:

- new rows go in with ``INSERT ... ON CONFLICT`` on their unique keys (a series'
  session and number, a parameter set's hash): two processes recording one series
  make one row, the second finds it and updates it;
- counters change by ``n = n + 1`` under the row's lock;
- the vote count that elects a template reads and writes several rows of one
  Project x SequenceName, so it runs under a transaction-scoped advisory lock on
  that name (``Store._serialize``): processes recording one template take turns,
  others run in parallel.

Two transactions that lock names in opposite orders (two importers' batches)
deadlock; PostgreSQL aborts one, and that unit of work is rolled back and run again
(with a ``batch``, every write made in it so far is replayed in order), up to
``MAX_ATTEMPTS`` times; so is one that fails to serialize (a database whose default
isolation was raised). The schema version lives in ``mrqart_schema``; migrations
take an advisory lock first, so that the second process to start sees the first
one's tables.

Writes that change a template or a pinned protocol ``NOTIFY`` the channel
``mrqart_changes`` when they commit; ``changes()`` LISTENs on a connection of its
own. Errors are psycopg's (``psycopg.OperationalError`` when the server is
unreachable, ``psycopg_pool.PoolTimeout`` among them), with a note naming the
database (never its password).
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from mrqart.store import base

R = TypeVar("R")

# The pool logs every failed reconnection attempt (a warning every few seconds for a
# whole outage); callers hear of it through the errors units of work raise.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

#: The channel change notifications travel on.
CHANNEL = "mrqart_changes"
#: Runs of one unit of work before a deadlock or serialization failure propagates:
#: each retry follows another transaction's progress, so ten in a row means
#: something else is wrong.
MAX_ATTEMPTS = 10
#: Connections per process: the service uses one at a time, the importer one, and
#: a pinning operator one more; the change feed has its own.
POOL_SIZE = 4
#: Seconds to wait for a connection before an error: the service must hear quickly
#: that the database is away, so that the page says so and writes go to its queue.
CONNECT_TIMEOUT = 5
#: Seconds a unit of work waits for a connection while the server is known to be away
#: (the pool keeps reconnecting in the background; the caller tries again later).
UNREACHABLE_WAIT = 0.5
#: Seconds the pool keeps reconnecting in the background before leaving it to the calls.
RECONNECT_S = 3.0
#: Serializes migrations of all mrqart processes on one database (any constant).
_MIGRATION_LOCK = 0x6D72716172740001
_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


def display_name(conninfo: str) -> str:
    """A connection string as logs and notes show it: without its password."""
    d = conninfo_to_dict(conninfo)
    host = d.get("host", "")
    port = f":{d['port']}" if d.get("port") else ""
    user = f"{d['user']}@" if d.get("user") else ""
    return f"postgresql://{user}{host}{port}/{d.get('dbname', '')}"


def _pg_sql(sql: str, cache: dict[str, str] = {}) -> str:  # noqa: B006 (a memo)
    """base's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    out = cache.get(sql)
    if out is None:
        out = cache[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


class _Db:
    """A psycopg connection that takes base's SQL."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(_pg_sql(sql), params)


class _Transaction:
    """One write transaction of one thread: what it did (to replay it after a
    serialization failure) and what it changed (to notify at commit)."""

    def __init__(self, store: Store, conn: psycopg.Connection[Any]) -> None:
        self.store, self.db = store, _Db(conn)
        self.log: list[Callable[[], Any]] = []
        self.changed: set[str] = set()
        self.new_set_ids: dict[tuple[Any, ...], int] = {}  # the store learns them at commit
        self.attempts = 1
        self.depth = 0

    def begin(self) -> None:
        self.db.conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")

    def call(self, op: Callable[[], R], write: bool) -> R:
        """Run ``op`` in the transaction; after a serialization failure, restart the
        transaction, replay the earlier writes and run ``op`` again."""
        if self.depth:  # called by another unit of work of this one: it retries
            return op()
        if write:
            self.log.append(op)
        done = len(self.log) - 1 if write else len(self.log)
        while True:
            self.depth += 1
            try:
                return op()
            except _RETRYABLE as e:
                failure = e
            finally:
                self.depth -= 1
            self.restart(done, failure)

    def restart(self, replay: int, failure: Exception) -> None:
        """Roll back and replay the first ``replay`` logged writes in a new transaction;
        ``failure`` propagates once MAX_ATTEMPTS runs failed."""
        while True:
            self.attempts += 1
            if self.attempts > MAX_ATTEMPTS:
                raise failure
            self.store.retries += 1
            self.rollback()
            # jittered: two processes that collided should not collide again
            time.sleep(random.uniform(0.001, 0.005) * self.attempts)
            self.begin()
            self.depth += 1
            try:
                for op in self.log[:replay]:
                    op()
                return
            except _RETRYABLE as e:
                failure = e
            finally:
                self.depth -= 1

    def commit(self) -> None:
        while True:
            try:
                for what in sorted(self.changed):
                    self.db.execute("SELECT pg_notify(?, ?)", (CHANNEL, what))
                self.db.conn.execute("COMMIT")
                for raw, set_id in self.new_set_ids.items():
                    base.Store._learn_set_id(self.store, raw, set_id)
                return
            except _RETRYABLE as e:
                failure = e
            self.restart(len(self.log), failure)

    def rollback(self) -> None:
        self.changed.clear()
        self.new_set_ids.clear()
        # a connection the server dropped cannot roll back; the pool discards it
        with contextlib.suppress(psycopg.OperationalError):
            self.db.conn.execute("ROLLBACK")


class Store(base.Store):
    """The series history and templates in a PostgreSQL database."""

    errors: ClassVar[tuple[type[Exception], ...]] = (psycopg.Error,)

    def __init__(self, conninfo: str, *, timeout: float = CONNECT_TIMEOUT,
                 wait: bool = True) -> None:
        """Connect to ``conninfo`` (``postgresql://user@host/dbname`` or key=value) and
        migrate its schema. Raises ``NewerSchemaError`` if a newer mrqart wrote it,
        ``psycopg.OperationalError`` (with a note naming the database) if it cannot be
        reached within ``timeout`` seconds.

        ``wait=False`` (the live service, which must start while the database is away)
        returns at once: the pool keeps connecting in the background, and the first
        unit of work that reaches the database migrates it (until then each raises).
        While the database is unreachable a unit of work gives up after
        ``UNREACHABLE_WAIT`` seconds instead of ``timeout``."""
        super().__init__()
        self.conninfo = conninfo
        self.path = display_name(conninfo)
        self._local = threading.local()
        self.retries = 0  # units of work run again after a serialization failure
        self._timeout = timeout
        self._unreachable = False  # the last unit of work could not reach the server
        self._migrated = threading.Event()
        self._migrating = threading.Lock()
        self._pool = ConnectionPool(
            conninfo, min_size=1, max_size=POOL_SIZE, timeout=timeout, open=False,
            kwargs={"autocommit": True, "row_factory": dict_row,
                    "connect_timeout": max(1, round(timeout))},
            # a connection the server dropped while it sat in the pool is replaced
            # before it is handed out, not failed on first use
            check=ConnectionPool.check_connection,
            # the pool's own reconnection backs off exponentially without bound; give it
            # up soon: each unit of work asked while the pool is empty starts a fresh
            # attempt, so the server's return is noticed at the next call
            reconnect_timeout=RECONNECT_S, name="mrqart",
        )
        try:
            self._pool.open(wait=wait, timeout=timeout)
            if wait:
                self._ensure_migrated()
        except BaseException as e:
            self._pool.close()
            if isinstance(e, psycopg.Error) and self.path not in str(getattr(e, "__notes__", "")):
                e.add_note(f"mrqart database: {self.path}")
            raise

    @property
    def _db(self) -> _Db:  # type: ignore[override]
        return self._local.db

    @classmethod
    def _ddl(cls, statement: str | base.Dialects) -> str:
        """sqlite's DDL in PostgreSQL: identity keys; text compared byte-wise ("C"),
        so that names and times order as in sqlite whatever the database's locale."""
        if isinstance(statement, base.Dialects):
            return statement.postgres
        statement = statement.replace(
            "INTEGER PRIMARY KEY", "INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        return re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', statement)

    def _schema_version(self) -> int:
        self._db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        # looked up first: a site's role may read and write the tables, not create any
        if self._db.execute("SELECT to_regclass('mrqart_schema') AS t").fetchone()["t"] is None:
            self._db.execute("CREATE TABLE mrqart_schema (version INTEGER NOT NULL)")
        row = self._db.execute("SELECT version FROM mrqart_schema").fetchone()
        if row is None:
            self._db.execute("INSERT INTO mrqart_schema (version) VALUES (0)")
            return 0
        return row["version"]

    def _set_schema_version(self, version: int) -> None:
        self._db.execute("UPDATE mrqart_schema SET version = ?", (version,))

    def _learn_set_id(self, raw: tuple[Any, ...], set_id: int) -> None:
        self._local.tx.new_set_ids[raw] = set_id

    def _serialize(self, key: tuple[str, str]) -> None:
        self._db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))",
                         ("\x1f".join(key),))

    def _changed(self, what: str) -> None:
        self._local.tx.changed.add(what)

    def _ensure_migrated(self) -> None:
        """Migrate once per store, before its first unit of work (see ``wait``)."""
        with self._migrating:
            if not self._migrated.is_set():
                self._local.migrating = True
                try:
                    self._migrate()
                finally:
                    self._local.migrating = False
                self._migrated.set()

    def _run(self, op: Callable[[], R], write: bool) -> R:
        tx: _Transaction | None = getattr(self._local, "tx", None)
        if tx is not None:
            return tx.call(op, write)
        if getattr(self._local, "db", None) is not None:  # a read calling reads
            return op()
        if not self._migrated.is_set() and not getattr(self._local, "migrating", False):
            self._ensure_migrated()
        try:
            if not write:  # one statement or a few, each its own (autocommit)
                with self._connection() as conn:
                    self._local.db = _Db(conn)
                    try:
                        return op()
                    finally:
                        self._local.db = None
            with self._transaction() as tx:
                return tx.call(op, write)
        except psycopg.OperationalError:
            self._unreachable = True
            raise
        finally:
            self._local.db = None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection from the pool, failing fast while the server is known away."""
        timeout = UNREACHABLE_WAIT if self._unreachable else self._timeout
        with self._pool.connection(timeout=timeout) as conn:
            self._unreachable = False
            yield conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Transaction]:
        with self._connection() as conn:
            tx = _Transaction(self, conn)
            self._local.tx, self._local.db = tx, tx.db
            try:
                tx.begin()
                yield tx
                tx.commit()
            except BaseException:
                tx.rollback()
                raise
            finally:
                self._local.tx = self._local.db = None

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Make the writes inside one transaction (one commit instead of one each).

        After a serialization failure the writes made so far are replayed in a new
        transaction (so a write's return value is the first run's). An exception
        leaving the block rolls back every write in it.
        """
        if getattr(self._local, "tx", None) is not None:
            yield
            return
        with self._transaction():
            yield

    def close(self) -> None:
        self._pool.close()

    def changes(self) -> NotifyFeed:
        return NotifyFeed(self.conninfo)


class NotifyFeed:
    """LISTEN on ``CHANNEL`` on a connection of its own, reconnecting after the server
    went away (and then saying that everything may have changed: notifications sent
    meanwhile are lost)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None

    def wait(self, timeout: float) -> set[str]:
        if self._conn is None:
            conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
            conn.execute(f"LISTEN {CHANNEL}")
            self._conn = conn
            return {base.TEMPLATES, base.PROTOCOLS}
        try:
            got = {n.payload for n in self._conn.notifies(timeout=timeout, stop_after=1)}
            if got:  # and what arrived with it
                got |= {n.payload for n in self._conn.notifies(timeout=0.001)}
        except psycopg.OperationalError:
            self.close()
            raise
        return got & {base.TEMPLATES, base.PROTOCOLS}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
