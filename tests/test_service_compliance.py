"""Session-level compliance through the real service: checklist, alerts, acknowledgement."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from mrqart import synth
from mrqart.headers import read_header
from mrqart.ingest.inotify import Flag
from mrqart.ingest.watcher import MemoryEventSource
from mrqart.live.service import Config, Pipeline, run_service
from mrqart.store import Store
from tests.test_service import http_json

PROTOCOL = [("fmap", 2), ("rest", 6), ("dwi", 3)]


def record_past_sessions(db: Path, tmp: Path, n: int = 2) -> None:
    store = Store(db)
    for s in range(n):
        for number, (name, files) in enumerate(PROTOCOL, start=1):
            sample = tmp / "past.dcm"
            synth.write_dicom(sample, SequenceName=name, SeriesNumber=number,
                              StudyUID=f"1.2.past.{s}")
            header = read_header(sample)
            assert isinstance(header, dict)
            store.record_series(header, n_files=files, source="import")
    store.close()


async def test_skipped_and_short_series_raise_alerts_that_can_be_acknowledged(
    tmp_path: Path,
) -> None:
    root = tmp_path / "scanner"
    sessions = [root / "session1", root / "session2"]
    for d in sessions:
        d.mkdir(parents=True)
    db = tmp_path / "db.sqlite"
    record_past_sessions(db, tmp_path)
    source = MemoryEventSource()
    stop = trio.Event()
    config = Config(roots=(root,), db=db, port=0, catch_up=False)

    def write(session: int, series: int, image: int, name: str) -> None:
        path = sessions[session] / f"001_{series:06d}_{image:06d}.dcm"
        synth.write_dicom(path, SequenceName=name, SeriesNumber=series,
                          StudyUID=f"1.2.live.{session}")
        assert source.emit(path, Flag.CLOSE_WRITE)

    async def until(ws: Any, type_: str) -> dict[str, Any]:
        while True:
            message = json.loads(await ws.get_message())
            if message["type"] == type_:
                return message

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, source=source, task_status=task_status))
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                # session 1: fmap complete, rest stopped at 4 of 6, dwi never run
                for image in (1, 2):
                    write(0, 1, image, "fmap")
                checklist = (await until(ws, "checklist"))["content"]
                assert [(i["sequence_name"], i["state"]) for i in checklist["items"]] == [
                    ("fmap", "running"), ("rest", "pending"), ("dwi", "pending")]
                for image in range(1, 5):
                    write(0, 2, image, "rest")
                await until(ws, "checklist")
                # a new session starts on the station: session 1 is finished
                write(1, 1, 1, "fmap")
                alerts = [(await until(ws, "alert"))["content"] for _ in range(2)]
                assert [a["text"] for a in alerts] == [
                    "rest series 2 incomplete: 4 of 6", "missing: dwi"]
                checklist = (await until(ws, "checklist"))["content"]
                assert checklist["items"][0]["state"] == "running"
                assert [a["kind"] for a in checklist["alerts"]] == ["missing", "incomplete"]

                reply = await http_json(f"{url}/api/alerts/{alerts[0]['id']}/ack",
                                          {"reason": "participant asked to stop"})
                assert reply["reason"] == "participant asked to stop"
                ack = (await until(ws, "ack"))["content"]
                assert ack["id"] == alerts[0]["id"]
                assert await http_json(f"{url}/api/alerts/{alerts[0]['id']}/ack", {"reason": " "}) == 400
                assert await http_json(f"{url}/api/alerts/nope/ack", {"reason": "x"}) == 404
                shown = await http_json(f"{url}/api/stations/AWP167046/checklist")
                assert shown["alerts"][1]["ack"]["reason"] == "participant asked to stop"

                # pin the short session 1 as the protocol: session 2's checklist follows it
                pinned = await http_json(f"{url}/api/projects/MRQART_test/protocol",
                                           {"from_session": "1.2.live.0"})
                assert pinned["pinned"] is True
                assert [e["n_files"] for e in pinned["expected"]] == [2, 4]
                checklist = (await until(ws, "checklist"))["content"]
                assert [i["expected_files"] for i in checklist["items"]] == [2, 4]
                assert await http_json(f"{url}/api/projects/MRQART_test/protocol", {}) == 400
                assert await http_json(f"{url}/api/projects/MRQART_test/protocol",
                                         {"from_session": "nope"}) == 404
            stop.set()
    store = Store(db)
    acks = store.acks("1.2.live.0")
    pinned = store.protocol_pinned_by("MRQART_test")
    store.close()
    # who: the local console's operator (no accounts on loopback); test_access signs in
    assert [(a["reason"], a["by"]) for a in acks.values()] == [
        ("participant asked to stop", "local")]
    assert pinned is not None and pinned["by"] == "local"


async def test_a_quiet_session_reports_its_missing_series(tmp_path: Path, mock_clock) -> None:
    """No file for finish_minutes: the session is finished and what never came is reported.
    Once the series is in, trio's clock jumps ahead whenever every task waits, so ten
    minutes pass at once (not before: starting waits on worker threads, which the clock
    would jump over)."""
    root = tmp_path / "scanner"
    (root / "session").mkdir(parents=True)
    db = tmp_path / "db.sqlite"
    record_past_sessions(db, tmp_path)
    source = MemoryEventSource()
    pipeline = Pipeline(Config(roots=(root,), db=db, port=0, catch_up=False, finish_minutes=10),
                        source=source)
    path = root / "session" / "001_000001_000001.dcm"
    synth.write_dicom(path, SequenceName="fmap", SeriesNumber=1, StudyUID="1.2.live.0")
    with trio.fail_after(3600):  # virtual seconds
        async with trio.open_nursery() as nursery, pipeline.hub.subscribe() as page:
            await nursery.start(pipeline.run)
            source.emit(path, Flag.CLOSE_WRITE)
            while (await page.receive()).type != "checklist":
                pass
            mock_clock.autojump_threshold = 0
            started = trio.current_time()
            alerts = []
            while len(alerts) < 2:
                message = await page.receive()
                if message.type == "alert":
                    alerts.append(message.content["text"])
            waited = trio.current_time() - started
            mock_clock.autojump_threshold = math.inf  # shutting down waits on threads again
            nursery.cancel_scope.cancel()
    assert alerts == ["fmap series 1 incomplete: 1 of 2", "missing: rest, dwi"]
    assert 10 * 60 <= waited <= 11 * 60
