"""The long run: 100,000 files through the live service, watching its memory.

The real service runs in a subprocess (``python -m mrqart run``, via bench_service's
start_service). A writer thread writes 10 sessions of 10 series x 1,000 scanner-named
files as fast as the disk allows, staying at most one session ahead of what the service
has counted; a session directory is deleted once counted and the next one is being
written (as the site's archive job would), so the disk holds about two sessions. One
WebSocket client reads every message, like an open console page (reconnecting if the
hub drops it). RSS is sampled from /proc/PID/status (VmRSS, VmHWM) as files are counted.

    python bench/bench_soak.py [--sessions N]

Prints files/s, RSS at 10%, 50% and 100% of the files, peak RSS (VmHWM), and checks
that every file was counted exactly once; records them in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_service import start_service
from results import record

from mrqart import synth
from tests.faultkit import vm_kb
from tests.test_service import http_json

SERIES_PER_SESSION = 10
FILES_PER_SERIES = 1_000
STATION = "AWP167046"  # synth's default (0008,1010) StationName


def session_dir(root: Path, k: int) -> Path:
    return root / f"20261124.SOAK.{k:03d}"


def writer(root: Path, tmp: Path, sessions: int, counted: list[int], stop: threading.Event) -> None:
    """Write every session; stay at most one session ahead of ``counted[0]``."""
    per_session = SERIES_PER_SESSION * FILES_PER_SERIES
    for k in range(sessions):
        while counted[0] < (k - 1) * per_session and not stop.is_set():
            time.sleep(0.01)
        if k >= 2:
            shutil.rmtree(session_dir(root, k - 2))  # counted: archived away
        directory = session_dir(root, k)
        directory.mkdir()
        for series in range(1, SERIES_PER_SESSION + 1):
            sample = tmp / "sample.dcm"
            synth.write_dicom(sample, StudyUID=f"1.2.826.0.1.3680043.10.{k}",
                              SeriesNumber=series, AcqDate="20261124")
            blob = sample.read_bytes()
            for i in range(1, FILES_PER_SERIES + 1):
                if stop.is_set():
                    return
                (directory / f"001_{series:06d}_{i:06d}.dcm").write_bytes(blob)


async def browser(url: str, seen: dict[str, int]) -> None:
    """An open console page: reads every message, reconnects when dropped."""
    while True:
        try:
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                while True:
                    json.loads(await ws.get_message())
                    seen["messages"] += 1
        except ConnectionClosed:
            seen["reconnects"] += 1


async def soak(url: str, pid: int, root: Path, tmp: Path, sessions: int) -> list[str]:
    total = sessions * SERIES_PER_SESSION * FILES_PER_SERIES
    counted = [0]
    stop = threading.Event()
    marks = {int(total * f): f for f in (0.1, 0.5, 1.0)}
    rss_at: dict[float, int] = {}
    seen = {"messages": 0, "reconnects": 0}
    thread = threading.Thread(target=writer, args=(root, tmp, sessions, counted, stop))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(browser, url, seen)
        t0 = time.monotonic()
        thread.start()
        try:
            with trio.fail_after(600):
                while counted[0] < total:
                    await trio.sleep(0.2)
                    health = await http_json(url + "/healthz")
                    counted[0] = health["files_seen"]
                    for mark, fraction in marks.items():
                        if counted[0] >= mark and fraction not in rss_at:
                            rss_at[fraction] = vm_kb(pid)["VmRSS"]
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            await trio.to_thread.run_sync(thread.join)
        await trio.sleep(1.5)  # the last counts reach the browser and the store
        nursery.cancel_scope.cancel()
    health = await http_json(url + "/healthz")
    series = await http_json(f"{url}/api/stations/{STATION}/series")
    exact = health["files_seen"] == total and all(s["n_files"] == FILES_PER_SERIES for s in series)
    peak = vm_kb(pid)["VmHWM"]
    w = health["watcher"]
    return [
        (f"{total:,} files ({sessions} sessions x {SERIES_PER_SESSION} series x "
         f"{FILES_PER_SERIES:,}) in {elapsed:.1f} s: {total / elapsed:,.0f} files/s end to end"),
        ("RSS at 10% / 50% / 100% of the files: "
         + " / ".join(f"{rss_at[f] / 1024:.1f} MB" for f in (0.1, 0.5, 1.0))),
        (f"peak RSS (VmHWM): {peak / 1024:.1f} MB (target < 150 MB); growth from 50% to 100%: "
         f"{(rss_at[1.0] - rss_at[0.5]) / 1024:+.1f} MB"),
        (f"every file counted exactly once: {exact} (files_seen {health['files_seen']:,}, "
         f"{len(series)} series); watcher overflows {w['overflows']}, rescans {w['rescans']}"),
        (f"browser: {seen['messages']:,} messages, dropped and reconnected {seen['reconnects']} "
         f"times (hub dropped_subscribers {health['hub']['dropped_subscribers']})"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10, help="sessions of 10,000 files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "scanner"
        root.mkdir()
        proc, url = start_service(root, Path(tmp) / "db.sqlite")
        try:
            lines = trio.run(soak, url, proc.pid, root, Path(tmp), args.sessions)
        finally:
            proc.terminate()
            proc.wait(10)
    record("soak (bench_soak.py)", lines)


if __name__ == "__main__":
    main()
