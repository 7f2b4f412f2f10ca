"""Watcher throughput and close-to-delivery latency, with real inotify on a scratch dir.

    python bench/bench_watcher.py [--files N] [--rate R] [--seconds S]

1. Backlog drain: 8,000 files are written while the watcher cannot read, then timed
   from the moment it can: the watcher's own capacity, whatever the writer's speed.
2. Throughput: a writer writes N small scanner-named files as fast as it can;
   files/s delivered = N / (time the last FileReady is received - writer start).
   A writer faster than the watcher overflows the kernel queue; the rescan that
   follows is part of the figure (a "note:" line says so).
3. Latency: the writer paces R files/s for S seconds and notes time.monotonic() right
   after each close; the consumer notes it on receiving each FileReady
   (CLOCK_MONOTONIC is system-wide, so a writer process shares it).
2 and 3 run with the writer in a child process, as in production (the scanner's files
come from smbd), and again with a writer thread in the watcher's process: that
thread competes for the GIL, so a watcher waking up can wait up to the interpreter's
5 ms switch interval, which shows in the thread figures' p99.
Records the figures in bench/RESULTS.md (section "watcher").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # mrqart, uninstalled
sys.path.insert(0, str(Path(__file__).resolve().parent))  # results
from results import record

from mrqart.ingest.watcher import FileReady, Watcher

PAYLOAD = b"\0" * 1024
BACKLOG = 8000  # files: 16,000 events, under the default max_queued_events (16,384)


def write_files(paths: list[str], closed: list[float], rate: float | None) -> float:
    """Write each path (create, 1 KiB, close); closed[i] = monotonic() after the close.
    With `rate`, file i is written at start + i / rate (sleeps are fine: not async).
    Returns the start time."""
    start = time.monotonic()
    for i, path in enumerate(paths):
        if rate is not None:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, PAYLOAD)
        os.close(fd)
        closed[i] = time.monotonic()
    return start


def child_main(listing: str, rate: float | None) -> None:
    """The writer process: paths from `listing`, [start, *closed] as JSON on stdout."""
    paths = Path(listing).read_text().split("\n")
    closed = [0.0] * len(paths)
    start = write_files(paths, closed, rate)
    json.dump([start, *closed], sys.stdout)


async def write_blocking(paths: list[str], closed: list[float], rate: float | None) -> float:
    """Write while blocking the event loop: the watcher reads nothing until all files
    are written, so the kernel queue holds the whole backlog (keep it under
    max_queued_events / 2 files: each file queues IN_CREATE and IN_CLOSE_WRITE)."""
    write_files(paths, closed, rate)
    return time.monotonic()  # delivery is timed from the moment the watcher can read


async def write_in_thread(paths: list[str], closed: list[float], rate: float | None) -> float:
    return await trio.to_thread.run_sync(write_files, paths, closed, rate)


async def write_in_child(paths: list[str], closed: list[float], rate: float | None) -> float:
    listing = Path(paths[0]).parent.parent / "paths.txt"
    listing.write_text("\n".join(paths))
    argv = [sys.executable, __file__, "--child", str(listing), "--rate", str(rate or 0)]
    result = await trio.run_process(argv, capture_stdout=True)
    start, *closed[:] = json.loads(result.stdout)
    return start


# writes the files, fills `closed`, returns the time delivery is measured from
Writer = Callable[[list[str], list[float], float | None], Awaitable[float]]


@dataclass(frozen=True)
class Run:
    start: float  # writer start (for write_blocking: when the watcher may read)
    end: float  # last FileReady received
    closed: list[float]
    received: list[float]

    def delivered_rate(self) -> float:
        return len(self.closed) / (self.end - self.start)

    def writer_rate(self) -> float:
        return len(self.closed) / (max(self.closed) - self.start)

    def latencies_ms(self) -> list[float]:
        return [(r - c) * 1000 for r, c in zip(self.received, self.closed)]


async def run_once(n: int, rate: float | None, writer: Writer) -> Run:
    """Watch a scratch dir while `writer` writes n files; time every delivery."""
    with tempfile.TemporaryDirectory(prefix="mrqart-bench-") as root:
        session = Path(root, "session")
        session.mkdir()
        paths = [str(session / f"001_000017_{i:06d}.dcm") for i in range(n)]
        index = {path: i for i, path in enumerate(paths)}
        closed = [0.0] * n
        received = [0.0] * n
        watcher = Watcher([root])
        send, receive = trio.open_memory_channel[FileReady](1024)
        written = trio.Event()
        start = 0.0

        async def write() -> None:
            nonlocal start
            start = await writer(paths, closed, rate)
            written.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run, send)
            nursery.start_soon(write)
            for _ in range(n):
                file = await receive.receive()
                received[index[file.path]] = time.monotonic()
            end = time.monotonic()
            await written.wait()
            stats = watcher.statistics()
            nursery.cancel_scope.cancel()
        if stats.delivered != n or stats.overflows:
            print(f"  note: {stats}")
        return Run(start, end, closed, received)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 10) - 1]


async def main(args: argparse.Namespace) -> None:
    n_paced = int(args.rate * args.seconds)
    load_before = os.getloadavg()[0]
    drain = await run_once(BACKLOG, None, write_blocking)
    lines = [
        (
            f"backlog drain: {drain.delivered_rate():,.0f} files/s delivered ({BACKLOG:,} files "
            "already in the kernel queue when the watcher starts reading: its own capacity)"
        )
    ]
    for label, writer in [("writer process", write_in_child), ("writer thread", write_in_thread)]:
        fast = await run_once(args.files, None, writer)
        writer_rate, delivered_rate = fast.writer_rate(), fast.delivered_rate()
        ms = (await run_once(n_paced, args.rate, writer)).latencies_ms()
        lines += [
            (
                f"{label}: throughput {delivered_rate:,.0f} files/s delivered "
                f"({args.files:,} files; the writer wrote {writer_rate:,.0f} files/s)"
            ),
            (
                f"{label}: latency at {args.rate:,.0f} files/s ({n_paced:,} files, close -> "
                f"FileReady received) p50 {percentile(ms, 50):.3f} ms, "
                f"p99 {percentile(ms, 99):.3f} ms, max {max(ms):.3f} ms"
            ),
        ]
    # the machine may be shared: tail latency follows the other jobs' load
    lines.append(f"1-min load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    record("watcher", lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=30_000, help="files in the throughput run")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced files/s for latency")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the paced run")
    parser.add_argument("--child", metavar="LISTING", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child_main(arguments.child, arguments.rate or None)  # --rate 0: as fast as it can
    else:
        trio.run(main, arguments)
