"""The whole pipeline: fake inotify events through the real service on port 0, the real
thing on a real directory, restart, shutdown on SIGTERM, a crash, hypercorn's CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from mrqart import synth
from mrqart.headers import read_header
from mrqart.ingest.inotify import Flag
from mrqart.ingest.watcher import MemoryEventSource
from mrqart.live.service import Config, run_service
from mrqart.store import Store

TODAY = date.today().strftime("%Y%m%d")
SESSION = "20261124.MRQART_test.26.11.24_10_00_00_DST_1.2.3"


def learn_template(db: Path, tmp: Path, **fields: Any) -> None:
    """Record one past series so that the project has a template for it."""
    sample = tmp / "sample.dcm"
    synth.write_dicom(sample, **fields)
    header = read_header(sample)
    assert isinstance(header, dict)
    store = Store(db)
    store.record_series(header, n_files=300, source="import", session="past-session")
    store.close()


async def next_message(ws: Any, **match: Any) -> dict[str, Any]:
    """The next message whose fields equal ``match`` (others, e.g. counts, are skipped)."""
    while True:
        message = json.loads(await ws.get_message())
        if all(message.get(k) == v for k, v in match.items()):
            return message


async def test_fake_events_through_the_service(tmp_path: Path) -> None:
    root = tmp_path / "scanner"
    session = root / SESSION
    session.mkdir(parents=True)
    db = tmp_path / "db.sqlite"
    learn_template(db, tmp_path, SequenceName="rest", TR=1300.0)
    source = MemoryEventSource()
    stop = trio.Event()
    config = Config(roots=(root,), db=db, port=0, catch_up=False)

    def write(name: str, **fields: Any) -> None:
        synth.write_dicom(session / name, **fields)
        assert source.emit(session / name, Flag.CLOSE_WRITE)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, source=source, task_status=task_status))
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                write("001_000003_000001.dcm", SeriesNumber=3, SequenceName="rest", TR=1300.0)
                new = await next_message(ws, type="new")
                assert new["content"]["status"] == "conform"
                assert new["series"].endswith(":3")
                # IN_CREATE alone is not a ready file
                source.emit(session / "001_000003_000002.dcm", Flag.CREATE)
                write("001_000003_000002.dcm", SeriesNumber=3, SequenceName="rest", TR=1300.0)
                update = await next_message(ws, type="update")
                assert update["content"] == 2 and update["series"] == new["series"]

                write("001_000004_000001.dcm", SeriesNumber=4, SequenceName="rest", TR=2000.0)
                bad = await next_message(ws, type="new")
                assert bad["content"]["status"] == "nonconform"
                assert bad["content"]["errors"]["TR"] == {"expect": 1300.0, "have": 2000.0}

                (session / "001_000005_000001.dcm").write_bytes(b"not a dicom")
                source.emit(session / "001_000005_000001.dcm", Flag.CLOSE_WRITE)
                unreadable = await next_message(ws, type="unreadable")
                assert unreadable["content"]["path"].endswith("001_000005_000001.dcm")

                stop.set()
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason.code == 1000
    # the run is in the history, with its final count
    store = Store(db)
    rows = {r["header"]["SeriesNumber"]: r["n_files"] for r in store.series_on("20241016")}
    store.close()
    assert rows[3] == 2 and rows[4] == 1


async def http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET ``url`` (POST ``body`` when given) and return its JSON, or the status code of
    an HTTP error (urllib in a worker thread: no blocking call on the loop)."""
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    def call() -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urlopen(req, timeout=5) as r:
                return json.load(r)
        except HTTPError as error:
            return error.code

    return await trio.to_thread.run_sync(call)


async def station_series(url: str, station: str) -> list[dict[str, Any]]:
    """A station's series as the service shows them; [] before its first series (404)."""
    found = await http_json(f"{url}/api/stations/{station}/series")
    return [] if found == 404 else found


