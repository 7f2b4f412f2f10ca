"""What every store engine shares: the schema, the canonical form of parameter sets,
and every query. An engine (``sqlite``, ``postgres``) supplies connections,
transactions and where it keeps its schema version.

Pure (no trio). The service calls a store from worker threads.

Tables:

- ``param_set``: one row per distinct set of the invariant parameters
  (``check.PARAMS``), keyed by a hash of their canonical form (what check()
  ignores, case, white space and float noise, ignored here too), with counters.
- ``series``: one row per (session, series number) with the bookkeeping fields
  and the full header JSON, linked to its parameter set.
- ``pin``: an operator's choice of template for a Project x SequenceName.
- ``protocol_pin``: an operator's expected protocol for a project (the series a
  session should hold, in order), overriding the one learnt from history.
- ``ack``: acknowledged alerts (``protocol.Alert``) with the operator's reason,
  one row per alert id, linked to the session and series they are about.

The template of a Project x SequenceName (matched ignoring case and white
space) is the pinned parameter set if any, else the established set (table
``template``), which the policy in ``rules/templates.py`` decides: trusted series
vote (``series.trusted``, ``series.vote``, ``param_set.n_votes``), a set replaces
the established one only when it strictly outnumbers it, and a person's
acceptance or a template file's import establishes a set and starts a new count.
Every change is kept in ``template_change`` (who, when, why); ``last_software``
remembers each station's SoftwareVersions per template, to announce upgrades.

Methods the live service, the CLI and the report use (both engines offer them):
``record_series(..., trusted=)``, ``template``, ``param_sets``, ``templates``,
``pin``/``unpin``, ``accept``, ``adopt``, ``history``, ``template_changes``,
``previous_software``, ``project_templates``.

The SQL here is written once, in what sqlite and PostgreSQL both accept (``?``
placeholders, which the PostgreSQL engine turns into server-side ``%s`` parameters;
``ON CONFLICT`` upserts; ``RETURNING``; ``NULLS LAST``; ``IS NOT DISTINCT FROM``;
``"by"`` quoted, a keyword in PostgreSQL); an engine rewrites only the DDL's column
types (see ``Store._ddl``), and a migration step whose dialects differ gives both. Database errors propagate unchanged in type
(``Store.errors`` names them), with a note naming the database.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Concatenate, NamedTuple, ParamSpec, Protocol, Self, TypeVar

from mrqart.rules.check import NULL, PARAMS, squash, template_name
from mrqart.rules.protocol import RECENT_SESSIONS, Expected, learn_protocol
from mrqart.rules.protocol import Protocol as SessionProtocol
from mrqart.rules.templates import LEARNT_BY, Tally, acquired_at, elect

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="Store")

# A parameter set is stored with floats rounded to _STORED_DECIMALS (enough to
# drop float noise, far below what check() can see). Two sets are the same set
# when they match after what check() ignores: case, white space, and float
# differences far below its tolerances, so live and offline exports of one
# protocol (which round differently) count together.
_STORED_DECIMALS = 6
_KEY_DECIMALS = 3
# Parameter set ids remembered by raw header values (a few hundred protocols
# per site; the bound only guards against a pathological archive).
_SET_CACHE_SIZE = 10_000

#: What a change notification names (see ``Store.changes``): the templates (any change
#: the history keeps) or a pinned protocol.
TEMPLATES, PROTOCOLS = "templates", "protocols"



class Dialects(NamedTuple):
    """A migration step written for each engine, where their SQL differs."""

    sqlite: str
    postgres: str


# Each entry migrates the schema from version i to i + 1: the statements run in one
# transaction with the version bump. Written in sqlite's types; an engine's _ddl
# rewrites them (``INTEGER PRIMARY KEY`` is sqlite's rowid alias, for example).
MIGRATIONS: tuple[tuple[str | Dialects, ...], ...] = (
    (
        """CREATE TABLE param_set (
            id INTEGER PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            project TEXT NOT NULL,
            sequence_name TEXT NOT NULL,
            -- the names as template() matches them (Python's casefold: sqlite's
            -- lower() folds ASCII only, and DICOM names may be Latin-1)
            project_key TEXT NOT NULL,
            sequence_key TEXT NOT NULL,
            params TEXT NOT NULL,
            -- kept by record_series so that template() reads one row per set
            -- instead of counting series: its series, the latest acquisition
            -- ("YYYYMMDD HHMMSS.ffffff") and the latest series id among them
            n_series INTEGER NOT NULL DEFAULT 0,
            last_seen TEXT,
            last_series INTEGER
        )""",
        "CREATE INDEX param_set_key ON param_set (project_key, sequence_key)",
        """CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            session TEXT NOT NULL,
            series_number INTEGER NOT NULL,
            station TEXT NOT NULL,
            project TEXT NOT NULL,
            sequence_name TEXT NOT NULL,
            subject TEXT NOT NULL,
            acq_date TEXT NOT NULL,
            acq_time TEXT NOT NULL,
            operator TEXT NOT NULL,
            shims TEXT NOT NULL,
            n_files INTEGER NOT NULL,
            echo_times TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('live', 'import')),
            header TEXT NOT NULL,
            param_set INTEGER NOT NULL REFERENCES param_set (id),
            UNIQUE (session, series_number)
        )""",
        "CREATE INDEX series_param_set ON series (param_set)",
        "CREATE INDEX series_acq_date ON series (acq_date)",
        """CREATE TABLE pin (
            project_key TEXT NOT NULL,
            sequence_key TEXT NOT NULL,
            param_set INTEGER NOT NULL REFERENCES param_set (id),
            PRIMARY KEY (project_key, sequence_key)
        )""",
    ),
    (
        """CREATE TABLE protocol_pin (
            project_key TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            -- JSON list of {"sequence_name": str, "n_files": int | null}, in order
            expected TEXT NOT NULL
        )""",
        """CREATE TABLE ack (
            id TEXT PRIMARY KEY,  -- protocol.Alert.id
            kind TEXT NOT NULL,
            session TEXT NOT NULL,
            series TEXT,  -- the series key, NULL for a session-wide alert
            series_number INTEGER,  -- parsed from the key, for series_acks()
            text TEXT NOT NULL,
            reason TEXT NOT NULL,
            at TEXT NOT NULL
        )""",
        "CREATE INDEX ack_session ON ack (session, series_number)",
    ),
    (
        # Who votes (rules/templates.py): a series is trusted when it was imported,
        # conformed when checked live, or was accepted by a person; it votes in the
        # current count until a person's decision starts a new one. Series recorded
        # before this version all voted, so both default to 1.
        "ALTER TABLE series ADD COLUMN trusted INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE series ADD COLUMN vote INTEGER NOT NULL DEFAULT 1",
        # (0018,1020) SoftwareVersions, to announce a scanner upgrade
        "ALTER TABLE series ADD COLUMN software TEXT",
        Dialects(
            "UPDATE series SET software = json_extract(header, '$.SoftwareVersions')",
            "UPDATE series SET software = CAST(header AS json) ->> 'SoftwareVersions'",
        ),
        # the votes of a set in the current count (series with vote = 1), and its
        # earliest acquisition ("YYYYMMDD HHMMSS.ffffff") for `templates sets`
        "ALTER TABLE param_set ADD COLUMN n_votes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE param_set ADD COLUMN first_seen TEXT",
        """UPDATE param_set SET n_votes = n_series,
               first_seen = (SELECT min(NULLIF(acq_date, 'null') || ' ' || acq_time)
                             FROM series WHERE series.param_set = param_set.id)""",
        # the established set of each Project x SequenceName (template() reads it;
        # a pin still outranks it)
        """CREATE TABLE template (
            project_key TEXT NOT NULL,
            sequence_key TEXT NOT NULL,
            param_set INTEGER NOT NULL REFERENCES param_set (id),
            PRIMARY KEY (project_key, sequence_key)
        )""",
        """INSERT INTO template (project_key, sequence_key, param_set)
           SELECT project_key, sequence_key, id FROM (
               SELECT project_key, sequence_key, id, row_number() OVER (
                   PARTITION BY project_key, sequence_key
                   ORDER BY n_series DESC, last_seen DESC NULLS LAST,
                            last_series DESC NULLS LAST) AS rank
               FROM param_set WHERE n_series > 0) AS ranked
           WHERE rank = 1""",
        # every change of a template: which set, the one before, who, when, why
        """CREATE TABLE template_change (
            id INTEGER PRIMARY KEY,
            project_key TEXT NOT NULL,
            sequence_key TEXT NOT NULL,
            param_set INTEGER REFERENCES param_set (id),  -- NULL: unpinned
            previous INTEGER REFERENCES param_set (id),
            kind TEXT NOT NULL
                CHECK (kind IN ('learnt', 'accepted', 'imported', 'pinned', 'unpinned')),
            at TEXT NOT NULL,  -- ISO 8601
            "by" TEXT NOT NULL,  -- a person, or 'mrqart' for a count
            reason TEXT NOT NULL,
            series INTEGER REFERENCES series (id)  -- the accepted or deciding series
        )""",
        "CREATE INDEX template_change_key ON template_change (project_key, sequence_key, id)",
        Dialects(
            """INSERT INTO template_change (project_key, sequence_key, param_set, kind, at,
                                            "by", reason)
               SELECT project_key, sequence_key, param_set, 'learnt',
                      strftime('%Y-%m-%dT%H:%M:%S', 'now'), 'mrqart',
                      'the most used set when mrqart began keeping template history'
               FROM template""",
            # the same, but a PostgreSQL database began with this mrqart: no rows
            """INSERT INTO template_change (project_key, sequence_key, param_set, kind, at,
                                            "by", reason)
               SELECT project_key, sequence_key, param_set, 'learnt',
                      to_char(now(), 'YYYY-MM-DD"T"HH24:MI:SS'), 'mrqart',
                      'the most used set when mrqart began keeping template history'
               FROM template""",
        ),
        # the software of the last series of each station x Project x SequenceName
        """CREATE TABLE last_software (
            station TEXT NOT NULL,
            project_key TEXT NOT NULL,
            sequence_key TEXT NOT NULL,
            software TEXT,
            PRIMARY KEY (station, project_key, sequence_key)
        )""",
        Dialects(
            """INSERT OR REPLACE INTO last_software (station, project_key, sequence_key,
                                                    software)
               SELECT s.station, p.project_key, p.sequence_key, s.software
               FROM series s JOIN param_set p ON p.id = s.param_set ORDER BY s.id""",
            """INSERT INTO last_software (station, project_key, sequence_key, software)
               SELECT DISTINCT ON (s.station, p.project_key, p.sequence_key)
                      s.station, p.project_key, p.sequence_key, s.software
               FROM series s JOIN param_set p ON p.id = s.param_set
               ORDER BY s.station, p.project_key, p.sequence_key, s.id DESC""",
        ),
    ),
    (
        # who acknowledged an alert, who pinned a protocol and when (the signed-in user,
        # or the name typed at a shared console)
        'ALTER TABLE ack ADD COLUMN "by" TEXT',
        'ALTER TABLE protocol_pin ADD COLUMN "by" TEXT',
        "ALTER TABLE protocol_pin ADD COLUMN at TEXT",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class NewerSchemaError(RuntimeError):
    """The database was written by a newer mrqart (its schema version is higher)."""


class Cursor(Protocol):
    """What a query returns, in both engines: rows readable by column name."""

    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """The connection a store's queries run on, ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...


