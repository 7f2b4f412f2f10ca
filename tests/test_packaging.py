"""The page ships in the wheel: build it, install it into a fresh virtual environment,
start the installed ``mrqart`` outside the checkout and fetch every file of ``static/``."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from urllib.request import urlopen

import pytest
import trio

from tests.faultkit import start_service

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parent.parent


def run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in argv], check=False, cwd=cwd, capture_output=True, text=True,
                          env=_outside_env())
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _outside_env() -> dict[str, str]:
    """This environment without PYTHONPATH: nothing may come from the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MRQART_STATIC")}


def install_wheel(tmp: Path) -> Path:
    """Build the wheel from the checkout and install it alone into a new venv; its bin/.

    The venv reaches this interpreter's packages (trio, hypercorn...) through a .pth
    file, which is not a site directory: an editable mrqart there is not activated."""
    # from a copy: setuptools' build/ directory in the checkout would hide a packaging bug
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", "tests", "bench"))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", source, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("mrqart-*.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    purelib = Path(run(venv / "bin" / "python", "-c",
                       "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp).strip())
    deps = [*site.getsitepackages(), sysconfig.get_path("purelib")]
    (purelib / "deps.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(deps)))
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q",
        "--no-deps", "--no-index", wheel, cwd=tmp)
    return venv / "bin"


async def test_installed_wheel_serves_the_page(tmp_path: Path) -> None:
    bin_dir = await trio.to_thread.run_sync(install_wheel, tmp_path)
    where = run(bin_dir / "python", "-c",
                "import mrqart.config as c; print(c.__file__); print(c.STATIC_DIR)", cwd=tmp_path)
    module, static = where.split()
    assert Path(module).is_relative_to(tmp_path / "venv"), module  # the wheel's, not ours
    assert Path(static).is_relative_to(tmp_path / "venv"), static
    root = tmp_path / "scanner"
    root.mkdir()
    service = await start_service(root, tmp_path / "db.sqlite", tmp_path / "log",
                                  mrqart=(str(bin_dir / "mrqart"),), cwd=tmp_path,
                                  env=_outside_env())
    page = [p for p in (REPO / "static").rglob("*") if p.is_file()]
    assert any(p.suffix == ".js" for p in page) and any(p.suffix == ".css" for p in page)

    def fetch(path: str) -> bytes:
        with urlopen(service.url + path, timeout=5) as answer:
            return answer.read()

    try:
        with trio.fail_after(30):
            assert await trio.to_thread.run_sync(fetch, "/") == (REPO / "static" / "index.html").read_bytes()
            for file in page:
                rel = file.relative_to(REPO / "static").as_posix()
                assert await trio.to_thread.run_sync(fetch, f"/static/{rel}") == file.read_bytes(), rel
    finally:
        assert await service.stop() == 0
