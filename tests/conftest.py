"""Store fixtures only: the store tests run against both engines, sqlite and PostgreSQL.

PostgreSQL is the server named by ``MRQART_TEST_PG`` (.ci/run starts one with
tests/pgserver.py); each test gets a schema of its own, dropped afterwards. Without
the variable the PostgreSQL cases skip on a developer's machine, and fail in CI
(``CI`` set): CI must never pass without having run them.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from mrqart.store import BaseStore, open_store
from tests.pgserver import DSN_VAR

ENGINES = ("sqlite", "postgres")

try:
    from psycopg import Error as _PgError
except ImportError:  # psycopg is the optional extra; the PostgreSQL cases then skip
    _PgError = sqlite3.Error
#: What either engine raises.
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, _PgError)


def pg_server_dsn() -> str:
    """The test server's DSN; skips (fails in CI) when there is none."""
    dsn = os.environ.get(DSN_VAR)
    if not dsn:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {DSN_VAR} is not set (.ci/run sets it)")
        pytest.skip(f"no PostgreSQL server: set {DSN_VAR} (python tests/pgserver.py start DIR)")
    return dsn


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL of the test server whose tables go to a fresh schema (its search_path)."""
    import psycopg

    dsn = pg_server_dsn()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    yield f"{dsn}{sep}options={quote(f'-c search_path={schema}')}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of the engine under test that outlives a store: a file, a schema."""
    if engine == "sqlite":
        return str(tmp_path / "db.sqlite")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(engine: str, request: pytest.FixtureRequest) -> Iterator[BaseStore]:
    """An empty store of the engine under test (sqlite's in memory)."""
    url = ":memory:" if engine == "sqlite" else request.getfixturevalue("pg_url")
    with open_store(url) as s:
        yield s


def rows(store: BaseStore, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Rows of a query on the store's own connection (tests read tables directly)."""
    return store._run(lambda: store._db.execute(sql, params).fetchall(), False)
