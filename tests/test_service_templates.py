"""Templates that earn trust, through the real service on a real directory (inotify),
the synthetic scanner and a WebSocket client: a wrong series never becomes the
reference, a person's acceptance does, and a software upgrade is announced once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from mrqart import synth
from mrqart.live.service import Config, run_service
from mrqart.store import Store
from tests.test_service import http_json

N_SERIES = len(synth.PROTOCOL)
SCALE = 0.03  # a few files per series (at least two per echo: the echo probe ends when an
# echo number comes round again, so the template learns every echo time)


async def write_session(root: Path, ws: Any, vendor: str = "siemens",
                        **wrong: dict[str, Any]) -> dict[str, dict]:
    """Write one synthetic session (``wrong``: series name -> fields) and return the
    verdict of each of its series by name, as the WebSocket delivered them."""
    await trio.to_thread.run_sync(
        lambda: synth.write_session(root, wrong=wrong, scale=SCALE, vendor=vendor))
    names = {}
    while len(names) < N_SERIES:
        message = json.loads(await ws.get_message())
        if message["type"] == "new":
            content = message["content"]
            names[content["input"]["SequenceName"] + (
                " (phase)" if content["input"].get("ImageType", [""] * 3)[2] == "P" else "")] = {
                **content, "series": message["series"]}
    return names


def statuses(verdicts: dict[str, dict]) -> dict[str, str]:
    return {name: v["status"] for name, v in verdicts.items()}


def errors(verdicts: dict[str, dict]) -> dict[str, Any]:
    """What differed, for an assertion's message."""
    return {name: v["errors"] for name, v in verdicts.items() if v["errors"]}


async def until(ws: Any, type_: str) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.get_message())
        if message["type"] == type_:
            return message


@asynccontextmanager
async def serving(root: Path, db: Path) -> AsyncIterator[tuple[str, Any]]:
    """The real service watching ``root`` (real inotify), and a WebSocket client:
    (url, ws). Bounded in time; stopped on leaving."""
    root.mkdir()
    config = Config(roots=(root,), db=db, port=0, flush_seconds=0.05)
    stop = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, task_status=task_status))
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                yield url, ws
            stop.set()


async def test_a_wrong_series_is_flagged_until_a_person_accepts_it(tmp_path: Path) -> None:
    root, db = tmp_path / "scanner", tmp_path / "db.sqlite"
    async with serving(root, db) as (url, ws):
        first = await write_session(root, ws)  # an empty database learns
        assert set(statuses(first).values()) == {"no_template"}
        second = await write_session(root, ws, rest={"TR": 2000.0})
        assert second["rest"]["status"] == "nonconform"
        assert second["rest"]["errors"] == {"TR": {"expect": 1300.0, "have": 2000.0}}
        third = await write_session(root, ws)
        # the wrong series did not vote: the good session conforms, all of it
        assert set(statuses(third).values()) == {"conform"}, errors(third)

        # a person accepts session 2's rest as intended
        key = second["rest"]["series"]
        assert await http_json(f"{url}/api/series/{key}/accept", {"reason": " "}) == 400
        assert await http_json(f"{url}/api/series/{key}/accept",
                               {"reason": "TR 2000 from now on"}) == 400  # who?
        assert await http_json(f"{url}/api/series/nope:3/accept",
                               {"reason": "r", "by": "ana"}) == 404
        change = await http_json(f"{url}/api/series/{key}/accept",
                                 {"reason": "TR 2000 from now on", "by": "ana"})
        assert change["kind"] == "accepted" and change["by"] == "ana"
        shown = await until(ws, "new")  # the series' verdict, replaced
        assert shown["series"] == key
        assert shown["content"]["status"] == "accepted"
        assert shown["content"]["note"] == "accepted: TR 2000 from now on"
        accepted = (await until(ws, "accepted"))["content"]
        assert accepted["series"] == key and accepted["params"]["TR"] == 2000.0

        fourth = await write_session(root, ws, rest={"TR": 2000.0})
        assert set(statuses(fourth).values()) == {"conform"}, errors(fourth)
        fifth = await write_session(root, ws)
        assert fifth["rest"]["status"] == "nonconform"
        assert fifth["rest"]["errors"] == {"TR": {"expect": 2000.0, "have": 1300.0}}
        assert {n for n, s in statuses(fifth).items() if s != "conform"} == {"rest"}
    with Store(db) as store:
        history = store.history("MRQART_test", "rest")
    assert [(h["kind"], h["params"]["TR"], h["by"], h["reason"]) for h in history] == [
        ("learnt", 1300.0, "mrqart", "first trusted series"),
        ("accepted", 2000.0, "ana", "TR 2000 from now on"),
    ]


