"""The PostgreSQL store against sqlite: ``mrqart import`` headers/s into each on the same
archive, and the live service's close-to-message latency at 100 files/s with each.

PostgreSQL is the server named by MRQART_TEST_PG, else a throw-away one started here
(tests/pgserver.py: Debian's postgresql, loopback port, fsync off as in the tests;
the figures are mrqart's and the driver's, not a disk's). Each import goes to a fresh
database (a file; a schema). The live runs alternate the engines, RUNS times each,
with a fresh service and database per run.

    python bench/bench_store.py [N]      # N single-file series; default 3000
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_import import write_archive  # bench/ is on the path only from here
from bench_service import SESSION, run_case, start_service
from results import record

from mrqart import synth
from mrqart.importer import import_paths
from mrqart.store import open_store
from tests.pgserver import DSN_VAR, PgServer, new_server

RUNS = 3
LIVE_RATE, LIVE_SECONDS, LIVE_SERIES = 100, 5, 4


def fresh_schema(dsn: str) -> str:
    """A URL whose tables go to a new schema of the server at ``dsn``."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options={quote(f'-c search_path={schema}')}"


def bench_import(root: Path, n: int, tmp: Path, dsn: str) -> list[str]:
    lines, rates = [], {"sqlite": [], "postgres": []}
    for run in range(RUNS):
        for engine, url in (("sqlite", str(tmp / f"import{run}.sqlite")),
                            ("postgres", fresh_schema(dsn))):
            with open_store(url) as store:
                report = import_paths([root], store)
            rates[engine].append(report.n_files / report.seconds)
    for engine, r in rates.items():
        lines.append(f"import into {engine}, {os.cpu_count()} workers, {n} single-file series: "
                     f"median {statistics.median(r):,.0f} headers/s "
                     f"(runs: {', '.join(f'{x:,.0f}' for x in r)})")
    return lines


async def live_run(url: str, session: Path, blob: bytes) -> list[float]:
    """Latencies (ms) of LIVE_SERIES series of LIVE_RATE * LIVE_SECONDS files each."""
    out: list[float] = []
    for series in range(1, LIVE_SERIES + 1):
        r = await run_case(url, session, series, blob, LIVE_RATE * LIVE_SECONDS, LIVE_RATE, 30)
        out.append(r["p99"])
    return out


def bench_live(tmp: Path, dsn: str) -> list[str]:
    synth.write_dicom(tmp / "sample.dcm")
    blob = (tmp / "sample.dcm").read_bytes()
    p99: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    for run in range(RUNS):
        for engine in ("sqlite", "postgres"):
            root = tmp / f"live-{engine}-{run}"
            session = root / SESSION
            session.mkdir(parents=True)
            db = str(tmp / f"live{run}.sqlite") if engine == "sqlite" else fresh_schema(dsn)
            proc, url = start_service(root, db)  # type: ignore[arg-type]
            try:
                p99[engine] += trio.run(live_run, url, session, blob)
            finally:
                proc.terminate()
                proc.wait(10)
    med = {e: statistics.median(v) for e, v in p99.items()}
    return [
        *(f"live close-to-message at {LIVE_RATE} files/s, {engine}: p99 per series "
          f"median {med[engine]:.2f} ms (all: {', '.join(f'{x:.2f}' for x in v)})"
          for engine, v in p99.items()),
        (f"PostgreSQL - sqlite: {med['postgres'] - med['sqlite']:+.2f} ms (target: within 1 ms); "
        f"{RUNS} services per engine, {LIVE_SERIES} series of {LIVE_RATE * LIVE_SECONDS} "
        "files each (a new series: a verdict, then counts)"),
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    dsn = os.environ.get(DSN_VAR)
    server: PgServer | None = None
    if not dsn:
        server = new_server()
        dsn = server.dsn
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() else None
    try:
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            root = Path(tmp) / "archive"
            root.mkdir()
            write_archive(root, n)
            lines = bench_import(root, n, Path(tmp), dsn)
            lines += bench_live(Path(tmp), dsn)
    finally:
        if server is not None:
            server.stop()
    lines.append(f"PostgreSQL 15 on loopback (fsync off), sqlite file on "
                 f"{scratch or tempfile.gettempdir()}; load average {os.getloadavg()[0]:.2f} "
                 "(machine shared)")
    record("PostgreSQL vs sqlite (bench_store.py)", lines)


if __name__ == "__main__":
    main()
