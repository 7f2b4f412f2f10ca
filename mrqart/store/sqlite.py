"""The sqlite history: every series seen, its parameter set, and the templates.

Pure (no trio). The service calls a ``Store`` from worker threads, one call at a
time (a CapacityLimiter of 1); a lock makes that safe even if it did not.

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

Methods the live service, the CLI and the report use (``store/postgres.py`` offers
the same): ``record_series(..., trusted=)``, ``template``, ``param_sets``,
``templates``, ``pin``/``unpin``, ``accept``, ``adopt``, ``history``,
``template_changes``, ``previous_software``, ``project_templates``.

sqlite errors propagate unchanged in type (the service decides what a read-only
or full disk means), with a note naming the database file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from os import PathLike
from typing import Any, ParamSpec, Self, TypeVar

from mrqart.rules.check import NULL, PARAMS, squash, template_name
from mrqart.rules.protocol import RECENT_SESSIONS, Expected, Protocol, learn_protocol
from mrqart.rules.templates import LEARNT_BY, Tally, acquired_at, elect

P = ParamSpec("P")
R = TypeVar("R")

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

# Each entry migrates the schema from version i to i + 1 (PRAGMA user_version):
# the statements run in one transaction with the version bump.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
        "UPDATE series SET software = json_extract(header, '$.SoftwareVersions')",
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
                   ORDER BY n_series DESC, last_seen DESC, last_series DESC) AS rank
               FROM param_set WHERE n_series > 0)
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
            by TEXT NOT NULL,  -- a person, or 'mrqart' for a count
            reason TEXT NOT NULL,
            series INTEGER REFERENCES series (id)  -- the accepted or deciding series
        )""",
        "CREATE INDEX template_change_key ON template_change (project_key, sequence_key, id)",
        """INSERT INTO template_change (project_key, sequence_key, param_set, kind, at, by,
                                        reason)
           SELECT project_key, sequence_key, param_set, 'learnt',
                  strftime('%Y-%m-%dT%H:%M:%S', 'now'), 'mrqart',
                  'the most used set when mrqart began keeping template history'
           FROM template""",
        # the software of the last series of each station x Project x SequenceName
        """CREATE TABLE last_software (
            station TEXT NOT NULL,
            project_key TEXT NOT NULL,
            sequence_key TEXT NOT NULL,
            software TEXT,
            PRIMARY KEY (station, project_key, sequence_key)
        )""",
        """INSERT OR REPLACE INTO last_software (station, project_key, sequence_key, software)
           SELECT s.station, p.project_key, p.sequence_key, s.software
           FROM series s JOIN param_set p ON p.id = s.param_set ORDER BY s.id""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


class NewerSchemaError(RuntimeError):
    """The database was written by a newer mrqart (its schema version is higher)."""


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


def _noted(method: Callable[P, R]) -> Callable[P, R]:
    """Add the database path to any sqlite3.Error a method raises, keeping its type."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as e:
            e.add_note(f"mrqart database: {args[0].path}")  # type: ignore[attr-defined]
            raise

    return wrapper


