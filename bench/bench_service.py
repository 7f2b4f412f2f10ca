"""Live service latency and throughput, measured end to end with a real WebSocket client.

The real service runs in a subprocess (``python -m mrqart run``) on a scratch directory.
A writer thread here writes scanner-named DICOM files and notes time.monotonic() right
after each close (CLOCK_MONOTONIC is system-wide, so both processes share it); the
WebSocket client notes when the "update" for the N-th file of the series arrives.

    python bench/bench_service.py [--quick]

Prints p50/p99 close-to-message latency at 100 and 1,000 files/s, and the highest rate
at which every file was still counted; records them in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record

from mrqart import synth

SESSION = "20261124.BENCH.26.11.24_10_00_00_DST_1.2.3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_series(directory: Path, series: int, blob: bytes, n: int, rate: float | None,
                 closed: list[float]) -> None:
    """Write n files of one series, paced at ``rate`` files/s (None: as fast as possible)."""
    start = time.monotonic()
    for i in range(1, n + 1):
        if rate:
            delay = start + (i - 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        with open(directory / f"001_{series:06d}_{i:06d}.dcm", "wb") as f:
            f.write(blob)
        closed.append(time.monotonic())


async def run_case(url: str, directory: Path, series: int, blob: bytes, n: int,
                   rate: float | None, timeout: float) -> dict[str, float]:
    """One series of n files; returns latency percentiles, write rate and files counted."""
    closed: list[float] = []
    received: dict[int, float] = {}
    async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
        writer = threading.Thread(
            target=write_series, args=(directory, series, blob, n, rate, closed)
        )
        writer.start()
        try:
            with trio.move_on_after(timeout):
                while n not in received:
                    message = json.loads(await ws.get_message())
                    now = time.monotonic()
                    if not message.get("series", "").endswith(f":{series}"):
                        continue
                    count = 1 if message["type"] == "new" else message["content"]
                    received.setdefault(count, now)
        finally:
            await trio.to_thread.run_sync(writer.join)
    # counts come coalesced under load: file i is shown by the first message counting >= i
    shown = sorted(received.items())
    lat = sorted((next(at for count, at in shown if count >= i) - t) * 1e3
                 for i, t in enumerate(closed, start=1) if i <= max(received, default=0))
    write_rate = n / (closed[-1] - closed[0]) if n > 1 else 0.0
    return {
        "counted": float(max(received, default=0)),
        "p50": statistics.median(lat) if lat else float("nan"),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan"),
        "write_rate": write_rate,
        "delivered_rate": n / (max(received.values()) - closed[0]) if received else 0.0,
    }


def start_service(root: Path, db: Path) -> tuple[subprocess.Popen[str], str]:
    """``python -m mrqart run`` on a free port; returns the process and its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mrqart", "run", str(root), "--port", str(port),
         "--db", str(db), "--no-catch-up"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("mrqart: open "):
            return proc, line.split()[-1]
    raise SystemExit("the service did not start")


async def bench(url: str, session: Path, blob: bytes, quick: bool) -> list[str]:
    lines: list[str] = []
    series = 1
    for rate, seconds in ((100, 3 if quick else 10), (1000, 2 if quick else 5)):
        series += 1
        n = int(rate * seconds)
        r = await run_case(url, session, series, blob, n, rate, 30)
        lines.append(
            f"latency at {rate:,} files/s ({n:,} files): p50 {r['p50']:.2f} ms, "
            f"p99 {r['p99']:.2f} ms, counted {int(r['counted']):,}/{n:,}"
        )
    best = 0.0
    for rate in (2000, 5000, 10000, None):
        series += 1
        n = 4000 if quick else 10_000
        r = await run_case(url, session, series, blob, n, rate, 60)
        label = f"{rate:,} files/s" if rate else "unpaced"
        lines.append(
            f"sustained {label}: written at {r['write_rate']:,.0f} files/s, "
            f"delivered at {r['delivered_rate']:,.0f} files/s, "
            f"counted {int(r['counted']):,}/{n:,}, p99 {r['p99']:.1f} ms"
        )
        if int(r["counted"]) == n:
            best = max(best, min(r["write_rate"], r["delivered_rate"]))
    lines.append(f"highest sustained rate with every file counted: {best:,.0f} files/s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args()
    # tmpfs when there is one: the figures are mrqart's, not the disk's writeback
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        session = Path(tmp) / "scanner" / SESSION
        session.mkdir(parents=True)
        synth.write_dicom(Path(tmp) / "sample.dcm")
        blob = (Path(tmp) / "sample.dcm").read_bytes()
        proc, url = start_service(Path(tmp) / "scanner", Path(tmp) / "db.sqlite")
        try:
            lines = trio.run(bench, url, session, blob, args.quick)
        finally:
            proc.terminate()
            proc.wait(5)
    record("live service (bench_service.py)",
           [*lines, (f"files written to {scratch or tempfile.gettempdir()}, "
                    f"{len(blob):,} bytes each, by a writer thread in the benchmark process")])


if __name__ == "__main__":
    main()
