"""The service under two environmental faults (issue 10), end to end on the real service.

1. Verdict latency while another process holds the sqlite write lock (a backup, or
   ``mrqart import`` beside the service): write of a series' first file to its "new"
   message, N series without the lock and N with it, in alternating blocks of 20;
   p50 and p99 of each.
2. Peak memory while a 512 MB file is dropped into the watched tree: VmHWM at idle, then
   after the file's verdict (the header reader reads a bounded prefix).

    python bench/bench_faults.py [--series N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from results import record

from mrqart import synth
from tests.faultkit import start_service

SESSION = "20261124.BENCH.26.11.24_10_00_00_DST_1.2.3"
#: Series per block; blocks with and without the lock alternate.
BLOCK = 20


async def verdict_ms(ws: Any, path: Path, blob: bytes, key: str) -> float:
    start = time.monotonic()
    await trio.to_thread.run_sync(path.write_bytes, blob)
    while True:
        message = json.loads(await ws.get_message())
        if message["type"] == "new" and message["series"] == key:
            return (time.monotonic() - start) * 1e3


def hold_write_lock(db: Path) -> subprocess.Popen[str]:
    """Another process takes the write lock and keeps it until its stdin closes."""
    script = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
              " c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.read()")
    locker = subprocess.Popen([sys.executable, "-c", script, str(db)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
    return locker


def percentiles(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100)
    return f"p50 {statistics.median(ms):.2f} ms, p99 {q[98]:.2f} ms, max {max(ms):.2f} ms"


async def bench(n: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        session = tmp / "scanner" / SESSION
        session.mkdir(parents=True)
        db = tmp / "db.sqlite"
        blobs = []
        for i in range(1, 2 * n + 3):
            synth.write_dicom(tmp / "blob.dcm", SeriesNumber=i)
            blobs.append((tmp / "blob.dcm").read_bytes())
        service = await start_service(tmp / "scanner", db, tmp / "log")
        study = synth.DEFAULT_FIELDS["StudyUID"]
        try:
            async with open_websocket_url(service.url.replace("http", "ws") + "/ws") as ws:
                async def one(i: int) -> float:
                    return await verdict_ms(ws, session / f"001_{i:06d}_000001.dcm",
                                            blobs[i - 1], f"{study}:{i}")

                await one(1)  # the session starts
                # alternate blocks with and without the lock, so that the shared machine's
                # load changes weigh on both alike
                free: list[float] = []
                locked: list[float] = []
                numbers = iter(range(2, 2 * n + 2))
                for _ in range(n // BLOCK):
                    free += [await one(next(numbers)) for _ in range(BLOCK)]
                    locker = await trio.to_thread.run_sync(hold_write_lock, db)
                    try:
                        locked += [await one(next(numbers)) for _ in range(BLOCK)]
                    finally:
                        await trio.to_thread.run_sync(locker.communicate, "")
                idle = service.vm_kb()
                big = session / f"001_{2 * n + 2:06d}_000001.dcm"
                synth.write_dicom(big, SeriesNumber=2 * n + 2)
                with big.open("r+b") as f:
                    f.truncate(512 * 2**20)
                start = time.monotonic()
                while True:
                    message = json.loads(await ws.get_message())
                    if message.get("series") == f"{study}:{2 * n + 2}":
                        break
                big_ms = (time.monotonic() - start) * 1e3
                peak = service.vm_kb()
        finally:
            await service.stop()
    return [
        f"verdict latency, {n} series, no lock: {percentiles(free)}",
        (f"verdict latency, {n} series, another process holding the sqlite write lock: "
         f"{percentiles(locked)} (the store's busy timeout is 5 s: a verdict that waited "
         "for the store would take that long)"),
        (f"512 MB file dropped into the tree: peak RSS (VmHWM) {idle['VmHWM'] / 1024:.1f} MB "
         f"at idle -> {peak['VmHWM'] / 1024:.1f} MB after its verdict "
         f"(+{(peak['VmHWM'] - idle['VmHWM']) / 1024:.1f} MB, target < 20 MB); "
         f"verdict {big_ms:.0f} ms after the write"),
        f"load average {os.getloadavg()[0]:.1f} (machine shared)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=200)
    args = parser.parse_args()
    record("faults (bench_faults.py)", trio.run(bench, args.series))


if __name__ == "__main__":
    main()
