"""Benchmark ``mrqart import``: headers/s on the worst case, one file per series.

Writes an archive of N single-file series (real CSA sizes, via mrqart.synth;
not timed), then times ``import_paths`` into a fresh database file with a
process pool of one worker per core (RUNS times, each figure printed: the
machine is shared, so the spread matters), and a re-run (everything skipped).

    python bench/bench_import.py [N]        # default 3000; target >= 4000 headers/s
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without installing: `python bench/bench_import.py`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import record  # bench/ is on the path only from here

from mrqart.headers import read_header
from mrqart.importer import import_paths
from mrqart.store import Store
from mrqart.synth import write_dicom

SERIES_PER_SESSION = 500  # ~ a long day's archive directory
RUNS = 3


def write_archive(root: Path, n: int) -> None:
    for i in range(n):
        session, number = divmod(i, SERIES_PER_SESSION)
        d = root / f"session{session:03d}"
        d.mkdir(exist_ok=True)
        write_dicom(
            d / f"001_{number + 1:06d}_000001.dcm",
            StudyUID=f"1.2.826.0.1.3680043.9999.{session}", SeriesNumber=number + 1,
            SeriesUID=f"1.2.826.0.1.3680043.9999.{session}.{number + 1}",
            SequenceName=f"seq{number % 40}", TR=1300.0 + (number % 3),
        )


def _children_cpu() -> float:
    """CPU seconds used by this process's finished children (the pool's workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        root.mkdir()
        t = time.perf_counter()
        write_archive(root, n)
        size = sum(f.stat().st_size for f in root.rglob("*.dcm")) / n
        lines.append(f"archive: {n} single-file series, {size / 1024:.0f} KiB/file "
                     f"(written in {time.perf_counter() - t:.1f} s, not timed)")

        files = [str(p) for p in sorted(root.rglob("*.dcm"))[:500]]
        t = time.perf_counter()
        for f in files:
            read_header(f)
        one_core = len(files) / (time.perf_counter() - t)
        lines.append(f"read_header on one core (warm cache): {one_core:,.0f} headers/s")

        rates = []
        for run in range(RUNS):
            cpu, workers = time.process_time(), _children_cpu()
            with Store(Path(tmp) / f"bench{run}.sqlite") as store:
                report = import_paths([root], store)
            cpu, workers = time.process_time() - cpu, _children_cpu() - workers
            rates.append(report.n_files / report.seconds)
            lines.append(
                f"import {run + 1}/{RUNS}, {os.cpu_count()} workers: {report.n_files} files, "
                f"{report.added} series added in {report.seconds:.2f} s = "
                f"{rates[-1]:,.0f} headers/s; CPU per file: main {cpu / n * 1e6:.0f} us, "
                f"workers {workers / n * 1e6:.0f} us (= {2 * n / (cpu + workers):,.0f} "
                f"headers/s: the CPU-time bound on two idle cores)"
            )
        lines.append(f"import: median {statistics.median(rates):,.0f} headers/s, "
                     f"best {max(rates):,.0f} (target >= 4,000); "
                     f"load average {os.getloadavg()[0]:.2f} (machine shared)")
        with Store(Path(tmp) / "bench0.sqlite") as store:
            again = import_paths([root], store)
        lines.append(f"re-run: {again.added} added, {again.skipped} skipped in "
                     f"{again.seconds:.2f} s = {again.n_files / again.seconds:,.0f} headers/s")
    record("import (bench_import.py)", lines)


if __name__ == "__main__":
    main()