async def test_real_inotify_restart_and_catch_up(tmp_path: Path) -> None:
    """The real service on a real directory; stopped; files arrive; started again."""
    root = tmp_path / "scanner"
    root.mkdir()
    db = tmp_path / "db.sqlite"
    fields = {"SeriesNumber": 7, "SequenceName": "T1w", "AcqDate": TODAY}
    config = Config(roots=(root,), db=db, port=0)
    session = root / SESSION

    with trio.fail_after(30):
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, task_status=task_status))
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                session.mkdir()  # a new session directory appears while we run
                for i in range(1, 6):
                    await trio.to_thread.run_sync(
                        lambda i=i: synth.write_dicom(session / f"001_000007_{i:06d}.dcm", **fields))
                new = await next_message(ws, type="new")
                await next_message(ws, type="update", content=5)
            stop.set()
        assert new["content"]["status"] == "no_template"

        # files written while mrqart was down
        for i in range(6, 11):
            synth.write_dicom(session / f"001_000007_{i:06d}.dcm", **fields)

        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, task_status=task_status))
            with trio.fail_after(10):
                while True:
                    series = await http_json(url + "/api/stations/AWP167046/series")
                    if series and series[0]["n_files"] == 10:
                        break
                    await trio.sleep(0.05)  # polling another process's view, not ordering
            stop.set()
    assert [s["series_number"] for s in series] == [7]
    store = Store(db)
    rows = store.series_on(TODAY)
    store.close()
    assert len(rows) == 1 and rows[0]["n_files"] == 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mrqart", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )


async def test_sigterm_closes_browsers_normally_and_exits_zero(tmp_path: Path) -> None:
    root = tmp_path / "scanner"
    root.mkdir()
    port = free_port()
    proc = start_cli(["run", str(root), "--port", str(port), "--db", str(tmp_path / "db.sqlite")])
    try:
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        assert line.startswith("mrqart: open http://127.0.0.1:")
        with trio.fail_after(10):
            async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                code = await trio.to_thread.run_sync(proc.wait)
        assert closed.value.reason.code == 1000
        assert code == 0
        assert time.monotonic() - t0 < 1.5
    finally:
        proc.kill()


def test_a_failure_exits_non_zero_with_one_clear_line(tmp_path: Path) -> None:
    root = tmp_path / "scanner"
    root.mkdir()
    not_a_db = tmp_path / "db"
    not_a_db.mkdir()  # sqlite cannot open a directory: the pipeline fails at start
    proc = start_cli(["run", str(root), "--port", "0", "--db", str(not_a_db)])
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    lines = [ln for ln in err.splitlines() if "CRITICAL" in ln]
    assert len(lines) == 1 and "mrqart stopped:" in lines[0], err


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    proc = start_cli(["run", str(tmp_path / "nope"), "--db", str(tmp_path / "db.sqlite")])
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "is not a directory" in err


def start_hypercorn(port: int, root: Path, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--bind",
         f"127.0.0.1:{port}", "mrqart.live.service:app_from_env()"],
        env={**os.environ, "MRQART_WATCH": str(root), "MRQART_DB": str(db)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )


async def test_deployed_under_hypercorn_cli(tmp_path: Path) -> None:
    root = tmp_path / "scanner"
    (root / SESSION).mkdir(parents=True)
    port = free_port()
    proc = start_hypercorn(port, root, tmp_path / "db.sqlite")
    try:
        with trio.fail_after(20):
            while True:  # wait for the port to answer
                try:
                    await http_json(f"http://127.0.0.1:{port}/api/stations")
                    break
                except OSError:
                    await trio.sleep(0.1)
            synth.write_dicom(root / SESSION / "001_000002_000001.dcm", SeriesNumber=2)
            while not await http_json(f"http://127.0.0.1:{port}/api/stations"):
                await trio.sleep(0.05)
        stations = await http_json(f"http://127.0.0.1:{port}/api/stations")
        assert stations[0]["n_series"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


async def test_a_live_multi_echo_series_is_recorded_with_all_its_echo_times(tmp_path: Path) -> None:
    root = tmp_path / "scanner"
    session = root / SESSION
    session.mkdir(parents=True)
    db = tmp_path / "db.sqlite"
    source = MemoryEventSource()
    stop = trio.Event()
    config = Config(roots=(root,), db=db, port=0, catch_up=False)
    echoes = [(1, 14.2), (2, 35.9), (3, 57.6)]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, source=source, task_status=task_status))
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                for image in range(1, 7):  # echoes interleave: 1 2 3 1 2 3
                    echo, te = echoes[(image - 1) % 3]
                    path = session / f"001_000009_{image:06d}.dcm"
                    synth.write_dicom(path, SeriesNumber=9, SequenceName="me_bold",
                                      EchoNumber=echo, TE=te, InstanceNumber=image)
                    source.emit(path, Flag.CLOSE_WRITE)
                await next_message(ws, type="update", content=6)
            stop.set()
    store = Store(db)
    template = store.template("MRQART_test", "me_bold")
    store.close()
    assert template is not None and template["TE"] == [14.2, 35.9, 57.6]
