"""Command line: ``mrqart DIR...`` runs the live service; subcommands do the rest.

Each subcommand is one ``cmd_<name>(args) -> int`` function; this module parses
arguments and prints, the work lives in the modules named in each function.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mrqart.config import DICOM_SUBDIR, Config, db_location, default_db, default_users, prepare_db
from mrqart.headers.phi import PHI_MODES
from mrqart.ingest.watcher import DEFAULT_PATTERN
from mrqart.live.auth import ROLES
from mrqart.rules.protocol import FINISHED_AFTER_MINUTES
from mrqart.synth import PROTOCOL

if TYPE_CHECKING:
    from mrqart.store import BaseStore

SUBCOMMANDS = ("run", "simulate", "import", "check", "templates", "protocol", "report",
               "users", "purge")
#: The series names of the simulated protocol, for --help and --wrong.
SIMULATED_SERIES = tuple(series["name"] for series in PROTOCOL)
#: Shortest password `mrqart users add` takes (NIST SP 800-63B's minimum).
MIN_PASSWORD = 8


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db", type=db_location, default=None,
        help=f"sqlite file or postgresql://user@host/dbname (default: {default_db()}; "
             "env MRQART_DB)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrqart",
        description="MR Quality Assurance in (near) Real Time. "
        "'mrqart DIR...' watches DIR for DICOM files and serves the console page; "
        "the subcommands below do the rest.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # --- run: the live service (owner: service) -------------------------------
    p = sub.add_parser("run", help="watch directories and serve the console page (default)")
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="directory the scanner writes into")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s; 0.0.0.0 for another machine)")
    p.add_argument("--port", type=int, default=8080, help="port for HTTP and WebSocket (default: %(default)s)")
    p.add_argument("--rules", type=Path, default=None, help="TOML file overriding the comparison rules")
    p.add_argument("--all-stations", action="store_true",
                   help="list every station of the (shared) database on /api/stations")
    p.add_argument("--no-catch-up", action="store_true",
                   help="do not deliver files already in today's session directories at start")
    p.add_argument("--finish-minutes", type=float, default=FINISHED_AFTER_MINUTES, metavar="MINUTES",
                   help="a session with no new file for this long is finished and its "
                   "missing series are reported (default: %(default)s)")
    p.add_argument("--names", metavar="GLOBS", type=lambda v: tuple(g for g in v.split(",") if g),
                   help="comma-separated file names taken as DICOM without looking inside "
                   f"(default: {','.join(DEFAULT_PATTERN)}); any other name that "
                   "is not junk is DICOM if the file starts with the DICM preamble")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_db(p)
    node = p.add_argument_group(
        "DICOM node", "receive images by C-STORE too (mrqart as a DICOM node on --host)")
    env_port = os.environ.get("MRQART_DICOM_PORT")
    node.add_argument("--dicom-port", type=int, default=int(env_port) if env_port else None,
                      metavar="PORT", help="listen for C-STORE and C-ECHO on this port, e.g. "
                      "11112 (env MRQART_DICOM_PORT; default: no DICOM node)")
    node.add_argument("--ae-title", default=os.environ.get("MRQART_AE_TITLE", "MRQART"),
                      type=_ae_title, help="the node's AE title (env MRQART_AE_TITLE; "
                      "default: %(default)s)")
    node.add_argument("--dicom-dir", type=Path, default=None, metavar="DIR",
                      help=f"where received images are written (default: DIR/{DICOM_SUBDIR} "
                      "of the first watched DIR)")
    node.add_argument("--dicom-allow", action="append", default=[], type=_allow,
                      metavar="AE|ADDRESS|AE@ADDRESS",
                      help="a calling AE title and/or peer address or network (10.0.0.0/24) "
                      "that may send; repeatable or comma-separated. Without it only a node "
                      "on a loopback --host starts, accepting everyone")
    _add_access(p)
    p.set_defaults(func=cmd_run)

    # --- simulate: the synthetic scanner (owner: synth) ----------------------
    p = sub.add_parser(
        "simulate", help="write a realistic synthetic session into DIR (demo, tests, benchmarks)",
        description="A synthetic Siemens scanner: writes sessions of Siemens-like DICOM files "
        "(CSA header, ASCCONV protocol, scanner file names, multi-echo interleaved) into DIR, "
        "in bursts, at about --rate files/s.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="the directory mrqart watches")
    p.add_argument("--rate", type=float, default=300.0,
                   help="files per second, written in bursts (default: %(default)s; 0: as fast as possible)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every series' file count (default: %(default)s; 0.1 for a quick demo)")
    p.add_argument("--wrong", action="append", default=[], metavar="SERIES:PARAM=VALUE",
                   help="give a series a wrong parameter, e.g. rest:TR=2000 (repeatable); "
                   "series: " + ", ".join(SIMULATED_SERIES))
    p.add_argument("--sessions", type=int, default=1, help="sessions to write, one after another")
    p.add_argument("--subject", default="MRQART_test_sub01", help="PatientName of the sessions")
    p.add_argument("--vendor", choices=("siemens", "xa", "xa-interop"), default="siemens",
                   help="siemens: classic CSA files; xa: Siemens XA enhanced multi-frame "
                   "files; xa-interop: XA single-frame files (default: %(default)s)")
    p.set_defaults(func=cmd_simulate)

    # --- import / check / templates (owner: store, check) --------------------
    p = sub.add_parser(
        "import", help="learn templates from archived DICOM directories",
        description="Walk PATHs recursively, read one header per series (per echo), and "
        "record each series in the database with source 'import'. Series already recorded "
        "(same StudyUID and series number) are skipped, so a re-run adds nothing. Uses one "
        "process per core; shows progress on stderr when it is a terminal.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="archive directory (walked recursively) or DICOM file")
    _add_db(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "check", help="check DICOM files against the templates; exit 1 if any does not conform",
        description="Compare each FILE with the template of its Project x SequenceName.",
        epilog="exit status: 0 every file conforms or has no template yet; 1 at least one file "
        "does not conform; 2 no file is nonconforming but at least one could not be read.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print a JSON list, one verdict per file")
    p.add_argument("--rules", type=Path, default=None,
                   help="TOML file overriding the comparison rules")
    _add_db(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "templates", help="list, accept, pin, export or import templates",
        description="Without ACTION, list the template of every Project x SequenceName: the "
        "parameter set most trusted series used (imported ones, live ones that conformed, "
        "accepted ones; a tie keeps the established set), unless a person accepted or pinned "
        "one. --db and --json may also follow the ACTION.",
    )
    _add_db(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_templates, action=None)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    for name, help_ in (
        ("sets", ("list every parameter set of PROJECT SEQUENCE with its ID, series, votes and "
         "dates; without PROJECT SEQUENCE, every template that has competing (minority) sets")),
        ("pin", "make one parameter set the template of PROJECT SEQUENCE, whatever the counts"),
        ("unpin", "go back to the established parameter set"),
        ("history", "every change of the template of PROJECT SEQUENCE: which set, when, who, why"),
        ("accept", "accept a recorded series as intended: its parameters become its template"),
        ("export", ("write PROJECT's templates as JSON (one entry per series, with tolerances "
         "and history) to stdout")),
        ("import", "make the templates of a JSON file (from 'templates export') the templates"),
    ):
        a = actions.add_parser(name, help=help_, description=help_)
        if name == "accept":
            a.add_argument("series", metavar="SERIES",
                           help="SESSION:NUMBER, the series key the page and the API show "
                           "(SESSION is the StudyInstanceUID)")
            a.add_argument("--reason", required=True, help="why this change is intended")
        elif name == "import":
            a.add_argument("file", type=Path, metavar="FILE", help="a 'templates export' file")
        else:
            a.add_argument("project", metavar="PROJECT", help="(0008,1030) StudyDescription",
                           **({"nargs": "?"} if name == "sets" else {}))
        if name not in ("accept", "import", "export"):
            a.add_argument("sequence", metavar="SEQUENCE", help="(0008,103E) SeriesDescription",
                           **({"nargs": "?"} if name == "sets" else {}))
        if name in ("accept", "import", "pin", "unpin"):
            a.add_argument("--by", default=None,
                           help="who decides (default: the login name, $USER)")
        if name == "export":
            a.add_argument("--rules", type=Path, default=None,
                           help="TOML rules file whose tolerances the file states")
        # SUPPRESS: given before the action, the option keeps its value.
        a.add_argument("--db", type=db_location, default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
        a.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
        if name == "pin":
            src = a.add_mutually_exclusive_group(required=True)
            src.add_argument("--set", type=int, dest="set_id", metavar="ID",
                             help="a parameter set ID from 'mrqart templates sets'")
            src.add_argument("--from-file", type=Path, metavar="DICOM",
                             help="the parameters of this DICOM file")

    # --- protocol: the series a session should hold (owner: session compliance) --------
    p = sub.add_parser(
        "protocol", help="show, pin or unpin the series a project's sessions should hold",
        description="The expected protocol of a project: the series descriptions that appear\n"
        "in at least half of its recent sessions, in their usual order, each with its usual\n"
        "number of files. The live page checks each session against it (missing, repeated,\n"
        "unexpected and incomplete series). An operator may pin the list instead.",
        epilog="examples:\n"
        "  mrqart protocol show BrainStudy\n"
        "  mrqart protocol pin BrainStudy --from-session 1.3.12.2.1107.5.2.43.67078\n"
        "  mrqart protocol pin BrainStudy --series 'localizer:3,t1_mprage:192,rest:300,dwi'\n"
        "  mrqart protocol unpin BrainStudy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_ in (
        ("show", "print the expected protocol: the pinned one, else the learnt one (says which)"),
        ("pin", "make a list of series the project's expected protocol, whatever history says"),
        ("unpin", "go back to the protocol learnt from history"),
    ):
        a = actions.add_parser(name, help=help_, description=help_)
        a.add_argument("project", metavar="PROJECT", help="(0008,1030) StudyDescription")
        _add_db(a)
        if name == "show":
            a.add_argument("--json", action="store_true", help="print JSON")
        if name == "pin":
            src = a.add_mutually_exclusive_group(required=True)
            src.add_argument("--from-session", metavar="SESSION",
                             help="the series of this recorded session (its StudyInstanceUID), "
                             "with their file counts")
            src.add_argument("--series", type=parse_series_list, metavar="NAME[:N],...",
                             help="comma-separated series descriptions in order, each with "
                             "its expected number of files (omit :N to check presence only)")
            a.add_argument("--by", default=None,
                           help="who pins it (default: the login name, $USER)")
    p.set_defaults(func=cmd_protocol)

    # --- report: the day after (owner: report) -------------------------------------
    p = sub.add_parser(
        "report", help="the compliance report of a day or a period, per project and session",
        description="Per project and session of the period: series checked, conforming, "
        "differing (expected, got, difference), acknowledged, accepted template changes, "
        "series with no template, incomplete and missing series, failures on consecutive "
        "scan days. Localizers, scouts, 3-plane and survey series are left out (the "
        "[report] table of the --rules file changes that).",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--day", metavar="YYYY-MM-DD",
                      help="the day to report (also 'today', 'yesterday'; default: yesterday)")
    when.add_argument("--since", metavar="YYYY-MM-DD", help="report from this day to today")
    p.add_argument("--project", help="only this project (default: every project)")
    p.add_argument("--format", choices=("html", "json", "text"), default="text",
                   help="what to print (default: %(default)s)")
    p.add_argument("--rules", type=Path, default=None,
                   help="TOML file overriding the comparison rules and the [report] exclusions")
    p.add_argument("--mail", action="store_true",
                   help="e-mail the report (HTML with plots, and plain text) to each "
                   "project's recipients instead of printing it")
    p.add_argument("--phi", choices=PHI_MODES, default=None,
                   help="subject names in the report: show, initials, hide (default: initials "
                   "in e-mail, which leaves the hospital's servers; show when printed)")
    p.add_argument("--smtp", metavar="HOST:PORT", help="SMTP server (env MRQART_SMTP)")
    p.add_argument("--mail-config", type=Path, metavar="TOML",
                   help="SMTP settings and recipients per project (env MRQART_MAIL_CONFIG; "
                   "the password only in its password_file or MRQART_SMTP_PASSWORD)")
    _add_db(p)
    p.set_defaults(func=cmd_report)

    # --- users, purge: who may use the console; patient data (owner: security) ---------
    p = sub.add_parser(
        "users", help="add or list the console's accounts (the users file)",
        description="Accounts of the console: NAME, a role (viewer: reads; operator: also "
        "acknowledges alerts; physicist: also pins protocols and accepts templates), a "
        "password kept as an scrypt hash, and an optional phi setting.",
    )
    _add_users_file(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("add", help="add an account or replace its role and password")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--phi", choices=PHI_MODES, default=None,
                   help="patient data this account sees (default: viewers hide, others show)")
    how = a.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    how.add_argument("--no-password", action="store_true",
                     help="no password: only a trusted proxy (--trust-proxy) may vouch for NAME")
    _add_users_file(a, argparse.SUPPRESS)
    a = actions.add_parser("list", help="list the accounts and their roles")
    _add_users_file(a, argparse.SUPPRESS)
    p.set_defaults(func=cmd_users)

    p = sub.add_parser(
        "purge", help="remove patient names from series acquired before a date",
        description="Blank the patient name, operator and image comments of every series "
        "acquired before DATE; parameters, counts, verdicts and acknowledgements stay.",
    )
    p.add_argument("--before", required=True, type=_iso_date, metavar="YYYY-MM-DD")
    _add_db(p)
    p.set_defaults(func=cmd_purge)
    return parser


def _ae_title(text: str) -> str:
    if not 0 < len(text.strip()) <= 16 or not text.isascii():
        raise argparse.ArgumentTypeError(f"{text!r}: an AE title is 1 to 16 ASCII characters")
    return text.strip()


def _allow(text: str) -> str:
    from mrqart.ingest.dicomnode import parse_allow

    try:
        parse_allow([text])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _add_users_file(p: argparse.ArgumentParser, default: Any = None) -> None:
    p.add_argument("--users", type=Path, default=default, metavar="FILE",
                   help=f"the users file (default: {default_users()}, used when it exists; "
                   "env MRQART_USERS)")


def _add_access(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("access (see README, Security)")
    _add_users_file(g)  # type: ignore[arg-type]
    g.add_argument("--trust-proxy", action="append", default=[], metavar="ADDR",
                   help="address of a reverse proxy whose --proxy-header names the "
                   "authenticated user (repeatable)")
    g.add_argument("--proxy-header", default="X-Remote-User", metavar="NAME",
                   help="the proxy's user header (default: %(default)s)")
    g.add_argument("--allowed-hosts", action="append", default=[], metavar="NAME,...",
                   help="host names browsers use to reach the console, besides the bound "
                   "address and the loopback names (comma-separated, repeatable)")
    g.add_argument("--allowed-origin", action="append", default=[], metavar="ORIGIN",
                   help="another origin (https://portal.example) whose pages may use the API")
    g.add_argument("--no-auth", action="store_true",
                   help="serve anyone who can reach the port without accounts (the page says so)")
    g.add_argument("--phi", choices=PHI_MODES, default=None,
                   help="patient data for everyone without an account setting "
                   "(default: viewers hide, operators and physicists show)")
    g.add_argument("--session-minutes", type=float, default=8 * 60.0, metavar="MINUTES",
                   help="a login lasts this long after its last use (default: %(default)s)")
    g.add_argument("--certfile", type=Path, default=None, help="TLS certificate (PEM): serve HTTPS/WSS")
    g.add_argument("--keyfile", type=Path, default=None, help="TLS private key (PEM)")


def _iso_date(text: str) -> str:
    """``2026-01-31`` -> ``20260131`` (DICOM's DA form, as stored)."""
    from datetime import date

    try:
        return date.fromisoformat(text).strftime("%Y%m%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a date YYYY-MM-DD") from None


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from mrqart.live import service
    from mrqart.live.auth import UsersFileError, exposure_error, load_users

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for d in args.dirs:
        if not d.is_dir():
            print(f"mrqart: {d} is not a directory (give the directory the scanner writes into)",
                  file=sys.stderr)
            return 2
    users = args.users or (default_users() if default_users().exists() else None)
    refusal = exposure_error(args.host, users=users, trust_proxy=args.trust_proxy,
                             no_auth=args.no_auth)
    if refusal is None and users is not None:
        try:
            load_users(users)
        except UsersFileError as error:
            refusal = str(error)
    if refusal is None and (args.certfile is None) != (args.keyfile is None):
        refusal = "give both --certfile and --keyfile"
    if refusal:
        print(f"mrqart: {refusal}", file=sys.stderr)
        return 2
    prepare_db(args.db)
    config = Config(
        roots=tuple(args.dirs), db=args.db, host=args.host, port=args.port,
        rules=args.rules, catch_up=not args.no_catch_up, finish_minutes=args.finish_minutes,
        pattern=args.names,
        all_stations=args.all_stations,
        dicom_port=args.dicom_port, ae_title=args.ae_title, dicom_dir=args.dicom_dir,
        dicom_allow=tuple(args.dicom_allow),
        users=users, trust_proxy=tuple(args.trust_proxy), proxy_header=args.proxy_header,
        allowed_hosts=tuple(h.strip() for hs in args.allowed_hosts for h in hs.split(",")
                            if h.strip()),
        allowed_origins=tuple(args.allowed_origin), no_auth=args.no_auth, phi=args.phi,
        session_minutes=args.session_minutes, certfile=args.certfile, keyfile=args.keyfile,
    )
    if config.dicom_port is not None:
        config.receive_dir.mkdir(parents=True, exist_ok=True)
    try:
        trio.run(service.main, config)
    except (Exception, BaseExceptionGroup) as error:
        cause = _first_leaf(error)
        logging.getLogger("mrqart").debug("traceback", exc_info=error)
        logging.getLogger("mrqart").critical("mrqart stopped: %s: %s", type(cause).__name__, cause)
        return 1
    return 0


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def parse_wrong(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["rest:TR=2000"]`` -> ``{"rest": {"TR": 2000.0}}``; numbers become floats."""
    wrong: dict[str, dict[str, Any]] = {}
    for item in items:
        series, sep, assignment = item.partition(":")
        param, eq, value = assignment.partition("=")
        if not (sep and eq and series and param):
            raise ValueError(f"--wrong {item!r}: expected SERIES:PARAM=VALUE, e.g. rest:TR=2000")
        try:
            parsed: Any = float(value)
        except ValueError:
            parsed = value
        wrong.setdefault(series, {})[param] = parsed
    return wrong


def cmd_simulate(args: argparse.Namespace) -> int:
    from mrqart import synth

    try:
        wrong = parse_wrong(args.wrong)
    except ValueError as error:
        print(f"mrqart simulate: {error}", file=sys.stderr)
        return 2
    if unknown := set(wrong) - set(SIMULATED_SERIES):
        print(f"mrqart simulate: no series {sorted(unknown)}; the protocol has "
              f"{', '.join(SIMULATED_SERIES)}", file=sys.stderr)
        return 2
    if not args.dir.is_dir():
        print(f"mrqart simulate: {args.dir} is not a directory", file=sys.stderr)
        return 2
    for n in range(args.sessions):
        progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
        session = synth.write_session(
            args.dir, wrong=wrong, scale=args.scale, rate=args.rate or None,
            subject=args.subject, progress=(lambda _p, i, total, bar=progress: bar(i, total)) if progress else None,
            vendor=args.vendor,
        )
        if progress:
            progress.close()
        print(f"session {n + 1}/{args.sessions} written: {session}")
    return 0


Command = Callable[[argparse.Namespace], int]


def _database_errors(cmd: Command) -> Command:
    """Turn a database error (locked, read-only, disk full, newer schema) into one
    clear line and exit status 1 instead of a traceback."""

    @functools.wraps(cmd)
    def wrapper(args: argparse.Namespace) -> int:
        from mrqart.store import NewerSchemaError, database_errors

        try:
            return cmd(args)
        except (*database_errors(), NewerSchemaError) as e:
            notes = "; ".join(getattr(e, "__notes__", []))
            print(f"mrqart {args.command}: {e}" + (f" ({notes})" if notes else ""),
                  file=sys.stderr)
            return 1

    return wrapper


def _open_store(db: Path | str) -> BaseStore:
    from mrqart.store import open_store

    prepare_db(db)
    return open_store(db)


class _Progress:
    """A one-line progress bar with files/s, redrawn at most 10 times a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.start = time.monotonic()
        self.last = -math.inf  # the first call draws

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        width = 30
        filled = width * done // max(total, 1)
        rate = done / max(now - self.start, 1e-9)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                          f"{done}/{total} files  {rate:,.0f} files/s")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")


@_database_errors
def cmd_import(args: argparse.Namespace) -> int:
    from mrqart.importer import import_paths

    if missing := [p for p in args.paths if not p.exists()]:
        print(f"mrqart import: {missing[0]}: no such file or directory", file=sys.stderr)
        return 2
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    with _open_store(args.db) as store:
        try:
            report = import_paths(args.paths, store, progress=progress)
        except KeyboardInterrupt:
            print("\nmrqart import: interrupted; the series recorded so far are kept, "
                  "run it again to import the rest", file=sys.stderr)
            return 130
    if progress:
        progress.close()
    rate = report.n_files / max(report.seconds, 1e-9)
    print(f"{report.n_files} files in {report.seconds:.1f} s ({rate:,.0f} files/s)",
          file=sys.stderr)
    print(f"{report.added} series added, {report.skipped} already recorded (skipped), "
          f"{len(report.unreadable)} unreadable files")
    shown = 20  # enough to see the pattern; the rest are usually the same reason
    for bad in report.unreadable[:shown]:
        print(f"  {bad.path}: {bad.reason}")
    if len(report.unreadable) > shown:
        print(f"  ... and {len(report.unreadable) - shown} more")
    return 0


@_database_errors
def cmd_check(args: argparse.Namespace) -> int:
    import tomllib

    from mrqart.headers import Unreadable, read_header
    from mrqart.rules.check import DEFAULT_RULES, check, describe, load_rules, template_name

    try:
        rules = load_rules(args.rules) if args.rules else DEFAULT_RULES
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        print(f"mrqart check: rules: {e}", file=sys.stderr)
        return 2
    verdicts: list[dict[str, Any]] = []
    with _open_store(args.db) as store:
        for path in args.files:
            header = read_header(path)
            if isinstance(header, Unreadable):
                verdicts.append(
                    {"path": str(path), "status": "unreadable", "reason": header.reason}
                )
            else:
                template = store.template(str(header["Project"]), template_name(header))
                verdicts.append({"path": str(path), **check(header, template, rules)})
    if args.json:
        print(json.dumps(verdicts, indent=2))
    else:
        for v in verdicts:
            if v["status"] == "unreadable":
                print(f"{v['path']}: unreadable: {v['reason']}")
                continue
            name = f"{v['input']['Project']} / {v['input']['SequenceName']}"
            print(f"{v['path']}: {v['status'].replace('_', ' ')} ({name})")
            for sentence in describe(v["errors"]):
                print(f"    {sentence}")
    statuses = {v["status"] for v in verdicts}
    return 1 if "nonconform" in statuses else 2 if "unreadable" in statuses else 0


_SHOWN_PARAMS = ("TR", "TE", "FA", "Matrix", "PixelResol", "iPAT")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _sets_table(sets: list[dict[str, Any]], *, names: bool) -> str:
    from mrqart.rules.check import fmt

    head = ["ID", "SERIES", "VOTES", "STATE", *(["PROJECT", "SEQUENCE"] if names else []),
            *_SHOWN_PARAMS, "FIRST SEEN", "LAST SEEN"]
    return _table([head] + [
        [str(s["id"]), str(s["count"]), str(s["votes"]),
         "pinned" if s["pinned"] else "template" if s["established"] else "",
         *([s["project"], s["sequence_name"]] if names else []),
         *(fmt(s["params"][p], p) for p in _SHOWN_PARAMS),
         _day(s["first_seen"]), _day(s["last_seen"])]
        for s in sets
    ])


def _day(stored: str | None) -> str:
    """A stored acquisition time as the table shows it: "2026-11-24 10:15"."""
    from mrqart.rules.templates import acquired_at

    iso = acquired_at(stored)
    return "" if iso is None else iso[:16].replace("T", " ")


def _who(args: argparse.Namespace) -> str:
    import getpass

    return args.by or getpass.getuser()


def _all_sets(store: BaseStore) -> list[dict[str, Any]]:
    """Every set of every template that has competitors, the template first."""
    return [s for t in store.templates() if t["n_sets"] > 1
            for s in store.param_sets(t["project"], t["sequence_name"])]


@_database_errors
def cmd_templates(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        if args.action is None:
            return _print_sets(args, store.templates(), names=True,
                               empty="no templates yet: 'mrqart import ARCHIVE' learns them")
        if args.action == "sets":
            if (args.project is None) != (args.sequence is None):
                print("mrqart templates sets: give both PROJECT and SEQUENCE, or neither",
                      file=sys.stderr)
                return 2
            if args.project is None:
                return _print_sets(args, _all_sets(store), names=True,
                                   empty="no template has competing parameter sets")
            return _print_sets(args, store.param_sets(args.project, args.sequence), names=False,
                               empty=f"no parameter sets for {args.project} / {args.sequence}")
        if args.action == "history":
            return _print_history(args, store.history(args.project, args.sequence))
        if args.action == "accept":
            return _accept(args, store)
        if args.action in ("export", "import"):
            return _template_file(args, store)
        if args.action == "unpin":
            had = store.unpin(args.project, args.sequence, by=_who(args))
            print(f"unpinned {args.project} / {args.sequence}" if had
                  else f"{args.project} / {args.sequence} was not pinned")
            return 0
        return _pin(args, store)


def _print_sets(args: argparse.Namespace, sets: list[dict[str, Any]], *, names: bool,
                empty: str) -> int:
    if args.json:
        print(json.dumps(sets, indent=2))
    elif sets:
        print(_sets_table(sets, names=names))
    else:
        print(empty)
    return 0


def _print_history(args: argparse.Namespace, history: list[dict[str, Any]]) -> int:
    from mrqart.rules.check import fmt

    if args.json:
        print(json.dumps(history, indent=2))
        return 0
    if not history:
        print(f"no template history for {args.project} / {args.sequence}")
        return 0
    print(_table([["AT", "KIND", "BY", "SET", *_SHOWN_PARAMS, "REASON"]] + [
        [h["at"], h["kind"], h["by"], "" if h["set_id"] is None else str(h["set_id"]),
         *(fmt(h["params"][p], p) if h["params"] else "" for p in _SHOWN_PARAMS),
         h["reason"] + (f" (series {h['series_number']} of {h['session']})"
                        if h["session"] else "")]
        for h in history
    ]))
    return 0


def _accept(args: argparse.Namespace, store: BaseStore) -> int:
    session, _, number = args.series.rpartition(":")
    if not session or not number.lstrip("-").isdigit():
        print(f"mrqart templates accept: {args.series!r}: give SESSION:NUMBER", file=sys.stderr)
        return 2
    if not args.reason.strip():
        print("mrqart templates accept: give a --reason", file=sys.stderr)
        return 2
    try:
        change = store.accept(session, int(number), reason=args.reason.strip(), by=_who(args))
    except LookupError as e:
        print(f"mrqart templates accept: {e}", file=sys.stderr)
        return 2
    print(f"accepted series {number} of {session} as the template of {change['project']} / "
          f"{change['sequence_name']} (set {change['set_id']}), by {change['by']}: "
          f"{change['reason']}")
    return 0


def _template_file(args: argparse.Namespace, store: BaseStore) -> int:
    import tomllib

    from mrqart.rules.check import DEFAULT_RULES, load_rules
    from mrqart.rules.template_file import TemplateFileError, from_document, to_document

    if args.action == "export":
        try:
            rules = load_rules(args.rules) if args.rules else DEFAULT_RULES
        except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
            print(f"mrqart templates export: rules: {e}", file=sys.stderr)
            return 2
        templates = store.project_templates(args.project)
        if not templates:
            print(f"mrqart templates export: no templates for {args.project}", file=sys.stderr)
            return 2
        print(json.dumps(to_document(args.project, templates, rules), indent=2))
        return 0
    try:
        entries = from_document(json.loads(args.file.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TemplateFileError) as e:
        print(f"mrqart templates import: {args.file}: {e}", file=sys.stderr)
        return 2
    with store.batch():  # all of the file or nothing
        for entry in entries:
            store.adopt(entry.params, entry.sequence_name, by=_who(args),
                        reason=f"imported from {args.file.name}", history=entry.history,
                        votes=entry.votes)
    print(f"imported {len(entries)} templates from {args.file}")
    return 0


def _pin(args: argparse.Namespace, store: BaseStore) -> int:
    from mrqart.headers import Unreadable, read_header

    header = None
    if args.from_file is not None:
        header = read_header(args.from_file)
        if isinstance(header, Unreadable):
            print(f"mrqart templates pin: {header.path}: {header.reason}", file=sys.stderr)
            return 2
    try:
        set_id = store.pin(args.project, args.sequence, set_id=args.set_id, header=header,
                           by=_who(args))
    except (LookupError, ValueError) as e:
        print(f"mrqart templates pin: {e}", file=sys.stderr)
        return 2
    print(f"pinned parameter set {set_id} as the template of {args.project} / {args.sequence}")
    return 0


def parse_series_list(text: str) -> list[dict[str, Any]]:
    """``"localizer:3,rest"`` -> ``[{"sequence_name": "localizer", "n_files": 3},
    {"sequence_name": "rest", "n_files": None}]``; ArgumentTypeError when malformed.

    Only a trailing ``:N`` of digits is a count, so a description may hold a colon.
    """
    expected = []
    for item in text.split(","):
        name, sep, count = item.strip().rpartition(":")
        if not (sep and count.isdigit()):
            name, count = item.strip(), ""
        if not name or count == "0":
            raise argparse.ArgumentTypeError(
                f"{item.strip()!r}: expected NAME or NAME:N with N a positive number of files")
        expected.append({"sequence_name": name, "n_files": int(count) if count else None})
    return expected


@_database_errors
def cmd_protocol(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        if args.action == "unpin":
            had = store.unpin_protocol(args.project)
            print(f"unpinned the protocol of {args.project}: it is learnt from history again"
                  if had else f"{args.project} had no pinned protocol")
            return 0
        if args.action == "pin":
            expected = args.series
            if args.from_session is not None:
                expected = [{"sequence_name": name, "n_files": n}
                            for name, n in store.session_series(args.from_session)]
                if not expected:
                    print(f"mrqart protocol pin: no series recorded for session "
                          f"{args.from_session}", file=sys.stderr)
                    return 2
            store.pin_protocol(args.project, expected, by=_who(args))
            print(f"pinned {len(expected)} series as the protocol of {args.project}")
            return 0
        protocol = store.protocol(args.project)
        pinned = store.protocol_pinned_by(args.project) if protocol.pinned else None
        n_sessions = 0 if protocol.pinned else len(store.recent_sessions(args.project))
    if args.json:
        print(json.dumps({**protocol.to_json(), "n_sessions": n_sessions}, indent=2))
        return 0
    if not protocol.expected:
        print(f"no protocol learnt for {args.project} yet: no series in at least half of "
              f"its {n_sessions} recent sessions; 'mrqart protocol pin' sets one")
        return 0
    source = (f"pinned by {pinned['by'] or 'an operator'} on {pinned['at'] or '?'}" if pinned
              else f"learnt from its {n_sessions} most recent sessions")
    print(f"protocol of {args.project}, {source}:")
    print(_table([["#", "SERIES", "FILES"]] + [
        [str(i), e.sequence_name, "any" if e.n_files is None else str(e.n_files)]
        for i, e in enumerate(protocol.expected, start=1)
    ]))
    return 0


@_database_errors
def cmd_report(args: argparse.Namespace) -> int:
    import tomllib

    from mrqart.report import Period, build_report, load_exclusions
    from mrqart.report.render import to_html, to_json, to_text
    from mrqart.rules.check import DEFAULT_RULES, load_rules

    try:
        period = Period.parse(args.day, args.since)
        rules = DEFAULT_RULES if args.rules is None else load_rules(args.rules)
        exclusions = load_exclusions(args.rules)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        print(f"mrqart report: {e}", file=sys.stderr)
        return 2
    if args.mail:
        return _mail_report(args, period, rules, exclusions)
    with _open_store(args.db) as store:
        report = build_report(store, period, project=args.project, rules=rules,
                              exclusions=exclusions).with_phi(args.phi or "show")
    render = {"html": to_html, "json": to_json, "text": to_text}[args.format]
    print(render(report), end="" if args.format != "json" else "\n")
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    import getpass

    from mrqart.live.auth import Account, UsersFileError, hash_password, load_users, save_account

    path = args.users or default_users()
    try:
        if args.action == "list":
            accounts = load_users(path) if path.exists() else {}
            if not accounts:
                print(f"no accounts in {path}: 'mrqart users add NAME --role operator' adds one")
                return 0
            print(_table([["NAME", "ROLE", "PHI", "PASSWORD"]] + [
                [a.name, a.role, a.phi or "by role", "set" if a.password else "none (proxy only)"]
                for a in accounts.values()]))
            return 0
        password = None
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        elif not args.no_password:
            password = getpass.getpass(f"password for {args.name}: ")
            if getpass.getpass("again: ") != password:
                print("mrqart users add: the passwords differ; nothing changed", file=sys.stderr)
                return 2
        if password is not None and len(password) < MIN_PASSWORD:
            print(f"mrqart users add: use at least {MIN_PASSWORD} characters", file=sys.stderr)
            return 2
        path.parent.mkdir(parents=True, exist_ok=True)
        save_account(path, Account(args.name, args.role,
                                   hash_password(password) if password is not None else None,
                                   args.phi))
    except UsersFileError as error:
        print(f"mrqart users: {error}", file=sys.stderr)
        return 2
    print(f"{args.name}: {args.role} in {path}")
    return 0


@_database_errors
def cmd_purge(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        n = store.purge_identifying(args.before)
    print(f"removed patient names, operators and comments from {n} series acquired before "
          f"{args.before[:4]}-{args.before[4:6]}-{args.before[6:]}")
    return 0


def _mail_report(args: argparse.Namespace, period: Any, rules: Any, exclusions: Any) -> int:
    import smtplib
    import tomllib

    from mrqart.report import Reader, mail
    from mrqart.report.pages import report_plots

    try:
        settings = mail.load_settings(args.mail_config, smtp=args.smtp)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        print(f"mrqart report: mail settings: {e}", file=sys.stderr)
        return 2
    with _open_store(args.db) as store:
        reader = Reader(store, rules=rules, exclusions=exclusions)
        report = reader.report(period, args.project).with_phi(args.phi or "initials")
        images = [mail.Image(p.project, p.caption, p.data)
                  for p in report_plots(reader, report, "png")]
    try:
        messages = mail.messages(report, settings, images)
        mail.send(messages, settings)
    except (mail.MailSettingsError, smtplib.SMTPException, OSError) as e:
        print(f"mrqart report: mail to {settings.host}:{settings.port}: {e}", file=sys.stderr)
        return 1
    for m in messages:
        print(f"sent {m['Subject']!r} to {m['To']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # 'mrqart DIR...' is short for 'mrqart run DIR...'
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "run")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "db", "unset") is None:
        args.db = default_db()
    try:
        return args.func(args)
    except BrokenPipeError:
        # `mrqart templates | head`: the reader left; say nothing more, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
