"""Configuration of one mrqart process and its default paths.

Imported by the command line and by the running service alike, so neither has to
import the other for a default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mrqart.rules.protocol import FINISHED_AFTER_MINUTES


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


def default_db() -> Path:
    """The per-user database: ``$MRQART_DB``, else ``$XDG_DATA_HOME/mrqart/mrqart.sqlite``."""
    if env := os.environ.get("MRQART_DB"):
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "mrqart" / "mrqart.sqlite"


@dataclass(frozen=True)
class Config:
    """Everything one mrqart process needs to know."""

    roots: tuple[Path, ...]
    db: Path | str
    host: str = "127.0.0.1"
    port: int = 8080
    rules: Path | None = None
    pattern: str | None = None
    static_dir: Path = STATIC_DIR
    #: Deliver files of today's session directories found at start (catch up after a restart).
    catch_up: bool = True
    flush_seconds: float = FLUSH_SECONDS
    #: A session with no new file for this long is finished (missing series reported).
    finish_minutes: float = FINISHED_AFTER_MINUTES
