"""Helpers for the fault-injection tests: the real service as a subprocess (optionally
without root's power to read any file), its log, its memory, and polling its HTTP view.

Shared test helpers (free_port, http_json, next_message, learn_template) live in
tests/test_service.py and are imported from there.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from tests.test_service import free_port, http_json

T = TypeVar("T")
#: A churning browser stays connected HOLD_S, then away AWAY_S: 100 of them make ~200
#: connections/s with ~10 connected at a time (all 100 always connected would cost the
#: service 100 frames per message, which is its fan-out capacity, not a fault).
HOLD_S = 0.05
AWAY_S = 0.45

#: Run a command as root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: file modes
#: apply to it, as they would to the unprivileged user the service runs as in production.
_DROP = "-dac_override,-dac_read_search"
NO_DAC = ["setpriv", f"--inh-caps={_DROP}", f"--bounding-set={_DROP}"]
HAVE_SETPRIV = shutil.which("setpriv") is not None


@dataclass
class Service:
    """A ``python -m mrqart run`` subprocess; its log (stderr) goes to ``log``."""

    proc: subprocess.Popen[str]
    url: str
    log: Path

    def log_lines(self, needle: str) -> list[str]:
        return [ln for ln in self.log.read_text().splitlines() if needle in ln]

    def vm_kb(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak) of the process, in kB, from /proc/PID/status."""
        return vm_kb(self.proc.pid)

    async def health(self) -> dict[str, Any]:
        return await http_json(self.url + "/healthz")

    async def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await trio.to_thread.run_sync(self.proc.wait, 10)


def vm_kb(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        k: int(v.split()[0])
        for k, v in (ln.split(":", 1) for ln in status.splitlines())
        if k in ("VmRSS", "VmHWM")
    }


async def start_service(
    root: Path, db: Path, log: Path, *, prefix: list[str] | None = None, args: tuple[str, ...] = (),
    mrqart: tuple[str, ...] = (sys.executable, "-m", "mrqart"), **popen: Any,
) -> Service:
    """Start the service on a free port; returns once it printed its URL (watches in place).

    ``mrqart`` is the command (an installed console script works too); ``popen`` goes to
    subprocess.Popen (cwd, env)."""
    port = free_port()
    argv = [*(prefix or []), *mrqart, "run", str(root),
            "--port", str(port), "--db", str(db), *args]
    with log.open("w") as err:
        proc = await trio.to_thread.run_sync(lambda: subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, text=True, **popen))
    assert proc.stdout is not None
    line = await trio.to_thread.run_sync(proc.stdout.readline)
    if not line.startswith("mrqart: open "):
        proc.kill()
        raise AssertionError(f"the service did not start: {line!r}\n{log.read_text()}")
    return Service(proc, line.split()[-1], log)


async def poll(check: Callable[[], Awaitable[T | None]], *, every: float = 0.05) -> T:
    """Await ``check()`` until it returns something truthy (the caller holds the deadline).

    Polling another process's view of its own progress, never ordering our own steps.
    """
    while True:
        value = await check()
        if value:
            return value
        await trio.sleep(every)


def series_rows(db: Path) -> list[tuple[str, int, int]]:
    """(session, series_number, n_files) of every series row, read with plain sqlite."""
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT session, series_number, n_files FROM series WHERE source = 'live' "
            "ORDER BY session, series_number"
        ).fetchall()


async def churn(url: str, clients: int) -> None:
    """``clients`` browsers that connect, read for HOLD_S, disconnect, wait AWAY_S and
    connect again (also after a refusal: all from one address, they meet the service's
    per-address cap), until stdin closes; prints the number of connections made."""
    from trio_websocket import ConnectionRejected, open_websocket_url

    connects = 0

    async def one() -> None:
        nonlocal connects
        while True:
            try:
                async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                    with trio.move_on_after(HOLD_S):
                        while True:
                            await ws.get_message()
            except ConnectionRejected as refused:
                # past the per-address cap (live/guard.py): like the page, try again later
                assert refused.status_code == 429, refused
            else:
                connects += 1
            await trio.sleep(AWAY_S)

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one)
        await trio.to_thread.run_sync(sys.stdin.read)  # the test closes our stdin to stop us
        nursery.cancel_scope.cancel()
    print(connects, flush=True)


def start_churn(url: str, clients: int = 100) -> subprocess.Popen[str]:
    """The churning browsers in their own process, so they do not slow the test's own
    measuring client; stop with ``stop_churn``."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faultkit", url, str(clients)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def stop_churn(proc: subprocess.Popen[str]) -> int:
    """Stop the churning browsers; how many connections they made."""
    out, _ = proc.communicate("", timeout=10)
    return int(out.strip() or 0)


if __name__ == "__main__":
    trio.run(churn, sys.argv[1], int(sys.argv[2]))
