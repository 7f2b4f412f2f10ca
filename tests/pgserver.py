"""A throw-away PostgreSQL server for the tests, from Debian's postgresql package.

``initdb`` into a fresh directory, ``pg_ctl start`` listening on a loopback port with
the socket in that directory, trust authentication (loopback only), fsync off (a test
server: durability across a power cut is not what is tested). PostgreSQL refuses to
run as root, so when run as root (CI) the server runs as the ``postgres`` system user
the package creates (or ``nobody``), which owns the directory.

Command line (used by .ci/run)::

    python tests/pgserver.py start DIR   # prints the DSN
    python tests/pgserver.py stop DIR
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The DSN of the server the store tests use (.ci/run exports it).
DSN_VAR = "MRQART_TEST_PG"


def bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


@dataclass
class PgServer:
    """One PostgreSQL cluster in ``directory`` (data in ``directory/data``)."""

    directory: Path
    port: int = 0

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *argv: str | Path) -> list[str]:
        user = _run_as()
        prefix = ["runuser", "-u", user, "--"] if user else []
        return [*prefix, *(str(a) for a in argv)]

    def init(self) -> None:
        """initdb into the directory (created, and owned by the server's user)."""
        bins = bindir()
        if bins is None:
            raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql")
        self.directory.mkdir(parents=True, exist_ok=True)
        user = _run_as()
        if user:
            shutil.chown(self.directory, user)
        subprocess.run(self._cmd(bins / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                                 "-E", "UTF8", "--no-sync"),
                       check=True, capture_output=True, text=True)

    def start(self) -> None:
        """Start the server (on ``port``, a free one when 0) and wait until it answers."""
        bins = bindir()
        assert bins is not None
        if not self.port:
            self.port = _free_port()
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.directory} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   # two batches deadlocking (tests do it on purpose) cost this long
                   "-c deadlock_timeout=100ms")
        subprocess.run(self._cmd(bins / "pg_ctl", "-D", self.data, "-w", "-t", "60", "-o", options,
                                 "-l", self.directory / "log", "start"),
                       check=True, capture_output=True, text=True)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no checkpoint, clients cut)."""
        bins = bindir()
        assert bins is not None
        subprocess.run(self._cmd(bins / "pg_ctl", "-D", self.data, "-w", "-m", mode, "stop"),
                       check=True, capture_output=True, text=True)


def new_server() -> PgServer:
    """A started server in a fresh directory under /tmp (the server's user must reach
    it, and pytest's tmp_path is private to root)."""
    server = PgServer(Path(tempfile.mkdtemp(prefix="mrqart-pg-")))
    server.init()
    server.start()
    return server


def main(argv: list[str]) -> int:
    action, directory = argv
    server = PgServer(Path(directory))
    if action == "start":
        server.init()
        server.start()
        print(server.dsn)
    elif action == "stop":
        server.stop()
    else:
        raise SystemExit(f"usage: {sys.argv[0]} start|stop DIR")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
