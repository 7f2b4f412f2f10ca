"""The DICOM node end to end: instances/s from dcmtk's storescu over loopback until the
page has counted every one, and the latency from a C-STORE's answer to the WebSocket
message that counts its instance.

The real service runs in a subprocess (``python -m mrqart run DIR --dicom-port P``).
Throughput: synthetic sessions (Siemens-like, ~95 KB files) are sent by storescu, one
association, then four storescu processes in parallel (four stations); the clock runs
from the first storescu start to the WebSocket message that completes the last series.
Latency: pynetdicom's SCU here sends one series paced at a scanner's rate and notes
time.monotonic() when each C-STORE response arrives (CLOCK_MONOTONIC is system-wide);
the WebSocket client notes when the count covering that instance arrives.

    python bench/bench_dicomnode.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record

from mrqart import synth

STORESCU = "/usr/bin/storescu"  # dcmtk's, not pynetdicom's script of the same name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(root: Path, db: Path, dicom_port: int) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mrqart", "run", str(root), "--port", str(port), "--db", str(db),
         "--no-catch-up", "--dicom-port", str(dicom_port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("mrqart: open "):
            return proc, line.split()[-1]
    raise SystemExit("the service did not start")


def write_sessions(root: Path, n: int, scale: float) -> list[tuple[Path, dict[str, int]]]:
    """n synthetic sessions, each from its own station; (directory, series key -> files)."""
    sessions = []
    for k in range(n):
        protocol = [{**s, "fields": {**s["fields"], "Station": f"BENCH{k}"}}
                    for s in synth.PROTOCOL]
        directory = synth.write_session(root, scale=scale, subject=f"bench{k}", protocol=protocol)
        study = dcmread(next(directory.iterdir()), stop_before_pixels=True).StudyInstanceUID
        counts = Counter(f"{study}:{int(p.name.split('_')[1])}" for p in directory.iterdir())
        sessions.append((directory, dict(counts)))
    return sessions


async def until_counted(ws: Any, expected: dict[str, int]) -> float:
    """Read messages until every series has its count; time.monotonic() of the last."""
    counts: dict[str, int] = {}
    pending = set(expected)
    while pending:
        message = json.loads(await ws.get_message())
        if message["type"] not in ("new", "update"):
            continue
        key = message["series"]
        counts[key] = max(counts.get(key, 0), 1 if message["type"] == "new" else message["content"])
        if key in pending and counts[key] >= expected[key]:
            pending.discard(key)
    return time.monotonic()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat utime and stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(url: str, port: int, pid: int,
                     sessions: list[tuple[Path, dict[str, int]]]) -> str:
    expected = {k: n for _, counts in sessions for k, n in counts.items()}
    total = sum(expected.values())
    async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
        start, cpu = time.monotonic(), cpu_seconds(pid)
        done: list[float] = []
        async with trio.open_nursery() as nursery:
            for directory, _ in sessions:
                async def send(directory: Path = directory) -> None:
                    await trio.run_process([STORESCU, "-aec", "MRQART", "+sd", "127.0.0.1",
                                            str(port), str(directory)])
                    done.append(time.monotonic())
                nursery.start_soon(send)
            with trio.fail_after(600):
                end = await until_counted(ws, expected)
    seconds, cpu = end - start, cpu_seconds(pid) - cpu
    return (f"{'1 association' if len(sessions) == 1 else f'{len(sessions)} associations in parallel'}: "
            f"{total:,} instances sent and counted in {seconds:.2f} s = "
            f"{total / seconds:,.0f} instances/s end to end (storescu finished after "
            f"{max(done) - start:.2f} s); service CPU {cpu / total * 1e3:.2f} ms per instance "
            f"(= {total / cpu:,.0f} instances per CPU-second)")


#: pynetdicom's SCU (not the node: it happens against dcmtk's storescp too) now and then
#: misses a C-STORE answer on a loaded machine and waits out its DIMSE timeout; this
#: bounds the stall, and the association is opened again.
SCU_DIMSE_TIMEOUT = 5.0


#: A bare pynetdicom Storage SCP whose C-STORE handler does nothing: what the library
#: alone costs per instance, to compare with the node.
BARE_SCP = """
import sys, threading
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage
ae = AE()
ae.add_supported_context(MRImageStorage, ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
ae.start_server(("127.0.0.1", int(sys.argv[1])), block=False,
                evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
print("ready", flush=True)
sys.stdin.read()
"""


async def bare_pynetdicom(directory: Path, n: int) -> str:
    port = free_port()
    proc = await trio.to_thread.run_sync(lambda: subprocess.Popen(
        [sys.executable, "-c", BARE_SCP, str(port)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True))
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        start, cpu = time.monotonic(), cpu_seconds(proc.pid)
        await trio.run_process([STORESCU, "+sd", "127.0.0.1", str(port), str(directory)])
        seconds, cpu = time.monotonic() - start, cpu_seconds(proc.pid) - cpu
    finally:
        proc.kill()
    return (f"for comparison, a bare pynetdicom SCP (handler does nothing), 1 association: "
            f"{n / seconds:,.0f} instances/s, CPU {cpu / n * 1e3:.2f} ms per instance")


def send_paced(port: int, datasets: list[Any], rate: float, sent: list[float],
               answered: list[float | None]) -> None:
    """Send at ``rate``; note each request's and answer's time (None: no answer)."""
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(MRImageStorage)
    ae.dimse_timeout = SCU_DIMSE_TIMEOUT
    assoc = ae.associate("127.0.0.1", port, ae_title="MRQART")
    start = time.monotonic()
    try:
        for i, ds in enumerate(datasets):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent.append(time.monotonic())
            status = assoc.send_c_store(ds)
            if "Status" in status:
                assert status.Status == 0, hex(status.Status)
                answered.append(time.monotonic())
            else:
                answered.append(None)
                assoc.abort()
                assoc = ae.associate("127.0.0.1", port, ae_title="MRQART")
    finally:
        assoc.release()


def percentiles(at: list[float | None], shown: dict[int, float]) -> tuple[float, float, float]:
    """p50, p99 and min (ms) from each instance's time to the first count covering it."""
    ordered = sorted(shown.items())
    lat = sorted((next(when for count, when in ordered if count >= i) - t) * 1e3
                 for i, t in enumerate(at, start=1) if t is not None)
    return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[0]


async def latency(url: str, port: int, sample: Path, series: int, n: int, rate: float) -> str:
    base = dcmread(sample)
    study = base.StudyInstanceUID
    datasets = []
    for i in range(1, n + 1):
        ds = dcmread(sample)
        ds.SeriesNumber, ds.InstanceNumber = series, i
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{series}.{i}"
        datasets.append(ds)
    sent: list[float] = []
    answered: list[float | None] = []
    shown: dict[int, float] = {}
    async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
        sender = threading.Thread(target=send_paced, args=(port, datasets, rate, sent, answered))
        sender.start()
        try:
            with trio.move_on_after(n / rate + 60):
                while n not in shown:
                    message = json.loads(await ws.get_message())
                    now = time.monotonic()
                    if message.get("series") != f"{study}:{series}":
                        continue
                    shown.setdefault(1 if message["type"] == "new" else message["content"], now)
        finally:
            await trio.to_thread.run_sync(sender.join)
    if n not in shown:
        return (f"one series of {n:,} instances at {rate:,.0f}/s: only {len(answered):,} "
                f"sent and {max(shown, default=0):,} counted within {n / rate + 60:.0f} s")
    a50, a99, amin = percentiles(answered, shown)
    s50, s99, _ = percentiles(sent, shown)
    return (f"one series of {n:,} instances at {rate:,.0f}/s (pynetdicom SCU): C-STORE "
            f"answered -> WebSocket count p50 {a50:.2f} ms, p99 {a99:.2f} ms (min {amin:.2f} "
            f"ms: below 0, the page counted the file before the SCU had read the answer); "
            f"C-STORE request sent -> count p50 {s50:.2f} ms, p99 {s99:.2f} ms; answers the "
            f"SCU missed: {answered.count(None)}")


async def new_studies(url: str, port: int, tmp: Path, n: int) -> str:
    """The first instance of each of n new studies: request sent -> its "new" verdict."""
    lat = []
    async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
        for k in range(n):
            path = tmp / f"study{k}.dcm"
            synth.write_dicom(path, StudyUID=f"1.2.826.0.1.3680043.10.543.{k}", SeriesNumber=1)
            sent: list[float] = []
            sender = threading.Thread(target=send_paced,
                                      args=(port, [dcmread(path)], 1.0, sent, []))
            sender.start()
            with trio.fail_after(60):
                while json.loads(await ws.get_message())["type"] != "new":
                    pass
            now = time.monotonic()
            await trio.to_thread.run_sync(sender.join)
            lat.append((now - sent[0]) * 1e3)
    lat.sort()
    return (f"first instance of a new study (a new directory: its first file waits for the "
            f"watch, not the watcher's 1 s settle), {n} studies: request sent -> \"new\" "
            f"verdict p50 {statistics.median(lat):.1f} ms, max {lat[-1]:.1f} ms")


async def bench(url: str, port: int, pid: int, tmp: Path, quick: bool) -> list[str]:
    scale = 0.25 if quick else 1.0
    lines = []
    one = await trio.to_thread.run_sync(write_sessions, tmp / "src1", 1, scale)
    lines.append(await throughput(url, port, pid, one))
    lines.append(await bare_pynetdicom(one[0][0], sum(one[0][1].values())))
    four = await trio.to_thread.run_sync(write_sessions, tmp / "src4", 4, scale / 2)
    lines.append(await throughput(url, port, pid, four))
    sample = tmp / "sample.dcm"
    synth.write_dicom(sample)
    for series, rate in ((77, 50), (78, 200)):
        lines.append(await latency(url, port, sample, series, 300 if quick else 1000, rate))
    lines.append(await new_studies(url, port, tmp, 5 if quick else 20))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sessions")
    args = parser.parse_args()
    # tmpfs when there is one: the figures are mrqart's, not the disk's (fsync is free there)
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=scratch) as name:
        tmp = Path(name)
        (tmp / "scanner").mkdir()
        dicom_port = free_port()
        proc, url = start_service(tmp / "scanner", tmp / "db.sqlite", dicom_port)
        try:
            lines = trio.run(bench, url, dicom_port, proc.pid, tmp, args.quick)
        finally:
            proc.terminate()
            proc.wait(10)
    load = os.getloadavg()[0]
    record("DICOM node (bench_dicomnode.py)", [
        *lines,
        (f"receive directory on {scratch or tempfile.gettempdir()}; synthetic Siemens-like "
         f"files (~95 KB); storescu is dcmtk's; load average {load:.1f} at the end "
         "(machine shared)"),
    ])


if __name__ == "__main__":
    main()