XA = "syngo MR XA30"


async def test_a_software_upgrade_is_announced_once_per_sequence(tmp_path: Path) -> None:
    root = tmp_path / "scanner"
    # After the upgrade the scanner writes XA enhanced files, and records the sequence
    # files under a new path: every series differs.
    upgraded = {s["name"]: {"SequenceFile": "%SiemensSeq%/xa30_seq"} for s in synth.PROTOCOL}
    async with serving(root, tmp_path / "db.sqlite") as (url, ws):
        await write_session(root, ws)  # E11
        after = await write_session(root, ws, "xa", **upgraded)
        assert set(statuses(after).values()) == {"software_changed"}, statuses(after)
        notes = {v["note"] for v in after.values()}
        assert notes == {f"first series since the software changed from syngo MR E11 to {XA}"}
        assert set(after["rest"]["errors"]) == {"SequenceFile"}  # still there to read
        # announced once: the next session on XA30 is compared as usual
        again = await write_session(root, ws, "xa", **upgraded)
        assert set(statuses(again).values()) == {"nonconform"}
        assert not any("note" in v for v in again.values())
        # a person accepts the new sets once (one series of each sequence)
        for verdict in after.values():
            assert (await http_json(f"{url}/api/series/{verdict['series']}/accept",
                                    {"reason": "XA30 upgrade", "by": "ana"}))["kind"]
            await until(ws, "accepted")  # after the replaced verdict ("new")
        final = await write_session(root, ws, "xa", **upgraded)
        assert set(statuses(final).values()) == {"conform"}, errors(final)


async def test_the_echo_probe_waits_for_a_lower_echo_that_arrives_late(tmp_path: Path) -> None:
    """The watcher may deliver a burst out of order: a multi-echo series whose first
    files are echoes 2, 3 and 2 again still learns echo 1 when it comes."""
    from mrqart.ingest.inotify import Flag
    from mrqart.ingest.watcher import MemoryEventSource

    root = tmp_path / "scanner"
    session = root / "session"
    session.mkdir(parents=True)
    db = tmp_path / "db.sqlite"
    source = MemoryEventSource()
    stop = trio.Event()
    config = Config(roots=(root,), db=db, port=0, catch_up=False)
    te = {1: 14.2, 2: 35.9, 3: 57.6}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, source=source, task_status=task_status))
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                for n, (image, echo) in enumerate([(2, 2), (3, 3), (5, 2), (1, 1), (4, 1)], 1):
                    path = session / f"001_000006_{image:06d}.dcm"
                    synth.write_dicom(path, SeriesNumber=6, SequenceName="me_bold",
                                      StudyUID="1.2.echo", EchoNumber=echo, TE=te[echo])
                    assert source.emit(path, Flag.CLOSE_WRITE)
                    while True:  # each file counted before the next is written
                        message = json.loads(await ws.get_message())
                        if message["type"] in ("new", "update") and (
                                message["type"] == "new" or message["content"] == n):
                            break
            stop.set()
    with Store(db) as store:
        (series,) = [s for s in store.param_sets("MRQART_test", "me_bold") if s["count"]]
    assert series["params"]["TE"] == [14.2, 35.9, 57.6]