class ChangeFeed(Protocol):
    """Tells a process that another one changed the templates or pinned protocols."""

    def wait(self, timeout: float) -> set[str]:
        """Block up to ``timeout`` seconds for changes; what changed (``TEMPLATES``,
        ``PROTOCOLS``), empty when nothing did. Raises the store's errors when the
        database is unreachable (call again later: it reconnects)."""
        ...

    def close(self) -> None: ...


def _clean(value: Any, decimals: int = _STORED_DECIMALS, fold: bool = False) -> Any:
    """A parameter value in canonical form: floats rounded, white space collapsed,
    and with ``fold`` case folded."""
    # type() not isinstance(): this runs 17 times per series recorded (the importer's
    # main process), and header values are exactly these JSON types.
    kind = type(value)
    if kind is float:
        return round(value, decimals)
    if kind is int and fold:
        return float(value)  # 1300 and 1300.0 are one value to check() and so here
    if kind is str:
        value = squash(value)
        return value.casefold() if fold else value
    if kind is list:
        return [_clean(v, decimals, fold) for v in value]
    return value


def param_set_of(header: Mapping[str, Any], echo_times: Iterable[float] = ()) -> dict[str, Any]:
    """The invariant parameters of a header, canonical; TE is the sorted list of
    distinct echo times when the series has more than one, else the header's TE."""
    params = {p: _clean(header.get(p, NULL)) for p in PARAMS}
    echoes = sorted({_clean(float(t)) for t in echo_times})
    if len(echoes) > 1:
        params["TE"] = echoes
    return params


