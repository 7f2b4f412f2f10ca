"""Command line: ``mrqart DIR...`` runs the live service; subcommands do the rest.

Each subcommand is one ``cmd_<name>(args) -> int`` function; this module parses
arguments and prints, the work lives in the modules named in each function.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

SUBCOMMANDS = ("run", "simulate", "import", "check", "templates")


def default_db() -> Path:
    """The per-user database: ``$MRQART_DB``, else ``$XDG_DATA_HOME/mrqart/mrqart.sqlite``."""
    if env := os.environ.get("MRQART_DB"):
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "mrqart" / "mrqart.sqlite"


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db", type=Path, default=None,
        help=f"sqlite database (default: {default_db()}; env MRQART_DB)",
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
    p.add_argument("--no-catch-up", action="store_true",
                   help="do not deliver files already in today's session directories at start")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_db(p)
    p.set_defaults(func=cmd_run)

    # --- simulate: the synthetic scanner (owner: synth) ----------------------
    p = sub.add_parser("simulate", help="write a realistic synthetic session into DIR (demo, tests, benchmarks)")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.set_defaults(func=cmd_simulate)

    # --- import / check / templates (owner: store, check) --------------------
    p = sub.add_parser("import", help="learn templates from archived DICOM directories")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    _add_db(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("check", help="check DICOM files against the templates; exit 1 if any does not conform")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_db(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("templates", help="list templates, or pin one")
    _add_db(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_templates)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from mrqart import service

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for d in args.dirs:
        if not d.is_dir():
            print(f"mrqart: {d} is not a directory (give the directory the scanner writes into)",
                  file=sys.stderr)
            return 2
    args.db.parent.mkdir(parents=True, exist_ok=True)
    config = service.Config(
        roots=tuple(args.dirs), db=args.db, host=args.host, port=args.port,
        rules=args.rules, catch_up=not args.no_catch_up,
    )
    try:
        trio.run(service.main, config)
    except (Exception, BaseExceptionGroup) as error:  # noqa: BLE001 - the one clear line
        cause = _first_leaf(error)
        logging.getLogger("mrqart").debug("traceback", exc_info=error)
        logging.getLogger("mrqart").critical("mrqart stopped: %s: %s", type(cause).__name__, cause)
        return 1
    return 0


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def cmd_simulate(args: argparse.Namespace) -> int:
    raise NotImplementedError


def cmd_import(args: argparse.Namespace) -> int:
    raise NotImplementedError


def cmd_check(args: argparse.Namespace) -> int:
    raise NotImplementedError


def cmd_templates(args: argparse.Namespace) -> int:
    raise NotImplementedError


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
    return args.func(args)
