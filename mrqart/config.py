"""Configuration of one mrqart process and its default paths.

Imported by the command line and by the running service alike, so neither has to
import the other for a default.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mrqart.rules.protocol import FINISHED_AFTER_MINUTES
from mrqart.store import is_postgres


def _static_dir() -> Path:
    """The page's files: ``$MRQART_STATIC``; else ``mrqart/static/``, where the wheel
    installs them (setup.py maps the repository's ``static/`` there); else, in a
    checkout or an editable install, the ``static/`` beside the package."""
    if env := os.environ.get("MRQART_STATIC"):
        return Path(env)
    package = Path(__file__).resolve().parent
    installed = package / "static"
    return installed if installed.is_dir() else package.parent / "static"


#: The page's files (see _static_dir).
STATIC_DIR = _static_dir()
#: How often changed file counts are written to the store (and once more at shutdown).
FLUSH_SECONDS = 1.0
#: Where the DICOM node writes by default: this sub-directory of the first watched directory.
DICOM_SUBDIR = "dicomnode"


def db_location(text: str) -> Path | str:
    """A ``--db`` value: a PostgreSQL URL (``postgresql://...``) as given, else the path
    of a sqlite file."""
    return text if is_postgres(text) else Path(text)


def prepare_db(db: Path | str) -> None:
    """Create a sqlite file's directory (a PostgreSQL database is the server's business)."""
    if isinstance(db, Path):
        db.parent.mkdir(parents=True, exist_ok=True)


def default_db() -> Path | str:
    """The per-user database: ``$MRQART_DB``, else ``$XDG_DATA_HOME/mrqart/mrqart.sqlite``."""
    if env := os.environ.get("MRQART_DB"):
        return db_location(env)
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "mrqart" / "mrqart.sqlite"


def default_outbox(db: Path | str, roots: tuple[Path, ...]) -> Path:
    """Where a service whose store is a remote database keeps the writes waiting for it:
    beside the sqlite default, one file per database and watched directories (two
    services on one host keep theirs apart)."""
    digest = hashlib.sha1(repr((str(db), [str(r) for r in roots])).encode()).hexdigest()[:12]
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "mrqart" / f"outbox-{digest}.sqlite"


def default_users() -> Path:
    """The users file: ``$MRQART_USERS``, else ``$XDG_CONFIG_HOME/mrqart/users.toml``."""
    if env := os.environ.get("MRQART_USERS"):
        return Path(env)
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "mrqart" / "users.toml"


@dataclass(frozen=True)
class Config:
    """Everything one mrqart process needs to know."""

    roots: tuple[Path, ...]
    db: Path | str
    host: str = "127.0.0.1"
    port: int = 8080
    rules: Path | None = None
    #: File names taken as DICOM by name (a regex or globs; see ingest.watcher.NameFilter)
    pattern: str | tuple[str, ...] | None = None
    static_dir: Path = STATIC_DIR
    #: Deliver files of today's session directories found at start (catch up after a restart).
    catch_up: bool = True
    flush_seconds: float = FLUSH_SECONDS
    #: A session with no new file for this long is finished (missing series reported).
    finish_minutes: float = FINISHED_AFTER_MINUTES
    #: List every station of the (shared) database on /api/stations, not only this one's.
    all_stations: bool = False
    #: A remote database's waiting writes (default: config.default_outbox).
    outbox: Path | None = None
    #: The DICOM node (C-STORE SCP, mrqart.ingest.dicomnode) listens here on ``host``;
    #: None: no node.
    dicom_port: int | None = None
    ae_title: str = "MRQART"
    #: The node's receive directory; None: ``DICOM_SUBDIR`` of the first root.
    dicom_dir: Path | None = None
    #: Calling AE titles and/or peer addresses that may send (dicomnode.parse_allow);
    #: empty: everyone, allowed only when ``host`` is loopback.
    dicom_allow: tuple[str, ...] = ()

    # -- access (README "Security"; mrqart.live.auth) --
    #: The users file (TOML, scrypt hashes); None: no accounts.
    users: Path | None = None
    #: Reverse proxies whose ``proxy_header`` names an authenticated user.
    trust_proxy: tuple[str, ...] = ()
    proxy_header: str = "X-Remote-User"
    #: Host names browsers use besides the bound one and the loopback names.
    allowed_hosts: tuple[str, ...] = ()
    #: Other origins whose pages may open /ws and send changes (e.g. a portal).
    allowed_origins: tuple[str, ...] = ()
    #: Serve anyone without accounts, even when reachable from other machines.
    no_auth: bool = False
    #: show | initials | hide for everyone (an account's own setting wins); None: by role.
    phi: str | None = None
    #: A login lasts this long after its last use.
    session_minutes: float = 8 * 60.0
    certfile: Path | None = None
    keyfile: Path | None = None

    @property
    def receive_dir(self) -> Path:
        return self.dicom_dir if self.dicom_dir is not None else self.roots[0] / DICOM_SUBDIR

    @property
    def watch_roots(self) -> tuple[Path, ...]:
        """The directories the watcher follows: the roots, and the DICOM node's receive
        directory when it lies outside them (it must exist)."""
        if self.dicom_port is None or any(
            self.receive_dir.resolve().is_relative_to(root.resolve()) for root in self.roots
        ):
            return self.roots
        return (*self.roots, self.receive_dir)