def _hashable(value: Any) -> Any:
    return tuple(value) if type(value) is list else value


def _set_hash(params: Mapping[str, Any], sequence_name: str) -> str:
    """The identity of a parameter set of one template name: equal for sets that differ
    only in what check() cannot see (see _KEY_DECIMALS)."""
    key = {p: _clean(v, _KEY_DECIMALS, fold=True) for p, v in params.items()}
    if _fold(sequence_name) != key.get("SequenceName"):
        key["template"] = _fold(sequence_name)  # a phase series' own sets
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _fold(name: str) -> str:
    """How a name is matched: white space collapsed, case folded."""
    return squash(name).casefold()


def _key(project: str, sequence_name: str) -> tuple[str, str]:
    """How a Project x SequenceName is matched (see _fold)."""
    return _fold(project), _fold(sequence_name)


#: How a template's Project x SequenceName is matched, for callers that cache templates.
template_key = _key


def _series_number(session: str, series: str | None) -> int | None:
    """The series number in a key that ``session.series_key(session, n)`` built, else None."""
    if series is None:
        return None
    prefix, _, number = series.rpartition(":")
    return int(number) if prefix == session and number.isdigit() else None


def _expected_list(expected: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A pinned protocol in canonical form; ValueError for an empty or malformed list."""
    out = []
    for item in expected:
        name, n_files = item.get("sequence_name"), item.get("n_files")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"expected series need a sequence_name, got {item!r}")
        if n_files is not None and (type(n_files) is not int or n_files < 1):
            raise ValueError(f"{name}: n_files must be a positive integer or None")
        out.append({"sequence_name": name, "n_files": n_files})
    if not out:
        raise ValueError("an expected protocol needs at least one series")
    return out


def _software(header: Mapping[str, Any]) -> str | None:
    """(0018,1020) SoftwareVersions as stored: text, multi-values joined, None if missing."""
    value = header.get("SoftwareVersions", NULL)
    if value == NULL or value is None:
        return None
    return " / ".join(map(str, value)) if isinstance(value, list) else squash(str(value))


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _unit(write: bool) -> Callable[[Callable[Concatenate[S, P], R]], Callable[Concatenate[S, P], R]]:
    """Run a method as one unit of work of the engine (``Store._run``): a write is one
    transaction (or part of the open ``batch``), which the engine may retry. Database
    errors get a note naming the database, keeping their type."""

    def decorate(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return self._run(functools.partial(method, self, *args, **kwargs), write)
            except self.errors as e:
                e.add_note(f"mrqart database: {self.path}")
                raise

        return wrapper

    return decorate


reads, writes = _unit(False), _unit(True)


class Store:
    """The series history and templates: the queries. Engines subclass it."""

    #: The database errors the engine raises (the service survives them).
    errors: ClassVar[tuple[type[Exception], ...]] = ()
    #: The name shown in error notes and logs (no password).
    path: str

    def __init__(self) -> None:
        self._set_ids: dict[tuple[Any, ...], int] = {}  # see _set_id_of

    # -- what an engine supplies ---------------------------------------------------

    @property
    def _db(self) -> Db:
        """The connection of the calling thread's unit of work."""
        raise NotImplementedError

    def _run(self, op: Callable[[], R], write: bool) -> R:
        """Run ``op`` (which queries ``self._db``) as a unit of work."""
        raise NotImplementedError

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Make the writes inside one transaction (one commit instead of one each).
        An exception leaving the block rolls back every write in it."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the database; the store is unusable afterwards."""
        raise NotImplementedError

    def changes(self) -> ChangeFeed:
        """A feed of other processes' changes to templates and pinned protocols, on its
        own connection (close it)."""
        raise NotImplementedError

    def _schema_version(self) -> int:
        """The schema version (inside the migration's transaction, which it may lock)."""
        raise NotImplementedError

    def _set_schema_version(self, version: int) -> None:
        raise NotImplementedError

    @classmethod
    def _ddl(cls, statement: str | Dialects) -> str:
        """A migration statement in the engine's dialect."""
        return statement.sqlite if isinstance(statement, Dialects) else statement

    def _changed(self, what: str) -> None:
        """Tell other processes, once the transaction commits, that ``what`` changed."""

    def _serialize(self, key: tuple[str, str]) -> None:
        """Make other processes' transactions that change the template of ``key`` (a
        Project x SequenceName as ``_key`` folds it) wait for this one to end: the vote
        count reads and writes several of its rows. (sqlite's writers take turns anyway.)"""

    def _learn_set_id(self, raw: tuple[Any, ...], set_id: int) -> None:
        """Remember the set id of a header's raw values (see ``_set_id_of``). An engine
        whose threads have transactions of their own remembers it at commit: another
        thread must not use a set it cannot see yet (or never will: a rollback)."""
        if len(self._set_ids) >= _SET_CACHE_SIZE:
            self._set_ids.clear()
        self._set_ids[raw] = set_id

    # -- shared ----------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @writes
    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, in one transaction in which the engine
        reads the version under a lock, so that two processes opening a new database
        do not both migrate."""
        version = self._schema_version()
        if version > SCHEMA_VERSION:
            raise NewerSchemaError(
                f"{self.path}: schema version {version} is newer than this mrqart's "
                f"{SCHEMA_VERSION}; upgrade mrqart"
            )
        for v in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[v]:
                self._db.execute(self._ddl(statement))
            self._set_schema_version(v + 1)

    def _set_id_of(self, header: Mapping[str, Any], echo_times: tuple[float, ...]) -> int:
        """The parameter set id of a header (inserting the set if new), remembered by
        the header's raw values: most series repeat a protocol already seen, and
        canonicalising is most of what recording a series costs."""
        name = template_name(header)
        raw = (*(_hashable(header.get(p, NULL)) for p in PARAMS), echo_times, name)
        set_id = self._set_ids.get(raw)
        if set_id is None:
            set_id = self._param_set_id(param_set_of(header, echo_times), name)
            self._learn_set_id(raw, set_id)
        return set_id

    def _param_set_id(self, params: Mapping[str, Any], sequence_name: str) -> int:
        """The id of this parameter set of the template ``sequence_name`` (see
        check.template_name), inserting it if new (caller holds a transaction)."""
        digest = _set_hash(params, sequence_name)
        row = self._db.execute("SELECT id FROM param_set WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            project = str(params["Project"])
            # another process may insert the same set meanwhile: the unique hash decides
            row = self._db.execute(
                """INSERT INTO param_set (hash, project, sequence_name, project_key,
                                          sequence_key, params)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (hash) DO NOTHING RETURNING id""",
                (
                    digest, project, sequence_name, *_key(project, sequence_name),
                    json.dumps(params),  # in PARAMS order, the order the page and CLI show
                ),
            ).fetchone() or self._db.execute(
                "SELECT id FROM param_set WHERE hash = ?", (digest,)).fetchone()
        return row["id"]

    @writes
    def record_series(
        self,
        header: Mapping[str, Any],
        *,
        n_files: int,
        source: str = "live",
        session: str | None = None,
        echo_times: Iterable[float] = (),
        trusted: bool = True,
    ) -> bool:
        """Record a series, or update the one already recorded; True if it is new.

        ``trusted`` (see ``rules.templates.votes``): the series votes for its parameter
        set, and the count may change the template (recorded in the history as
        ``learnt``). Only a new row takes it: updates keep the trust the series had.

        The series is keyed by (``session``, header SeriesNumber); ``session``
        defaults to the header's StudyUID. On an existing row ``n_files`` is
        updated, and so are the echo times (and with them the parameter set)
        when ``echo_times`` is given and differs: a live multi-echo series is
        first recorded from its first file, before all its echoes are seen.
        """
        echo_times = tuple(echo_times)
        session = str(header.get("StudyUID", NULL) if session is None else session)
        number = header.get("SeriesNumber", NULL)
        number = number if isinstance(number, int) else -1
        echoes_json = json.dumps(sorted({float(t) for t in echo_times}))
        key = _key(str(header.get("Project", NULL)), template_name(header))
        row = self._series_row(session, number)
        if row is None:
            self._serialize(key)
            ps = self._set_id_of(header, echo_times)
            new = self._db.execute(
                """INSERT INTO series (session, series_number, station, project, sequence_name,
                       subject, acq_date, acq_time, operator, shims, n_files, echo_times,
                       source, header, param_set, trusted, vote, software)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (session, series_number) DO NOTHING RETURNING id""",
                (
                    session, number, *(str(header.get(k, NULL)) for k in (
                        "Station", "Project", "SequenceName", "SubID", "AcqDate", "AcqTime",
                        "Operator")),
                    json.dumps(header.get("Shims", NULL)), n_files, echoes_json, source,
                    json.dumps(dict(header)), ps, int(trusted), int(trusted),
                    _software(header),
                ),
            ).fetchone()
            if new is not None:
                self._count_new(header, new["id"], ps, trusted)
                return True
            # another process recorded it since we looked (READ COMMITTED only)
            row = self._series_row(session, number)
        if echo_times and row["echo_times"] != echoes_json:
            self._serialize(key)
            ps = self._set_id_of(header, echo_times)
            self._db.execute(
                "UPDATE series SET n_files = ?, echo_times = ?, param_set = ? WHERE id = ?",
                (n_files, echoes_json, ps, row["id"]),
            )
            self._recount(row["param_set"])
            self._recount(ps)
            self._count_votes(ps, row["id"])
        else:
            self._db.execute("UPDATE series SET n_files = ? WHERE id = ?", (n_files, row["id"]))
        return False

    def _count_new(self, header: Mapping[str, Any], series_id: int, ps: int,
                   trusted: bool) -> None:
        """Count a new series in its set's counters and its station's software, and let
        it vote if trusted (caller holds a transaction)."""
        date, clock = header.get("AcqDate", NULL), header.get("AcqTime", NULL)
        seen = None if date == NULL else f"{date} {clock}"
        key = self._db.execute(
            """UPDATE param_set SET n_series = n_series + 1, n_votes = n_votes + ?,
                   last_seen = CASE WHEN CAST(? AS TEXT) IS NULL THEN last_seen
                               WHEN last_seen IS NULL OR last_seen < ? THEN ?
                               ELSE last_seen END,
                   first_seen = CASE WHEN CAST(? AS TEXT) IS NULL THEN first_seen
                                WHEN first_seen IS NULL OR first_seen > ? THEN ?
                                ELSE first_seen END,
                   last_series = ?
               WHERE id = ? RETURNING project_key, sequence_key""",
            (int(trusted), *(seen,) * 6, series_id, ps),
        ).fetchone()
        self._db.execute(
            """INSERT INTO last_software (station, project_key, sequence_key, software)
               VALUES (?, ?, ?, ?)
               ON CONFLICT (station, project_key, sequence_key)
               DO UPDATE SET software = excluded.software""",
            (str(header.get("Station", NULL)), key["project_key"], key["sequence_key"],
             _software(header)),
        )
        if trusted:
            self._count_votes(ps, series_id, (key["project_key"], key["sequence_key"]))

    def _series_row(self, session: str, number: int) -> Any:
        return self._db.execute(
            "SELECT id, echo_times, param_set FROM series WHERE session = ? AND series_number = ?",
            (session, number),
        ).fetchone()

    def _established(self, key: tuple[str, str]) -> int | None:
        row = self._db.execute(
            "SELECT param_set FROM template WHERE project_key = ? AND sequence_key = ?", key
        ).fetchone()
        return None if row is None else row["param_set"]

    def _count_votes(self, voted: int, series_id: int,
                     key: tuple[str, str] | None = None) -> None:
        """Let the count decide the template of ``voted``'s Project x SequenceName (its
        ``key``, looked up when not given) after a trusted series voted for it (caller
        holds a transaction); a change goes into the history as ``learnt``, dated by the
        deciding series' acquisition."""
        if key is None:
            row = self._db.execute(
                "SELECT project_key, sequence_key FROM param_set WHERE id = ?", (voted,)
            ).fetchone()
            key = (row["project_key"], row["sequence_key"])
        established = self._established(key)
        if voted == established:
            return  # the established set only gained
        tallies = [Tally(r["id"], r["n_votes"], r["last_seen"]) for r in self._db.execute(
            """SELECT id, n_votes, last_seen FROM param_set
               WHERE project_key = ? AND sequence_key = ? AND n_votes > 0""", key).fetchall()]
        outcome = elect(established, tallies)
        if outcome.changed:
            row = self._db.execute(
                """SELECT NULLIF(acq_date, 'null') || ' ' || acq_time AS acquired FROM series
                   WHERE id = ?""", (series_id,)).fetchone()
            self._change(key, outcome.winner, kind="learnt", by=LEARNT_BY,
                         reason=outcome.reason, at=acquired_at(row["acquired"]) or _now(),
                         series_id=series_id, previous=established)

    def _change(
        self, key: tuple[str, str], set_id: int | None, *, kind: str, by: str, reason: str,
        at: str, series_id: int | None = None, previous: int | None = None,
    ) -> dict[str, Any]:
        """Make ``set_id`` the established set of ``key`` (None: leave it) and add the
        change to the history (caller holds a transaction); the change as ``history``
        gives it. Other processes hear of it (``changes``) when the transaction commits."""
        if set_id is not None and kind != "pinned":
            self._db.execute(
                """INSERT INTO template (project_key, sequence_key, param_set) VALUES (?, ?, ?)
                   ON CONFLICT (project_key, sequence_key)
                   DO UPDATE SET param_set = excluded.param_set""", (*key, set_id))
        change = self._db.execute(
            """INSERT INTO template_change (project_key, sequence_key, param_set, previous,
                                            kind, at, "by", reason, series)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            (*key, set_id, previous, kind, at, by, reason, series_id),
        ).fetchone()
        self._changed(TEMPLATES)
        return self._history_where("c.id = ?", (change["id"],))[0]

    def _restart_count(self, key: tuple[str, str], series_id: int | None) -> None:
        """A person decided: only ``series_id`` (if any) votes in the new count."""
        sets = "SELECT id FROM param_set WHERE project_key = ? AND sequence_key = ?"
        self._db.execute(
            f"""UPDATE series SET vote = CASE WHEN id = ? THEN 1 ELSE 0 END
                WHERE param_set IN ({sets})""", (series_id, *key))
        self._db.execute(
            """UPDATE param_set SET n_votes = (SELECT count(*) FROM series
                                               WHERE param_set = param_set.id AND vote = 1)
               WHERE project_key = ? AND sequence_key = ?""", key)

    def _recount(self, set_id: int) -> None:
        """Recompute a parameter set's counters from its series (a series moved sets)."""
        self._db.execute(
            """UPDATE param_set SET
                   n_series = (SELECT count(*) FROM series WHERE param_set = ?),
                   n_votes = (SELECT count(*) FROM series WHERE param_set = ? AND vote = 1),
                   first_seen = (SELECT min(NULLIF(acq_date, 'null') || ' ' || acq_time)
                                 FROM series WHERE param_set = ?),
                   last_seen = (SELECT max(NULLIF(acq_date, 'null') || ' ' || acq_time)
                                FROM series WHERE param_set = ?),
                   last_series = (SELECT max(id) FROM series WHERE param_set = ?)
               WHERE id = ?""",
            (set_id,) * 6,
        )

    def _ranked_sets(
        self, project: str, sequence_name: str, limit: int | None = None
    ) -> list[Any]:
        """The parameter sets of a Project x SequenceName that a series used or
        that is pinned, the template first (the ranking the module doc states)."""
        return self._db.execute(
            """SELECT p.id, p.project, p.sequence_name, p.params, p.n_series, p.n_votes,
                      p.first_seen, p.last_seen, (pin.param_set IS NOT NULL) AS pinned,
                      (t.param_set IS NOT NULL) AS established
               FROM param_set p
               LEFT JOIN pin ON pin.param_set = p.id
                    AND pin.project_key = p.project_key AND pin.sequence_key = p.sequence_key
               LEFT JOIN template t ON t.param_set = p.id
                    AND t.project_key = p.project_key AND t.sequence_key = p.sequence_key
               WHERE p.project_key = ? AND p.sequence_key = ?
                     AND (p.n_series > 0 OR pin.param_set IS NOT NULL
                          OR t.param_set IS NOT NULL)
               ORDER BY pinned DESC, established DESC, p.n_votes DESC, p.n_series DESC,
                        p.last_seen DESC NULLS LAST, p.last_series DESC NULLS LAST"""
            + ("" if limit is None else f" LIMIT {int(limit)}"),
            _key(project, sequence_name),
        ).fetchall()

    @staticmethod
    def _set_dict(row: Any) -> dict[str, Any]:
        return {
            "id": row["id"], "project": row["project"], "sequence_name": row["sequence_name"],
            "count": row["n_series"], "votes": row["n_votes"], "first_seen": row["first_seen"],
            "last_seen": row["last_seen"], "pinned": bool(row["pinned"]),
            "established": bool(row["established"]),
            "params": json.loads(row["params"]),
        }

    @reads
    def template(self, project: str, sequence_name: str) -> dict[str, Any] | None:
        """The template (the 17 PARAMS) of a Project x SequenceName, or None if never seen.

        Names match ignoring case and white space runs. A pinned set wins; else the
        established set (see ``rules.templates``: the count of trusted series, or a
        person's acceptance or import).
        """
        ranked = self._ranked_sets(project, sequence_name, limit=1)
        if not ranked or not (ranked[0]["pinned"] or ranked[0]["established"]):
            return None
        return json.loads(ranked[0]["params"])

    @reads
    def param_sets(self, project: str, sequence_name: str) -> list[dict[str, Any]]:
        """Every parameter set of a Project x SequenceName, the template first:
        ``{"id", "project", "sequence_name", "count", "last_seen", "pinned", "params"}``."""
        return [self._set_dict(r) for r in self._ranked_sets(project, sequence_name)]

    @reads
    def templates(self) -> list[dict[str, Any]]:
        """The template of every Project x SequenceName, sorted by name, each as
        ``param_sets`` describes it plus ``"n_sets"`` (how many sets compete)."""
        keys = self._db.execute(
            "SELECT DISTINCT project_key, sequence_key FROM param_set").fetchall()
        out = []
        # sorted here: the engines' collations may differ
        for project, sequence_name in sorted((k["project_key"], k["sequence_key"]) for k in keys):
            ranked = self._ranked_sets(project, sequence_name)
            if ranked and (ranked[0]["pinned"] or ranked[0]["established"]):
                out.append({**self._set_dict(ranked[0]), "n_sets": len(ranked)})
        return out

    @writes
    def pin(
        self,
        project: str,
        sequence_name: str,
        *,
        set_id: int | None = None,
        header: Mapping[str, Any] | None = None,
        by: str = "operator",
        reason: str = "pinned",
    ) -> int:
        """Pin the template of a Project x SequenceName; returns the pinned set's id.
        The history keeps it (kind ``pinned``, ``by``, ``reason``).

        Give exactly one of ``set_id`` (an existing set of that Project x
        SequenceName, see ``param_sets``) or ``header`` (its parameters become a
        set, added if new). Raises ``LookupError`` for an unknown or foreign
        ``set_id``, ``ValueError`` if the header names another Project x SequenceName.
        """
        if (set_id is None) == (header is None):
            raise TypeError("pin() needs exactly one of set_id or header")
        key = _key(project, sequence_name)
        self._serialize(key)
        if header is not None:
            params, name = param_set_of(header), template_name(header)
            if _key(str(params["Project"]), name) != key:
                raise ValueError(
                    f"the header is {params['Project']} x {name}, "
                    f"not {project} x {sequence_name}"
                )
            set_id = self._param_set_id(params, name)
        else:
            row = self._db.execute(
                "SELECT project_key, sequence_key FROM param_set WHERE id = ?", (set_id,),
            ).fetchone()
            if row is None or (row["project_key"], row["sequence_key"]) != key:
                raise LookupError(f"no parameter set {set_id} for {project} x {sequence_name}")
        self._db.execute(
            """INSERT INTO pin (project_key, sequence_key, param_set) VALUES (?, ?, ?)
               ON CONFLICT (project_key, sequence_key) DO UPDATE SET param_set = excluded.param_set""",
            (*key, set_id),
        )
        self._change(key, set_id, kind="pinned", by=by, reason=reason, at=_now(),
                     previous=self._established(key))
        return set_id  # type: ignore[return-value]

    @writes
    def unpin(self, project: str, sequence_name: str, *, by: str = "operator",
              reason: str = "unpinned") -> bool:
        """Remove the pin of a Project x SequenceName; True if there was one (the history
        keeps it, kind ``unpinned``)."""
        key = _key(project, sequence_name)
        self._serialize(key)
        row = self._db.execute(
            "DELETE FROM pin WHERE project_key = ? AND sequence_key = ? RETURNING param_set",
            key).fetchone()
        if row is not None:
            self._change(key, None, kind="unpinned", by=by, reason=reason, at=_now(),
                         previous=row["param_set"])
        return row is not None

    # -- templates decided by people (rules/templates.py) -----------------------------

    @writes
    def accept(
        self, session: str, series_number: int, *, reason: str, by: str, at: str | None = None
    ) -> dict[str, Any]:
        """Accept a recorded series as intended: its parameter set becomes the template of
        its Project x SequenceName, the series is trusted, and the count starts again
        with it as the one vote. Returns the change as ``history`` gives it.

        ``by`` is the person (the operator's name or the signed-in user), ``at`` ISO 8601
        (default now). Raises LookupError when no such series is recorded.
        """
        def find() -> Any:
            return self._db.execute(
                """SELECT s.id, s.param_set, p.project_key, p.sequence_key FROM series s
                   JOIN param_set p ON p.id = s.param_set
                   WHERE s.session = ? AND s.series_number = ?""",
                (session, series_number)).fetchone()

        row = find()
        if row is None:
            raise LookupError(f"no series {series_number} recorded in session {session}")
        key = (row["project_key"], row["sequence_key"])
        self._serialize(key)
        row = find()  # as it is now that no one else changes this template
        self._db.execute("UPDATE series SET trusted = 1 WHERE id = ?", (row["id"],))
        self._restart_count(key, row["id"])
        return self._change(key, row["param_set"], kind="accepted", by=by, reason=reason,
                            at=at or _now(), series_id=row["id"],
                            previous=self._established(key))

    @writes
    def adopt(
        self,
        params: Mapping[str, Any],
        sequence_name: str,
        *,
        reason: str,
        by: str,
        at: str | None = None,
        history: Iterable[Mapping[str, Any]] = (),
        votes: int = 1,
    ) -> dict[str, Any]:
        """Make ``params`` (the 17 PARAMS, e.g. from a template file) the established
        template of its Project x ``sequence_name`` (kind ``imported``). The count starts
        again with ``votes`` for it (the exporting site's count; 1, as for an accepted
        series, by default), so that a few series of another set do not overturn a
        decision made elsewhere. ``history``: earlier changes to keep, oldest first, each
        ``{"params", "kind", "at", "by", "reason"}`` as ``history`` gives them.
        Returns the new change. ValueError when ``params`` lacks a PARAMS name."""
        if missing := [p for p in PARAMS if p not in params]:
            raise ValueError(f"the parameter set lacks {', '.join(missing)}")
        clean = {p: _clean(params[p]) for p in PARAMS}
        key = _key(str(clean["Project"]), sequence_name)
        self._serialize(key)
        for old in history:
            old_params = old.get("params")
            old_id = None if old_params is None else self._param_set_id(
                {p: _clean(old_params.get(p, NULL)) for p in PARAMS}, sequence_name)
            change = (str(old["kind"]), str(old["at"]), str(old["by"]), str(old["reason"]))
            if self._db.execute(
                """SELECT 1 FROM template_change WHERE project_key = ? AND sequence_key = ?
                   AND param_set IS NOT DISTINCT FROM ? AND kind = ? AND at = ? AND "by" = ?
                   AND reason = ?""",
                (*key, old_id, *change)).fetchone():
                continue  # imported before: the history holds it once
            self._change(key, old_id, kind=change[0], at=change[1], by=change[2],
                         reason=change[3])
        set_id = self._param_set_id(clean, sequence_name)
        previous = self._established(key)
        self._restart_count(key, None)
        # not series of this database: a recount of the set (a series moving into it)
        # drops them
        self._db.execute("UPDATE param_set SET n_votes = ? WHERE id = ?",
                         (max(votes, 0), set_id))
        return self._change(key, set_id, kind="imported", by=by, reason=reason,
                            at=at or _now(), previous=previous)

    def _history_where(self, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        rows = self._db.execute(
            f"""SELECT c.id, c.kind, c.at, c."by", c.reason, c.param_set AS set_id,
                       c.previous AS previous_set_id, p.project, p.sequence_name, p.params,
                       s.session, s.series_number, s.station
                FROM template_change c
                LEFT JOIN param_set p ON p.id = c.param_set
                LEFT JOIN series s ON s.id = c.series
                WHERE {where} ORDER BY c.id""", args).fetchall()
        return [{**dict(r), "params": None if r["params"] is None else json.loads(r["params"])}
                for r in rows]

    @reads
    def history(self, project: str, sequence_name: str) -> list[dict[str, Any]]:
        """Every change of the template of a Project x SequenceName, oldest first: ``{"id",
        "kind" (learnt, accepted, imported, pinned, unpinned), "at" (ISO 8601), "by",
        "reason", "set_id", "previous_set_id", "project", "sequence_name", "params",
        "session", "series_number", "station"}`` (the last three name the accepted or
        deciding series, else None; ``params`` is None for an unpin)."""
        return self._history_where("c.project_key = ? AND c.sequence_key = ?",
                                   _key(project, sequence_name))

    @reads
    def template_changes(
        self, *, project: str | None = None, kinds: Iterable[str] | None = None,
        since: str | None = None,
    ) -> list[dict[str, Any]]:
        """Template changes across templates, oldest first, as ``history`` gives them:
        of one project, of some kinds (e.g. ``("accepted",)``), at or after ``since``
        (ISO 8601, compared as text)."""
        where, args = ["1 = 1"], []
        if project is not None:
            where.append("c.project_key = ?")
            args.append(_fold(project))
        if kinds is not None:
            kinds = list(kinds)
            where.append(f"c.kind IN ({', '.join('?' * len(kinds))})")
            args += kinds
        if since is not None:
            where.append("c.at >= ?")
            args.append(since)
        return self._history_where(" AND ".join(where), tuple(args))

    @reads
    def previous_software(self, header: Mapping[str, Any]) -> str | None:
        """The SoftwareVersions of the last series recorded on the header's station for its
        Project x SequenceName (its template name), or None if none or unknown. Ask
        before recording the series."""
        row = self._db.execute(
            """SELECT software FROM last_software
               WHERE station = ? AND project_key = ? AND sequence_key = ?""",
            (str(header.get("Station", NULL)),
             *_key(str(header.get("Project", NULL)), template_name(header)))).fetchone()
        return None if row is None else row["software"]

    @reads
    def project_templates(self, project: str) -> list[dict[str, Any]]:
        """The template of every SequenceName of one project, as ``templates`` gives them,
        each with its ``"history"``."""
        return [{**t, "history": self.history(project, t["sequence_name"])}
                for t in self.templates() if _fold(t["project"]) == _fold(project)]

    @reads
    def series_on(self, day: str) -> list[dict[str, Any]]:
        """Series acquired on ``day`` ("YYYYMMDD"), in acquisition order, each
        ``{"station", "session", "series_number", "header", "n_files", "source"}``."""
        rows = self._db.execute(
            """SELECT station, session, series_number, header, n_files, source FROM series
               WHERE acq_date = ? ORDER BY acq_time, id""",
            (day,),
        ).fetchall()
        return [{**dict(r), "header": json.loads(r["header"])} for r in rows]

    @reads
    def series_sets(self, day: str) -> list[dict[str, Any]]:
        """Series acquired on ``day`` ("YYYYMMDD") without their headers, for scanning
        history quickly (the report's history and failure streaks): ``{"session",
        "series_number", "acq_date", "acq_time", "source", "set_id", "project",
        "sequence_name"}``, where ``set_id`` is the series' parameter set (see
        ``param_sets``) and ``project`` x ``sequence_name`` name its template."""
        rows = self._db.execute(
            """SELECT s.session, s.series_number, s.acq_date, s.acq_time, s.source,
                      s.param_set AS set_id, p.project, p.sequence_name
               FROM series s JOIN param_set p ON p.id = s.param_set
               WHERE s.acq_date = ? ORDER BY s.acq_time, s.id""",
            (day,),
        ).fetchall()
        return [dict(r) for r in rows]

    @reads
    def stations(self) -> list[dict[str, Any]]:
        """Every station in the database with its current session (the one of its latest
        recorded series), sorted by name: ``{"station", "session", "project",
        "n_series" (of that session), "last_seen" (its latest acquisition, ISO 8601)}``.
        One mrqart per scanner writes one database: this is the consortium's view."""
        rows = self._db.execute(
            """WITH latest AS (SELECT station, max(id) AS id FROM series GROUP BY station)
               SELECT s.station, s.session, s.project,
                      (SELECT count(*) FROM series x WHERE x.session = s.session
                                                       AND x.station = s.station) AS n_series,
                      (SELECT max(NULLIF(x.acq_date, 'null') || ' ' || x.acq_time)
                       FROM series x WHERE x.session = s.session
                                       AND x.station = s.station) AS acquired
               FROM latest JOIN series s ON s.id = latest.id""").fetchall()
        return sorted(({"station": r["station"], "session": r["session"],
                        "project": r["project"], "n_series": r["n_series"],
                        "last_seen": acquired_at(r["acquired"])} for r in rows),
                      key=lambda st: st["station"])

    # -- session-level compliance (protocol.py) -------------------------------------

    @reads
    def recent_sessions(
        self, project: str, *, limit: int = 20, exclude: str | None = None
    ) -> list[list[tuple[str, int]]]:
        """The project's ``limit`` most recent sessions, newest first, each as its series
        ordered by series number, as (sequence_name, n_files).

        The project matches as in ``template`` (case and white space ignored); a session
        is as recent as its earliest acquisition (sessions without dates come last).
        ``exclude`` leaves one session out (the one being checked).
        """
        rows = self._db.execute(
            """WITH mine AS (
                   SELECT s.session, s.series_number, s.sequence_name, s.n_files, s.id,
                          NULLIF(s.acq_date, 'null') || ' ' || s.acq_time AS acquired
                   FROM series s JOIN param_set p ON p.id = s.param_set
                   WHERE p.project_key = ? AND s.session IS DISTINCT FROM ?),
               recent AS (
                   SELECT session, min(acquired) AS started, max(id) AS last_id FROM mine
                   GROUP BY session
                   ORDER BY min(acquired) IS NULL, min(acquired) DESC, max(id) DESC LIMIT ?)
               SELECT mine.session, sequence_name, n_files FROM mine
               JOIN recent USING (session)
               ORDER BY recent.started IS NULL, recent.started DESC, recent.last_id DESC,
                        series_number""",
            (_fold(project), exclude, limit),
        ).fetchall()
        sessions: dict[str, list[tuple[str, int]]] = {}
        for row in rows:
            sessions.setdefault(row["session"], []).append(
                (row["sequence_name"], row["n_files"]))
        return list(sessions.values())

    def protocol(self, project: str, *, exclude: str | None = None) -> SessionProtocol:
        """The project's expected protocol: the pinned one if any, else the one learnt
        from its ``RECENT_SESSIONS`` most recent sessions other than ``exclude``
        (empty when the project has none)."""
        pinned = self.pinned_protocol(project)
        if pinned is not None:
            return SessionProtocol(project, tuple(Expected(e["sequence_name"], e["n_files"])
                                                  for e in pinned), pinned=True)
        return learn_protocol(
            project, self.recent_sessions(project, limit=RECENT_SESSIONS, exclude=exclude))

    @reads
    def session_series(self, session: str) -> list[tuple[str, int]]:
        """A session's series ordered by series number, as (sequence_name, n_files)."""
        rows = self._db.execute(
            """SELECT sequence_name, n_files FROM series WHERE session = ?
               ORDER BY series_number""",
            (session,),
        ).fetchall()
        return [(r["sequence_name"], r["n_files"]) for r in rows]

    @writes
    def pin_protocol(self, project: str, expected: Iterable[Mapping[str, Any]],
                     by: str | None = None) -> None:
        """Make ``expected`` (``{"sequence_name", "n_files"}`` dicts, in order) the
        project's protocol, pinned by ``by`` now, replacing any earlier pin; ValueError
        if it is empty or an entry is malformed (n_files must be a positive int or None)."""
        items = _expected_list(expected)
        self._db.execute(
            """INSERT INTO protocol_pin (project_key, project, expected, "by", at)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (project_key) DO UPDATE
               SET project = excluded.project, expected = excluded.expected,
                   "by" = excluded."by", at = excluded.at""",
            (_fold(project), project, json.dumps(items), by, _now()),
        )
        self._changed(PROTOCOLS)

    @writes
    def unpin_protocol(self, project: str) -> bool:
        """Go back to the learnt protocol; True if the project had a pinned one."""
        cur = self._db.execute("DELETE FROM protocol_pin WHERE project_key = ?",
                               (_fold(project),))
        self._changed(PROTOCOLS)
        return cur.rowcount > 0

    @reads
    def pinned_protocol(self, project: str) -> list[dict[str, Any]] | None:
        """The project's pinned protocol as ``pin_protocol`` took it, or None."""
        row = self._db.execute("SELECT expected FROM protocol_pin WHERE project_key = ?",
                               (_fold(project),)).fetchone()
        return None if row is None else json.loads(row["expected"])

    @reads
    def protocol_pinned_by(self, project: str) -> dict[str, Any] | None:
        """Who pinned the project's protocol and when, ``{"by", "at"}``; None if unpinned."""
        row = self._db.execute('SELECT "by", at FROM protocol_pin WHERE project_key = ?',
                               (_fold(project),)).fetchone()
        return None if row is None else {"by": row["by"], "at": row["at"]}

    @writes
    def acknowledge(self, alert: Mapping[str, Any], reason: str, at: str,
                    by: str | None = None) -> None:
        """Store ``by``'s acknowledgement of ``alert`` (``Alert.to_json()``) with
        their ``reason`` at ``at`` (ISO 8601); acknowledging again replaces all three."""
        session, series = str(alert["session"]), alert.get("series")
        self._db.execute(
            """INSERT INTO ack (id, kind, session, series, series_number, text, reason, at,
                                "by")
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, session = excluded.session,
                   series = excluded.series, series_number = excluded.series_number,
                   text = excluded.text, reason = excluded.reason, at = excluded.at,
                   "by" = excluded."by" """,
            (str(alert["id"]), str(alert["kind"]), session, series,
             _series_number(session, series), str(alert["text"]), reason, at, by),
        )

    def _acks(self, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        rows = self._db.execute(
            f'SELECT id, kind, session, series, text, reason, at, "by" FROM ack WHERE {where}',
            args,
        ).fetchall()
        # ordered here: the engines' collations may differ
        return sorted((dict(r) for r in rows), key=lambda a: (a["at"], a["id"]))

    @reads
    def acks(self, session: str) -> dict[str, dict[str, Any]]:
        """The session's acknowledged alerts: id -> ``{"id", "kind", "session", "series",
        "text", "reason", "at"}``, oldest acknowledgement first."""
        return {a["id"]: a for a in self._acks("session = ?", (session,))}

    @reads
    def series_acks(self, session: str, series_number: int) -> list[dict[str, Any]]:
        """The acknowledged alerts about one series (its history), oldest first, each as
        ``acks`` gives them."""
        return self._acks("session = ? AND series_number = ?", (session, series_number))

    @writes
    def purge_identifying(self, before: str) -> int:
        """Blank who was scanned (PatientName), who scanned (OperatorsName) and the free
        text (ImageComments) of series acquired before ``before`` (YYYYMMDD), in the row
        and its stored header; parameters, counts and acknowledgements stay. The number of
        series changed (a series already purged is not counted again)."""
        names = ("SubID", "Operator", "Comments")
        rows = self._db.execute(
            """SELECT id, subject, operator, header FROM series
               WHERE acq_date < ? AND acq_date != ?""",
            (before, NULL),
        ).fetchall()
        changed = 0
        for row in rows:
            header = json.loads(row["header"])
            # (the JSON is read here, not in SQL: the engines' JSON functions differ)
            if not (row["subject"] or row["operator"]
                    or any(header.get(n) is not None for n in names)):
                continue
            header = {k: v for k, v in header.items() if k not in names}
            self._db.execute(
                "UPDATE series SET subject = '', operator = '', header = ? WHERE id = ?",
                (json.dumps(header), row["id"]),
            )
            changed += 1
        return changed