class Store:
    """The series history and templates in one sqlite file (``":memory:"`` works)."""

    @_noted
    def __init__(self, path: str | PathLike[str]) -> None:
        """Open (creating if needed) and migrate the database at ``path``.

        Raises ``NewerSchemaError`` if a newer mrqart wrote it, ``sqlite3.Error``
        if it cannot be opened or migrated (with a note naming ``path``).
        """
        self.path = str(path)
        self._lock = threading.RLock()  # re-entered by writes inside batch()
        self._set_ids: dict[tuple[Any, ...], int] = {}  # see _set_id_of
        # timeout: wait for a lock from the first statement on (journal_mode=WAL needs one)
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=5.0
        )
        self._db.row_factory = sqlite3.Row
        # WAL lets `mrqart templates` read while the service writes; NORMAL is
        # durable enough in WAL mode and far faster than FULL for imports.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION. The version is read inside the write
        transaction, so two processes opening a new database do not both migrate."""
        with self._write():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise NewerSchemaError(
                    f"{self.path}: schema version {version} is newer than this mrqart's "
                    f"{SCHEMA_VERSION}; upgrade mrqart"
                )
            for v in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[v]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {v + 1}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """Hold the lock and a write transaction: a new one, or the open batch()."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.rollback()
                self._set_ids.clear()  # it may name sets the rollback removed
                raise
            self._db.commit()

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
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _set_id_of(self, header: Mapping[str, Any], echo_times: tuple[float, ...]) -> int:
        """The parameter set id of a header (inserting the set if new), remembered by
        the header's raw values: most series repeat a protocol already seen, and
        canonicalising is most of what recording a series costs."""
        name = template_name(header)
        raw = (*(_hashable(header.get(p, NULL)) for p in PARAMS), echo_times, name)
        set_id = self._set_ids.get(raw)
        if set_id is None:
            if len(self._set_ids) >= _SET_CACHE_SIZE:
                self._set_ids.clear()
            set_id = self._set_ids[raw] = self._param_set_id(
                param_set_of(header, echo_times), name)
        return set_id

    def _param_set_id(self, params: Mapping[str, Any], sequence_name: str) -> int:
        """The id of this parameter set of the template ``sequence_name`` (see
        check.template_name), inserting it if new (caller holds a transaction)."""
        digest = _set_hash(params, sequence_name)
        row = self._db.execute("SELECT id FROM param_set WHERE hash = ?", (digest,)).fetchone()
        if row:
            return row[0]
        project = str(params["Project"])
        cur = self._db.execute(
            """INSERT INTO param_set (hash, project, sequence_name, project_key, sequence_key,
                                      params)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (
                digest, project, sequence_name, *_key(project, sequence_name),
                json.dumps(params),  # in PARAMS order, the order the page and CLI show
            ),
        )
        return cur.lastrowid  # type: ignore[return-value]

    @_noted
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
        with self._write():
            row = self._db.execute(
                """SELECT id, echo_times, param_set FROM series
                   WHERE session = ? AND series_number = ?""",
                (session, number),
            ).fetchone()
            if row is not None:
                if echo_times and row["echo_times"] != echoes_json:
                    ps = self._set_id_of(header, echo_times)
                    self._db.execute(
                        "UPDATE series SET n_files = ?, echo_times = ?, param_set = ? WHERE id = ?",
                        (n_files, echoes_json, ps, row["id"]),
                    )
                    self._recount(row["param_set"])
                    self._recount(ps)
                    self._count_votes(ps, row["id"])
                else:
                    self._db.execute("UPDATE series SET n_files = ? WHERE id = ?",
                                     (n_files, row["id"]))
                return False
            ps = self._set_id_of(header, echo_times)
            cur = self._db.execute(
                """INSERT INTO series (session, series_number, station, project, sequence_name,
                       subject, acq_date, acq_time, operator, shims, n_files, echo_times,
                       source, header, param_set, trusted, vote, software)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    session, number, *(str(header.get(k, NULL)) for k in (
                        "Station", "Project", "SequenceName", "SubID", "AcqDate", "AcqTime",
                        "Operator")),
                    json.dumps(header.get("Shims", NULL)), n_files, echoes_json, source,
                    json.dumps(dict(header)), ps, int(trusted), int(trusted),
                    _software(header),
                ),
            )
            date, clock = header.get("AcqDate", NULL), header.get("AcqTime", NULL)
            acquired = None if date == NULL else f"{date} {clock}"
            key = self._db.execute(
                """UPDATE param_set SET n_series = n_series + 1, n_votes = n_votes + ?4,
                       last_seen = CASE WHEN ?1 IS NULL THEN last_seen
                                   ELSE max(coalesce(last_seen, ''), ?1) END,
                       first_seen = CASE WHEN ?1 IS NULL THEN first_seen
                                    ELSE min(coalesce(first_seen, ?1), ?1) END,
                       last_series = ?2
                   WHERE id = ?3 RETURNING project_key, sequence_key""",
                (acquired, cur.lastrowid, ps, int(trusted)),
            ).fetchone()
            self._db.execute(
                """INSERT OR REPLACE INTO last_software (station, project_key, sequence_key,
                                                         software) VALUES (?, ?, ?, ?)""",
                (str(header.get("Station", NULL)), *key, _software(header)),
            )
            if trusted:
                self._count_votes(ps, cur.lastrowid)
            return True

    def _established(self, key: tuple[str, str]) -> int | None:
        row = self._db.execute(
            "SELECT param_set FROM template WHERE project_key = ? AND sequence_key = ?", key
        ).fetchone()
        return None if row is None else row[0]

    def _count_votes(self, voted: int, series_id: int) -> None:
        """Let the count decide the template of ``voted``'s Project x SequenceName after a
        trusted series voted for it (caller holds a transaction); a change goes into the
        history as ``learnt``, dated by the deciding series' acquisition."""
        key = tuple(self._db.execute(
            "SELECT project_key, sequence_key FROM param_set WHERE id = ?", (voted,)
        ).fetchone())
        established = self._established(key)  # type: ignore[arg-type]
        if voted == established:
            return  # the established set only gained
        tallies = [Tally(r[0], r[1], r[2]) for r in self._db.execute(
            """SELECT id, n_votes, last_seen FROM param_set
               WHERE project_key = ? AND sequence_key = ? AND n_votes > 0""", key)]
        outcome = elect(established, tallies)
        if outcome.changed:
            row = self._db.execute(
                "SELECT NULLIF(acq_date, 'null') || ' ' || acq_time FROM series WHERE id = ?",
                (series_id,)).fetchone()
            self._change(key, outcome.winner, kind="learnt", by=LEARNT_BY,  # type: ignore[arg-type]
                         reason=outcome.reason, at=acquired_at(row[0]) or _now(),
                         series_id=series_id, previous=established)

    def _change(
        self, key: tuple[str, str], set_id: int | None, *, kind: str, by: str, reason: str,
        at: str, series_id: int | None = None, previous: int | None = None,
    ) -> dict[str, Any]:
        """Make ``set_id`` the established set of ``key`` (None: leave it) and add the
        change to the history (caller holds a transaction); the change as ``history``
        gives it."""
        if set_id is not None and kind != "pinned":
            self._db.execute(
                "INSERT OR REPLACE INTO template (project_key, sequence_key, param_set) "
                "VALUES (?, ?, ?)", (*key, set_id))
        cur = self._db.execute(
            """INSERT INTO template_change (project_key, sequence_key, param_set, previous,
                                            kind, at, by, reason, series)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (*key, set_id, previous, kind, at, by, reason, series_id),
        )
        return self._history_where("c.id = ?", (cur.lastrowid,))[0]

    def _restart_count(self, key: tuple[str, str], series_id: int | None) -> None:
        """A person decided: only ``series_id`` (if any) votes in the new count."""
        sets = "SELECT id FROM param_set WHERE project_key = ? AND sequence_key = ?"
        self._db.execute(f"UPDATE series SET vote = (id IS ?) WHERE param_set IN ({sets})",
                         (series_id, *key))
        self._db.execute(
            """UPDATE param_set SET n_votes = (SELECT count(*) FROM series
                                               WHERE param_set = param_set.id AND vote = 1)
               WHERE project_key = ? AND sequence_key = ?""", key)

    def _recount(self, set_id: int) -> None:
        """Recompute a parameter set's counters from its series (a series moved sets)."""
        self._db.execute(
            """UPDATE param_set SET
                   n_series = (SELECT count(*) FROM series WHERE param_set = ?1),
                   n_votes = (SELECT count(*) FROM series WHERE param_set = ?1 AND vote = 1),
                   first_seen = (SELECT min(NULLIF(acq_date, 'null') || ' ' || acq_time)
                                 FROM series WHERE param_set = ?1),
                   last_seen = (SELECT max(NULLIF(acq_date, 'null') || ' ' || acq_time)
                                FROM series WHERE param_set = ?1),
                   last_series = (SELECT max(id) FROM series WHERE param_set = ?1)
               WHERE id = ?1""",
            (set_id,),
        )

    def _ranked_sets(
        self, project: str, sequence_name: str, limit: int = -1
    ) -> list[sqlite3.Row]:
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
                     AND (p.n_series > 0 OR pinned OR established)
               ORDER BY pinned DESC, established DESC, p.n_votes DESC, p.n_series DESC,
                        p.last_seen DESC, p.last_series DESC
               LIMIT ?""",
            (*_key(project, sequence_name), limit),
        ).fetchall()

    @staticmethod
    def _set_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": row["id"], "project": row["project"], "sequence_name": row["sequence_name"],
            "count": row["n_series"], "votes": row["n_votes"], "first_seen": row["first_seen"],
            "last_seen": row["last_seen"], "pinned": bool(row["pinned"]),
            "established": bool(row["established"]),
            "params": json.loads(row["params"]),
        }

    @_noted
    def template(self, project: str, sequence_name: str) -> dict[str, Any] | None:
        """The template (the 17 PARAMS) of a Project x SequenceName, or None if never seen.

        Names match ignoring case and white space runs. A pinned set wins; else the
        established set (see ``rules.templates``: the count of trusted series, or a
        person's acceptance or import).
        """
        with self._lock:
            ranked = self._ranked_sets(project, sequence_name, limit=1)
        if not ranked or not (ranked[0]["pinned"] or ranked[0]["established"]):
            return None
        return json.loads(ranked[0]["params"])

    @_noted
    def param_sets(self, project: str, sequence_name: str) -> list[dict[str, Any]]:
        """Every parameter set of a Project x SequenceName, the template first:
        ``{"id", "project", "sequence_name", "count", "last_seen", "pinned", "params"}``."""
        with self._lock:
            return [self._set_dict(r) for r in self._ranked_sets(project, sequence_name)]

    @_noted
    def templates(self) -> list[dict[str, Any]]:
        """The template of every Project x SequenceName, sorted by name, each as
        ``param_sets`` describes it plus ``"n_sets"`` (how many sets compete)."""
        with self._lock:
            keys = self._db.execute(
                """SELECT DISTINCT project_key, sequence_key FROM param_set
                   ORDER BY 1, 2"""
            ).fetchall()
            out = []
            for project, sequence_name in keys:
                ranked = self._ranked_sets(project, sequence_name)
                if ranked and (ranked[0]["pinned"] or ranked[0]["established"]):
                    out.append({**self._set_dict(ranked[0]), "n_sets": len(ranked)})
            return out

    @_noted
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
        with self._write():
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
                    "SELECT project_key, sequence_key FROM param_set WHERE id = ?",
                    (set_id,),
                ).fetchone()
                if row is None or tuple(row) != key:
                    raise LookupError(f"no parameter set {set_id} for {project} x {sequence_name}")
            self._db.execute(
                """INSERT OR REPLACE INTO pin (project_key, sequence_key, param_set)
                   VALUES (?, ?, ?)""",
                (*key, set_id),
            )
            self._change(key, set_id, kind="pinned", by=by, reason=reason, at=_now(),
                         previous=self._established(key))
        return set_id  # type: ignore[return-value]

    @_noted
    def unpin(self, project: str, sequence_name: str, *, by: str = "operator",
              reason: str = "unpinned") -> bool:
        """Remove the pin of a Project x SequenceName; True if there was one (the history
        keeps it, kind ``unpinned``)."""
        key = _key(project, sequence_name)
        with self._write():
            row = self._db.execute(
                "DELETE FROM pin WHERE project_key = ? AND sequence_key = ? RETURNING param_set",
                key).fetchone()
            if row is not None:
                self._change(key, None, kind="unpinned", by=by, reason=reason, at=_now(),
                             previous=row[0])
            return row is not None

    # -- templates decided by people (rules/templates.py) -----------------------------

    @_noted
    def accept(
        self, session: str, series_number: int, *, reason: str, by: str, at: str | None = None
    ) -> dict[str, Any]:
        """Accept a recorded series as intended: its parameter set becomes the template of
        its Project x SequenceName, the series is trusted, and the count starts again
        with it as the one vote. Returns the change as ``history`` gives it.

        ``by`` is the person (the operator's name or the signed-in user), ``at`` ISO 8601
        (default now). Raises LookupError when no such series is recorded.
        """
        with self._write():
            row = self._db.execute(
                """SELECT s.id, s.param_set, p.project_key, p.sequence_key FROM series s
                   JOIN param_set p ON p.id = s.param_set
                   WHERE s.session = ? AND s.series_number = ?""",
                (session, series_number)).fetchone()
            if row is None:
                raise LookupError(f"no series {series_number} recorded in session {session}")
            key = (row["project_key"], row["sequence_key"])
            self._db.execute("UPDATE series SET trusted = 1 WHERE id = ?", (row["id"],))
            self._restart_count(key, row["id"])
            return self._change(key, row["param_set"], kind="accepted", by=by, reason=reason,
                                at=at or _now(), series_id=row["id"],
                                previous=self._established(key))

    @_noted
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
        with self._write():
            for old in history:
                old_params = old.get("params")
                old_id = None if old_params is None else self._param_set_id(
                    {p: _clean(old_params.get(p, NULL)) for p in PARAMS}, sequence_name)
                change = (str(old["kind"]), str(old["at"]), str(old["by"]), str(old["reason"]))
                if self._db.execute(
                    """SELECT 1 FROM template_change WHERE project_key = ? AND sequence_key = ?
                       AND param_set IS ? AND kind = ? AND at = ? AND by = ? AND reason = ?""",
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
            f"""SELECT c.id, c.kind, c.at, c.by, c.reason, c.param_set AS set_id,
                       c.previous AS previous_set_id, p.project, p.sequence_name, p.params,
                       s.session, s.series_number, s.station
                FROM template_change c
                LEFT JOIN param_set p ON p.id = c.param_set
                LEFT JOIN series s ON s.id = c.series
                WHERE {where} ORDER BY c.id""", args).fetchall()
        return [{**dict(r), "params": None if r["params"] is None else json.loads(r["params"])}
                for r in rows]

    @_noted
    def history(self, project: str, sequence_name: str) -> list[dict[str, Any]]:
        """Every change of the template of a Project x SequenceName, oldest first: ``{"id",
        "kind" (learnt, accepted, imported, pinned, unpinned), "at" (ISO 8601), "by",
        "reason", "set_id", "previous_set_id", "project", "sequence_name", "params",
        "session", "series_number", "station"}`` (the last three name the accepted or
        deciding series, else None; ``params`` is None for an unpin)."""
        with self._lock:
            return self._history_where("c.project_key = ? AND c.sequence_key = ?",
                                       _key(project, sequence_name))

    @_noted
    def template_changes(
        self, *, project: str | None = None, kinds: Iterable[str] | None = None,
        since: str | None = None,
    ) -> list[dict[str, Any]]:
        """Template changes across templates, oldest first, as ``history`` gives them:
        of one project, of some kinds (e.g. ``("accepted",)``), at or after ``since``
        (ISO 8601, compared as text)."""
        where, args = ["1"], []
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
        with self._lock:
            return self._history_where(" AND ".join(where), tuple(args))

    @_noted
    def previous_software(self, header: Mapping[str, Any]) -> str | None:
        """The SoftwareVersions of the last series recorded on the header's station for its
        Project x SequenceName (its template name), or None if none or unknown. Ask
        before recording the series."""
        with self._lock:
            row = self._db.execute(
                """SELECT software FROM last_software
                   WHERE station = ? AND project_key = ? AND sequence_key = ?""",
                (str(header.get("Station", NULL)),
                 *_key(str(header.get("Project", NULL)), template_name(header)))).fetchone()
        return None if row is None else row[0]

    @_noted
    def project_templates(self, project: str) -> list[dict[str, Any]]:
        """The template of every SequenceName of one project, as ``templates`` gives them,
        each with its ``"history"``."""
        with self._lock:
            out = []
            for t in self.templates():
                if _fold(t["project"]) == _fold(project):
                    out.append({**t, "history": self.history(project, t["sequence_name"])})
            return out

    @_noted
    def series_on(self, day: str) -> list[dict[str, Any]]:
        """Series acquired on ``day`` ("YYYYMMDD"), in acquisition order, each
        ``{"station", "session", "series_number", "header", "n_files", "source"}``."""
        with self._lock:
            rows = self._db.execute(
                """SELECT station, session, series_number, header, n_files, source FROM series
                   WHERE acq_date = ? ORDER BY acq_time, id""",
                (day,),
            ).fetchall()
        return [{**dict(r), "header": json.loads(r["header"])} for r in rows]

    # -- session-level compliance (protocol.py) -------------------------------------

    @_noted
    def recent_sessions(
        self, project: str, *, limit: int = 20, exclude: str | None = None
    ) -> list[list[tuple[str, int]]]:
        """The project's ``limit`` most recent sessions, newest first, each as its series
        ordered by series number, as (sequence_name, n_files).

        The project matches as in ``template`` (case and white space ignored); a session
        is as recent as its earliest acquisition (sessions without dates come last).
        ``exclude`` leaves one session out (the one being checked).
        """
        project_key = _fold(project)
        with self._lock:
            rows = self._db.execute(
                """WITH mine AS (
                       SELECT s.session, s.series_number, s.sequence_name, s.n_files, s.id,
                              NULLIF(s.acq_date, 'null') || ' ' || s.acq_time AS acquired
                       FROM series s JOIN param_set p ON p.id = s.param_set
                       WHERE p.project_key = ?1 AND s.session IS NOT ?2),
                   recent AS (
                       SELECT session, min(acquired) AS started, max(id) AS last_id FROM mine
                       GROUP BY session
                       ORDER BY started IS NULL, started DESC, last_id DESC LIMIT ?3)
                   SELECT mine.session, sequence_name, n_files FROM mine
                   JOIN recent USING (session)
                   ORDER BY recent.started IS NULL, recent.started DESC, recent.last_id DESC,
                            series_number""",
                (project_key, exclude, limit),
            ).fetchall()
        sessions: dict[str, list[tuple[str, int]]] = {}
        for row in rows:
            sessions.setdefault(row["session"], []).append(
                (row["sequence_name"], row["n_files"]))
        return list(sessions.values())

    def protocol(self, project: str, *, exclude: str | None = None) -> Protocol:
        """The project's expected protocol: the pinned one if any, else the one learnt
        from its ``RECENT_SESSIONS`` most recent sessions other than ``exclude``
        (empty when the project has none)."""
        pinned = self.pinned_protocol(project)
        if pinned is not None:
            return Protocol(project, tuple(Expected(e["sequence_name"], e["n_files"])
                                           for e in pinned), pinned=True)
        return learn_protocol(
            project, self.recent_sessions(project, limit=RECENT_SESSIONS, exclude=exclude))

    @_noted
    def session_series(self, session: str) -> list[tuple[str, int]]:
        """A session's series ordered by series number, as (sequence_name, n_files)."""
        with self._lock:
            rows = self._db.execute(
                """SELECT sequence_name, n_files FROM series WHERE session = ?
                   ORDER BY series_number""",
                (session,),
            ).fetchall()
        return [(r["sequence_name"], r["n_files"]) for r in rows]

    @_noted
    def pin_protocol(self, project: str, expected: Iterable[Mapping[str, Any]]) -> None:
        """Make ``expected`` (``{"sequence_name", "n_files"}`` dicts, in order) the
        project's protocol, replacing any earlier pin; ValueError if it is empty or
        an entry is malformed (n_files must be a positive int or None)."""
        items = _expected_list(expected)
        with self._write():
            self._db.execute(
                "INSERT OR REPLACE INTO protocol_pin (project_key, project, expected) "
                "VALUES (?, ?, ?)",
                (_fold(project), project, json.dumps(items)),
            )

    @_noted
    def unpin_protocol(self, project: str) -> bool:
        """Go back to the learnt protocol; True if the project had a pinned one."""
        with self._write():
            cur = self._db.execute("DELETE FROM protocol_pin WHERE project_key = ?",
                                   (_fold(project),))
            return cur.rowcount > 0

    @_noted
    def pinned_protocol(self, project: str) -> list[dict[str, Any]] | None:
        """The project's pinned protocol as ``pin_protocol`` took it, or None."""
        with self._lock:
            row = self._db.execute("SELECT expected FROM protocol_pin WHERE project_key = ?",
                                   (_fold(project),)).fetchone()
        return None if row is None else json.loads(row["expected"])

    @_noted
    def acknowledge(self, alert: Mapping[str, Any], reason: str, at: str) -> None:
        """Store an operator's acknowledgement of ``alert`` (``Alert.to_json()``) with
        their ``reason`` at ``at`` (ISO 8601); acknowledging again replaces both."""
        session, series = str(alert["session"]), alert.get("series")
        with self._write():
            self._db.execute(
                """INSERT OR REPLACE INTO ack (id, kind, session, series, series_number, text,
                                               reason, at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (str(alert["id"]), str(alert["kind"]), session, series,
                 _series_number(session, series), str(alert["text"]), reason, at),
            )

    def _acks(self, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"""SELECT id, kind, session, series, text, reason, at FROM ack
                    WHERE {where} ORDER BY at, id""",
                args,
            ).fetchall()
        return [dict(r) for r in rows]

    @_noted
    def acks(self, session: str) -> dict[str, dict[str, Any]]:
        """The session's acknowledged alerts: id -> ``{"id", "kind", "session", "series",
        "text", "reason", "at"}``, oldest acknowledgement first."""
        return {a["id"]: a for a in self._acks("session = ?", (session,))}

    @_noted
    def series_acks(self, session: str, series_number: int) -> list[dict[str, Any]]:
        """The acknowledged alerts about one series (its history), oldest first, each as
        ``acks`` gives them."""
        return self._acks("session = ? AND series_number = ?", (session, series_number))

    @_noted
    def purge_identifying(self, before: str) -> int:
        """Blank who was scanned (PatientName), who scanned (OperatorsName) and the free
        text (ImageComments) of series acquired before ``before`` (YYYYMMDD), in the row
        and its stored header; parameters, counts and acknowledgements stay. The number of
        series changed (a series already purged is not counted again)."""
        names = ("SubID", "Operator", "Comments")
        with self._write():
            rows = self._db.execute(
                "SELECT id, header FROM series WHERE acq_date < ? AND acq_date != ? "
                "AND (subject != '' OR operator != '' OR "
                + " OR ".join(f"json_extract(header, '$.{n}') IS NOT NULL" for n in names)
                + ")",
                (before, NULL),
            ).fetchall()
            for row in rows:
                header = {k: v for k, v in json.loads(row["header"]).items() if k not in names}
                self._db.execute(
                    "UPDATE series SET subject = '', operator = '', header = ? WHERE id = ?",
                    (json.dumps(header), row["id"]),
                )
        return len(rows)
