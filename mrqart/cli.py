"""Command line: ``mrqart DIR...`` runs the live service; subcommands do the rest.

Each subcommand is one ``cmd_<name>(args) -> int`` function; this module parses
arguments and prints, the work lives in the modules named in each function.
"""

from __future__ import annotations

import argparse
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
    raise NotImplementedError


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
