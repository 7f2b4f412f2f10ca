"""Benchmark the day after: the report of a busy day, and a project page over a year.

1. A day with 2,000 series (10 projects x 25 sessions x 8 series, 5% of series with one
   wrong parameter, recorded untrusted as the live path records them) after 14 days of
   the same: ``build_report`` + HTML + text + JSON, and the /reports page (the same
   with SVG plots of the series that differed). Target: under 1 s.
2. One project with 500 sessions over a year (8 series each, 4,000 series): the
   /projects/<project> page (model and SVG plots). Target: under 1 s.

Each figure is the median of RUNS builds after one warm-up (matplotlib imported, sqlite
pages cached), in wall time and in this process's CPU time (the machine is shared by
other jobs: wall time is the CPU time plus waiting for a core); the first build,
matplotlib's import included where it draws, is printed too.

    python bench/bench_report.py
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run from a checkout without installing: `python bench/bench_report.py`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import record  # bench/ is on the path only from here

from mrqart.report import Period, build_report, pages
from mrqart.report.render import to_html, to_json, to_text
from mrqart.store import Store
from mrqart.synth import DEFAULT_FIELDS

RUNS = 5
SERIES = {  # name -> parameters that differ from synth's defaults
    "localizer": {"TR": 8.6, "FA": 20.0}, "T1w": {"TR": 2300.0, "FA": 9.0},
    "T2w": {"TR": 3200.0, "FA": 120.0}, "fmap": {"TR": 600.0, "FA": 55.0},
    "rest": {}, "task1": {"TR": 800.0}, "task2": {"TR": 800.0, "FA": 52.0},
    "dwi": {"TR": 3200.0, "FA": 90.0},
}
WRONG = 0.05
DAY = dt.date(2026, 11, 30)


def record_day(store: Store, day: dt.date, project: str, sessions: int, rng: random.Random,
               start_hour: int = 7) -> int:
    """Record ``sessions`` sessions of ``project`` on ``day``; the series recorded."""
    n = 0
    key = day.strftime("%Y%m%d")
    for s in range(sessions):
        session = f"{project}.{key}.{s}"
        minute = start_hour * 60 + s * 2
        for number, (name, fields) in enumerate(SERIES.items(), start=1):
            wrong = {"TE": 31.0} if rng.random() < WRONG else {}
            header = {**DEFAULT_FIELDS, **fields, **wrong, "Project": project,
                      "SequenceName": name, "SeriesNumber": number, "StudyUID": session,
                      "AcqDate": key, "AcqTime": f"{minute // 60:02d}{minute % 60:02d}{number:02d}",
                      "SubID": f"sub{s}"}
            store.record_series(header, n_files=100, session=session, trusted=not wrong)
            n += 1
    return n


@dataclass(frozen=True)
class Timing:
    first: float  # wall seconds of the first build
    wall: float  # median wall seconds of RUNS builds after it
    cpu: float  # median CPU seconds of this process (the machine is shared: wall varies)

    def __str__(self) -> str:
        return (f"{self.wall * 1000:.0f} ms wall, {self.cpu * 1000:.0f} ms CPU "
                f"(first {self.first * 1000:.0f} ms wall)")


def timed(fn: Callable[[], Any]) -> Timing:
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    wall, cpu = [], []
    for _ in range(RUNS):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return Timing(first, statistics.median(wall), statistics.median(cpu))


def busy_day(db: Path) -> list[str]:
    rng = random.Random(1)
    with Store(db) as store:
        with store.batch():
            for back in range(14, 0, -1):
                for p in range(10):
                    record_day(store, DAY - dt.timedelta(back), f"Project{p}", 25, rng)
        with store.batch():
            n = sum(record_day(store, DAY, f"Project{p}", 25, rng) for p in range(10))
        period = Period.day(DAY)

        def report() -> None:
            r = build_report(store, period)
            to_html(r), to_text(r), to_json(r)

        report_time = timed(report)
        page_time = timed(lambda: pages.report_page(store, period))
        r = build_report(store, period)
        load = os.getloadavg()[0]
    return [
        (f"report of a day with {n:,} series ({len(r.projects)} projects, "
         f"{sum(len(p.sessions) for p in r.projects)} sessions, {r.counts.differ} differ; "
         f"14 days of history): model + HTML + text + JSON {report_time} - target < 1 s"),
        (f"/reports page of that day (the same with SVG plots of the "
         f"{pages.MAX_REPORT_PLOTS} series that differed most): {page_time}"),
        f"load average during the run: {load:.1f} on {os.cpu_count()} cores",
    ]


def year_of_sessions(db: Path) -> list[str]:
    rng = random.Random(2)
    with Store(db) as store:
        with store.batch():
            days = [DAY - dt.timedelta(d) for d in range(364, -1, -1) if (DAY - dt.timedelta(d)
                                                                          ).weekday() < 5]
            n = 0
            for i in range(500):
                n += record_day(store, days[i * len(days) // 500], "Study", 1, rng,
                                start_hour=8 + i % 8)
        period = pages.project_period(None, today=DAY)
        page_time = timed(lambda: pages.project_page(store, "Study", period))
        size = len(pages.project_page(store, "Study", period))
    return [(f"/projects/<project> page, a year of 500 sessions ({n:,} series; model + "
             f"SVG plots, {size / 1024:.0f} KiB of HTML): {page_time} - target < 1 s")]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lines = busy_day(Path(tmp) / "day.sqlite") + year_of_sessions(Path(tmp) / "year.sqlite")
    record("report", lines)


if __name__ == "__main__":
    main()
