"""Persistence behind one interface: series history, file counts, templates, protocol
pins and acknowledgements. ``sqlite`` is the embedded default (one scanner);
``postgres`` is one database shared by many scanners' mrqart (``pip install
'mrqart[postgres]'``). ``base`` holds what they share: the schema and every query.

May import the names of ``mrqart.rules``; never trio or the live service. Blocking:
callers in trio run it through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import sqlite3
import sys
from os import PathLike

from mrqart.store.base import (
    PROTOCOLS,
    SCHEMA_VERSION,
    TEMPLATES,
    NewerSchemaError,
    param_set_of,
    template_key,
)
from mrqart.store.base import Store as BaseStore
from mrqart.store.sqlite import Store

__all__ = ["PROTOCOLS", "SCHEMA_VERSION", "TEMPLATES", "BaseStore", "NewerSchemaError", "Store", "database_errors",
           "is_postgres", "open_store", "param_set_of", "template_key"]


def is_postgres(url_or_path: str | PathLike[str]) -> bool:
    """Whether ``--db`` names a PostgreSQL database rather than a sqlite file."""
    return str(url_or_path).startswith(("postgresql://", "postgres://"))


def open_store(url_or_path: str | PathLike[str], *, wait: bool = True) -> BaseStore:
    """The store at ``url_or_path``: PostgreSQL for a ``postgresql://`` URL (psycopg is
    imported only then: it is an optional extra), else the sqlite file at that path.
    ``wait=False``: a PostgreSQL store returns before its server answers (see
    ``postgres.Store``)."""
    if is_postgres(url_or_path):
        from mrqart.store import postgres

        return postgres.Store(str(url_or_path), wait=wait)
    return Store(url_or_path)


def database_errors() -> tuple[type[Exception], ...]:
    """What the stores this process opened may raise: sqlite's errors, and psycopg's
    once it is imported (a PostgreSQL store was opened)."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)
