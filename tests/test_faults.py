"""Fault injection: the real service on real directories keeps working and loses nothing.

Bad files, a lost kernel queue, a burst of sessions, SIGKILL and restart, a stalled
browser among many, hostile requests, a read-only database and a full disk.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from mrqart import synth
from mrqart.ingest.inotify import Flag
from mrqart.ingest.watcher import FileReady, MemoryEventSource, WatcherStatistics
from mrqart.live.hub import Message
from mrqart.live.service import Config, Pipeline, run_service
from mrqart.live.web import MAX_WS_MESSAGE
from mrqart.store import Store
from tests.faultkit import (
    HAVE_SETPRIV,
    NO_DAC,
    poll,
    series_rows,
    start_churn,
    start_service,
    stop_churn,
)
from tests.test_service import (
    SESSION,
    TODAY,
    http_json,
    learn_template,
    next_message,
    station_series,
)

pytestmark = pytest.mark.faults

STATION = "AWP167046"  # synth's default (0008,1010) StationName
#: (7FE0,0010) PixelData's tag as it sits in an explicit little-endian file
PIXEL_DATA = b"\xe0\x7f\x10\x00"


def key(series: int, study: str = synth.DEFAULT_FIELDS["StudyUID"]) -> str:
    """The wire key of a series of the default synthetic session."""
    return f"{study}:{series}"


def dicom_blob(tmp: Path, **fields: Any) -> bytes:
    """The bytes of one synthetic scanner file (written once, copied many times)."""
    path = tmp / "blob.dcm"
    synth.write_dicom(path, **fields)
    return path.read_bytes()


def scanner_name(series: int, image: int) -> str:
    return f"001_{series:06d}_{image:06d}.dcm"


def write_series(directory: Path, series: int, blob: bytes, images: range) -> None:
    """Write the files of one series the way the scanner does: one open/write/close each."""
    for i in images:
        (directory / scanner_name(series, i)).write_bytes(blob)


def last_count(messages: list[dict[str, Any]], series: int) -> int:
    """The highest file count the page was told for ``series`` (1 for a lone "new")."""
    counts = [
        1 if m["type"] == "new" else m["content"]
        for m in messages
        if m["type"] in ("new", "update") and m["series"].endswith(f":{series}")
    ]
    return max(counts, default=0)


# --- bad files ----------------------------------------------------------------


def bad_files(blob: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (content, the reason read_header gives)."""
    return {
        "zero.dcm": (b"", "empty file"),
        "truncated.dcm": (blob[: len(blob) // 2], "truncated DICOM"),  # cut inside the CSA
        "notes.dcm": (b"scan notes, not an image\n" * 40, "not DICOM"),
        "random.dcm": (os.urandom(len(blob) // 3), "not DICOM"),
    }


def write_private(path: Path, data: bytes) -> None:
    """A file nobody but root-with-DAC-override may read (mode 000 from its creation,
    so the service never sees it readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o000)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def test_bad_files_are_reported_once_and_valid_ones_all_counted(tmp_path: Path) -> None:
    """Zero-byte, truncated, not-DICOM, random, permission-denied and pixel-less files
    among a streaming series: each bad one is reported once (log and page) with its reason,
    the service stays up, and every valid file is counted."""
    root = tmp_path / "scanner"
    session = root / SESSION
    session.mkdir(parents=True)
    blob = dicom_blob(tmp_path, SeriesNumber=2)
    bad = bad_files(blob)
    # Root reads anything; without setpriv (and as root) the permission case cannot be made.
    private = HAVE_SETPRIV or os.geteuid() != 0
    if private:
        bad["secret.dcm"] = (blob, "PermissionError")
    prefix = NO_DAC if os.geteuid() == 0 else None
    service = await start_service(root, tmp_path / "db.sqlite", tmp_path / "log", prefix=prefix)
    n_valid = 40

    def scanner() -> None:
        names = iter(bad)
        for i in range(1, n_valid + 1):
            (session / scanner_name(2, i)).write_bytes(blob)
            if i % 5 == 0 and (name := next(names, None)):
                content = bad[name][0]
                if name == "secret.dcm":
                    write_private(session / name, content)
                else:
                    (session / name).write_bytes(content)
        # DICOM without pixel data is still a header: a series of its own
        pixel_less = dicom_blob(tmp_path, SeriesNumber=8)
        (session / scanner_name(8, 1)).write_bytes(pixel_less[: pixel_less.rfind(PIXEL_DATA)])
        synth.write_dicom(session / scanner_name(9, 1), SeriesNumber=9)  # the last one

    try:
        with trio.fail_after(30):
            async with open_websocket_url(service.url.replace("http", "ws") + "/ws") as ws:
                await trio.to_thread.run_sync(scanner)
                messages: list[dict[str, Any]] = []
                # the last file's verdict, and the last count of series 2 (counts are coalesced)
                while not (last_count(messages, 9) and last_count(messages, 2) == n_valid):
                    messages.append(json.loads(await ws.get_message()))
            health = await service.health()  # still up and answering
    finally:
        code = await service.stop()
    assert code == 0
    reported = Counter(m["content"]["path"] for m in messages if m["type"] == "unreadable")
    assert reported == Counter(str(session / name) for name in bad)
    for m in messages:
        if m["type"] == "unreadable":
            name = Path(m["content"]["path"]).name
            assert bad[name][1] in m["content"]["reason"], m
    for name in bad:
        assert len(service.log_lines(f"unreadable file {str(session / name)!r}:")) == 1, name
    assert last_count(messages, 2) == n_valid
    assert last_count(messages, 8) == 1
    assert health["unreadable"] == len(bad)
    assert health["files_seen"] == n_valid + len(bad) + 2


# --- in-process pipeline: a file gone before its read, a read-only database ------


class HandWatcher:
    """Stands in for the watcher: delivers exactly the FileReady items the test gives."""

    def __init__(self) -> None:
        self.give, self._take = trio.open_memory_channel[FileReady](0)

    async def run(
        self, send: trio.MemorySendChannel[FileReady], *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with send, self._take:
            task_status.started()
            async for ready in self._take:
                await send.send(ready)

    def statistics(self) -> WatcherStatistics:
        return WatcherStatistics(0, 0, 0, 0, 0, 0)


def ready(path: Path) -> FileReady:
    st = path.stat()
    return FileReady(str(path), st.st_size, st.st_mtime_ns, time.monotonic())


async def next_json(page: trio.MemoryReceiveChannel[Message]) -> dict[str, Any]:
    """The next per-file hub message as the browser would read it (session checklists,
    which follow each new series, are not what these tests are about)."""
    while (message := await page.receive()).type == "checklist":
        pass
    return json.loads(message.text)


async def test_a_file_deleted_between_event_and_read_is_reported_once(tmp_path: Path) -> None:
    session = tmp_path / SESSION
    session.mkdir()
    pipeline = Pipeline(Config(roots=(tmp_path,), db=":memory:", catch_up=False))
    pipeline.watcher = hand = HandWatcher()
    blob = dicom_blob(tmp_path, SeriesNumber=3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, pipeline.hub.subscribe() as page:
            await nursery.start(pipeline.run)
            (session / scanner_name(3, 1)).write_bytes(blob)
            await hand.give.send(ready(session / scanner_name(3, 1)))
            assert (await next_json(page))["type"] == "new"

            gone = session / "001_000004_000001.dcm"
            gone.write_bytes(blob)
            event = ready(gone)  # the watcher saw it complete...
            gone.unlink()  # ...and it went before the header was read
            await hand.give.send(event)
            message = await next_json(page)
            assert message["type"] == "unreadable"
            assert message["content"] == {
                "path": str(gone), "reason": "FileNotFoundError: No such file or directory"}

            (session / scanner_name(3, 2)).write_bytes(blob)
            await hand.give.send(ready(session / scanner_name(3, 2)))
            assert await next_json(page) == {
                "station": STATION, "type": "update", "series": key(3), "content": 2}
            assert pipeline.health()["unreadable"] == 1
            nursery.cancel_scope.cancel()


class ReadOnlyStore(Store):
    """A real store whose writes fail as they do once the database file is read-only."""

    failing = True

    def record_series(self, header: Any, **kwargs: Any) -> bool:
        if self.failing:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return super().record_series(header, **kwargs)


async def test_read_only_database_verdicts_go_on_error_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads work, every write fails: each series still reaches the page with its verdict,
    the error is logged once (not per file), and once writable the store catches up."""
    session = tmp_path / SESSION
    session.mkdir()
    db = tmp_path / "db.sqlite"
    learn_template(db, tmp_path, SequenceName="rest", TR=1300.0)
    source = MemoryEventSource()
    config = Config(roots=(tmp_path,), db=db, catch_up=False, flush_seconds=0.01)
    pipeline = Pipeline(config, source=source, open_store=ReadOnlyStore)
    blobs = {n: dicom_blob(tmp_path, SeriesNumber=n, SequenceName="rest", TR=tr, AcqDate=TODAY)
             for n, tr in ((5, 1300.0), (6, 2000.0), (7, 1300.0))}
    caplog.set_level(logging.INFO, logger="mrqart")

    async def write(series: int, images: range) -> None:
        for i in images:
            (session / scanner_name(series, i)).write_bytes(blobs[series])
            source.emit(session / scanner_name(series, i), Flag.CLOSE_WRITE)
            await trio.lowlevel.checkpoint()  # the flush task runs between files

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery, pipeline.hub.subscribe() as page:
            await nursery.start(pipeline.run)
            for series in blobs:
                await write(series, range(1, 11))
            seen: list[dict[str, Any]] = []
            while any(last_count(seen, n) < 10 for n in blobs):
                seen.append(await next_json(page))
            verdicts = {m["series"]: m["content"]["status"] for m in seen if m["type"] == "new"}
            assert verdicts == {key(5): "conform", key(6): "nonconform", key(7): "conform"}
            assert not pipeline.health()["store_ok"]
            # every page is told, and shows "database unreachable since HH:MM"
            (told,) = [m["content"] for m in seen if m["type"] == "database"]
            assert told["reachable"] is False and told["unreachable_since"]

            pipeline.store.failing = False
            await write(5, range(11, 12))
            await poll(lambda: trio.to_thread.run_sync(lambda: pipeline.health()["store_ok"]))
            while (m := await next_json(page))["type"] != "database":
                pass
            assert m["content"] == {"reachable": True, "unreachable_since": None}
            nursery.cancel_scope.cancel()
    failing = [r for r in caplog.records if "failing" in r.getMessage()]
    assert len(failing) == 1, [r.getMessage() for r in failing]
    assert "attempt to write a readonly database" in failing[0].getMessage()
    assert len([r for r in caplog.records if "writable again" in r.getMessage()]) == 1
    # nothing the page saw is missing from the history once the store is writable again
    assert series_rows(db) == [(synth.DEFAULT_FIELDS["StudyUID"], 5, 11),
                               (synth.DEFAULT_FIELDS["StudyUID"], 6, 10),
                               (synth.DEFAULT_FIELDS["StudyUID"], 7, 10)]


# --- the kernel queue overflows ---------------------------------------------------


async def counts(url: str, want: dict[int, int]) -> bool:
    """Whether the service's view shows exactly these file counts per series number."""
    return {s["series_number"]: s["n_files"] for s in await station_series(url, STATION)} == want


def kernel_queue_size() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


async def test_overflow_real_kernel_queue(tmp_path: Path) -> None:
    """The service process is stopped (SIGSTOP) while 20,000 files arrive: the kernel queue
    overflows; once it runs again, every file is counted exactly once."""
    n = 20_000
    if kernel_queue_size() > n:  # two events per file (IN_CREATE, IN_CLOSE_WRITE)
        pytest.skip("max_queued_events is too large to overflow with 20,000 files")
    root = tmp_path / "scanner"
    session = root / SESSION
    session.mkdir(parents=True)
    blob = dicom_blob(tmp_path, SeriesNumber=21)
    service = await start_service(root, tmp_path / "db.sqlite", tmp_path / "log")
    try:
        with trio.fail_after(90):
            write_series(session, 21, blob, range(1, 2))
            await poll(lambda: counts(service.url, {21: 1}))
            service.proc.send_signal(signal.SIGSTOP)
            try:
                await trio.to_thread.run_sync(write_series, session, 21, blob, range(2, n + 1))
            finally:
                service.proc.send_signal(signal.SIGCONT)
            # A browser that cannot read 20,000 updates fast enough is dropped by design
            # (it re-syncs from the HTTP view), so the count is read from that view.
            await poll(lambda: counts(service.url, {21: n}))
            synth.write_dicom(session / scanner_name(22, 1), SeriesNumber=22)
            await poll(lambda: counts(service.url, {21: n, 22: 1}))
            health = await service.health()
    finally:
        assert await service.stop() == 0
    assert health["watcher"]["overflows"] >= 1
    assert health["files_seen"] == n + 1
    assert len(service.log_lines("inotify queue overflowed")) == health["watcher"]["overflows"]


# --- a burst of sessions; SIGKILL and restart --------------------------------------


async def test_200_session_directories_at_once(tmp_path: Path) -> None:
    """100 session directories made and filled at once, 100 more moved in already full."""
    root, staging = tmp_path / "scanner", tmp_path / "staging"
    root.mkdir()
    staging.mkdir()
    n_dirs, per_dir = 200, 3
    blobs = [dicom_blob(tmp_path, StudyUID=f"1.2.826.0.1.3680043.9.{i}", SeriesNumber=1,
                        AcqDate=TODAY) for i in range(n_dirs)]
    names = [f"{TODAY}.MRQART_test.{i:03d}" for i in range(n_dirs)]
    for i in range(n_dirs // 2, n_dirs):  # the second half is copied in as whole directories
        (staging / names[i]).mkdir()
        write_series(staging / names[i], 1, blobs[i], range(1, per_dir + 1))

    def burst() -> None:
        for i in range(n_dirs // 2):
            (root / names[i]).mkdir()
            write_series(root / names[i], 1, blobs[i], range(1, per_dir + 1))
            (staging / names[-1 - i]).rename(root / names[-1 - i])

    db = tmp_path / "db.sqlite"
    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                Config(roots=(root,), db=db, port=0), stop=stop, task_status=task_status))
            await trio.to_thread.run_sync(burst)

            async def all_counted() -> list[dict[str, Any]] | None:
                series = await station_series(url, STATION)
                done = len(series) == n_dirs and all(s["n_files"] == per_dir for s in series)
                return series if done else None

            series = await poll(all_counted)
            health = await http_json(url + "/healthz")
            stop.set()
    assert len({s["session"] for s in series}) == n_dirs
    assert health["files_seen"] == n_dirs * per_dir
    rows = series_rows(db)
    assert len(rows) == n_dirs and {r[2] for r in rows} == {per_dir}


async def test_sigkill_mid_session_then_restart(tmp_path: Path) -> None:
    """Killed with SIGKILL mid-series; files keep coming; started again: today's series come
    back from the store, the missed files are counted, and no series is recorded twice."""
    root = tmp_path / "scanner"
    session = root / SESSION
    session.mkdir(parents=True)
    db = tmp_path / "db.sqlite"
    blob5 = dicom_blob(tmp_path, SeriesNumber=5, AcqDate=TODAY)
    blob6 = dicom_blob(tmp_path, SeriesNumber=6, AcqDate=TODAY, TR=2000.0)
    learn_template(db, tmp_path)  # the project's usual TR: series 6 does not conform
    service = await start_service(root, db, tmp_path / "log1")
    try:
        with trio.fail_after(20):
            await trio.to_thread.run_sync(write_series, session, 5, blob5, range(1, 51))
            write_series(session, 6, blob6, range(1, 2))
            await poll(lambda: counts(service.url, {5: 50, 6: 1}))
            before = await station_series(service.url, STATION)
    finally:
        service.proc.kill()
        await trio.to_thread.run_sync(service.proc.wait)
    # while it is down: the series goes on, and series 6's file is moved away (so only
    # the store, not the catch-up scan, can bring series 6 back)
    write_series(session, 5, blob5, range(51, 81))
    (session / scanner_name(6, 1)).rename(tmp_path / scanner_name(6, 1))
    service = await start_service(root, db, tmp_path / "log2")
    try:
        with trio.fail_after(20):
            await poll(lambda: counts(service.url, {5: 80, 6: 1}))
            series = await http_json(f"{service.url}/api/stations/{STATION}/series")
    finally:
        assert await service.stop() == 0
    verdicts = {s["series_number"]: s["status"] for s in series}
    assert verdicts == {s["series_number"]: s["status"] for s in before}
    assert verdicts == {5: "conform", 6: "nonconform"}
    assert len(service.log_lines("restored 2 series recorded today")) == 1
    study = synth.DEFAULT_FIELDS["StudyUID"]
    assert series_rows(db) == [(study, 5, 80), (study, 6, 1)]


# --- hostile requests ----------------------------------------------------------------

HOSTILE_PATHS = [
    "/static/../mrqart/live/service.py",
    "/static/..%2f..%2fpyproject.toml",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/..%5c..%5cpyproject.toml",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/....//....//etc/passwd",
    "/station/..%2f..%2fetc%2fpasswd",
    "/station/" + "A" * 300,
    "/api/stations/%00/series",
    "/api/stations/a%0d%0aSet-Cookie:%20x=1/series",
    "/api/stations/..%2F..%2F/series",
    "/api/stations/" + "x" * 5000 + "/series",
    "/api/stations/%ff%fe/series",
]


async def raw_http(host: str, port: int, request: bytes) -> bytes:
    """Send bytes; the answer's head and body (by its content-length), or what came
    before the server closed. (Hypercorn keeps the connection open after answering.)"""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
    return data


async def ask_fresh_service(tmp_path: Path, request: bytes) -> bytes:
    """Start the service, send ``request`` on a raw socket, check the service still
    answers, stop it; what came back (b"" if the server closed without answering)."""
    stop = trio.Event()
    config = Config(roots=(tmp_path,), db=":memory:", port=0, catch_up=False)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, source=MemoryEventSource(), task_status=task_status))
            host, port = url.removeprefix("http://").rsplit(":", 1)
            try:
                answer = await raw_http(host, int(port), request)
            except trio.BrokenResourceError:  # the server may close before reading it all
                answer = b""
            assert (await http_json(url + "/healthz"))["files_seen"] == 0  # still serving
            stop.set()
    return answer


@pytest.mark.parametrize("path", HOSTILE_PATHS, ids=lambda p: p[:40])
async def test_hostile_http_requests_get_a_4xx(path: str, tmp_path: Path) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    answer = await ask_fresh_service(tmp_path, request)
    assert answer.startswith(b"HTTP/1.1 4"), (path, answer[:300])
    for secret in (b"root:x:0:0", b"[build-system]", b"def run_service"):
        assert secret not in answer


@pytest.mark.parametrize("request_bytes", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n",  # TLS hello
    b"GARBAGE / NONSENSE\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X-Big: " + b"y" * 200_000 + b"\r\n\r\n",
])
async def test_garbage_on_the_socket_is_refused(request_bytes: bytes, tmp_path: Path) -> None:
    answer = await ask_fresh_service(tmp_path, request_bytes)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:300]


async def test_garbage_and_huge_websocket_frames(tmp_path: Path) -> None:
    """Garbage text and binary frames are ignored; a frame over the limit closes that
    browser with 1009 (message too big); the others keep getting messages."""
    session = tmp_path / SESSION
    session.mkdir()
    source = MemoryEventSource()
    stop = trio.Event()
    config = Config(roots=(tmp_path,), db=":memory:", port=0, catch_up=False)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, source=source, task_status=task_status))
            ws_url = url.replace("http", "ws") + "/ws"
            async with open_websocket_url(ws_url) as rude, open_websocket_url(ws_url) as big, \
                    open_websocket_url(ws_url) as polite:
                for garbage in ("{not json", "\x00" * 1000, b"\xff\xfe" * 500, "x" * 60_000):
                    await rude.send_message(garbage)
                await big.send_message(os.urandom(MAX_WS_MESSAGE + 1000))
                with pytest.raises(ConnectionClosed) as closed:
                    await big.get_message()
                assert closed.value.reason.code == 1009
                synth.write_dicom(session / scanner_name(3, 1), SeriesNumber=3)
                source.emit(session / scanner_name(3, 1), Flag.CLOSE_WRITE)
                for ws in (rude, polite):
                    assert (await next_message(ws, type="new"))["series"] == key(3)
            assert (await http_json(url + "/healthz"))["hub"]["subscribers"] == 0
            stop.set()


# --- the disk fills up ----------------------------------------------------------------


def fill(directory: Path) -> None:
    """Write into ``directory`` until its filesystem is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, bytes(4096)):
            pass
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


async def test_disk_full_verdicts_go_on_error_logged_once(tmp_path: Path) -> None:
    """The database's filesystem (a 1 MB tmpfs) fills up mid-session: every series still
    reaches the page, the error is logged once, and once space is back the store
    records everything the page saw."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = await trio.run_process(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                                     capture_stderr=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    root = tmp_path / "scanner"
    session = root / SESSION
    session.mkdir(parents=True)
    db = disk / "db.sqlite"
    try:
        service = await start_service(root, db, tmp_path / "log")
        try:
            with trio.fail_after(30):
                async with open_websocket_url(service.url.replace("http", "ws") + "/ws") as ws:
                    synth.write_dicom(session / scanner_name(1, 1), SeriesNumber=1)
                    await next_message(ws, type="new", series=key(1))
                    await trio.to_thread.run_sync(fill, disk)
                    for n in range(2, 10):
                        blob = dicom_blob(tmp_path, SeriesNumber=n)
                        await trio.to_thread.run_sync(write_series, session, n, blob, range(1, 6))
                        await next_message(ws, type="new", series=key(n))
                        await next_message(ws, type="update", series=key(n), content=5)
                    await poll(lambda: trio.to_thread.run_sync(
                        lambda: service.log_lines("failing, verdicts go on")))
                    # two flush periods: the count updates fail again, unlogged
                    await trio.sleep(2.5)
                    assert not (await service.health())["store_ok"]
                    (disk / "filler").unlink()
                    synth.write_dicom(session / scanner_name(10, 1), SeriesNumber=10)
                    await next_message(ws, type="new", series=key(10))
                    await poll(lambda: trio.to_thread.run_sync(
                        lambda: service.log_lines("writable again")))
        finally:
            assert await service.stop() == 0
        failing = service.log_lines("failing, verdicts go on")
        assert len(failing) == 1 and "full" in failing[0], failing
        assert len(service.log_lines("writable again")) == 1
        rows = series_rows(db)
    finally:
        with trio.CancelScope(shield=True):
            await trio.run_process(["umount", "-l", str(disk)])
    assert [(n, count) for _, n, count in rows] == [(1, 1), *((n, 5) for n in range(2, 10)), (10, 1)]


# --- many browsers, one of them stalled ----------------------------------------------

#: Files of other series written per file of the measured one: 600 messages/s are what
#: fill a stalled page's socket and hub buffer within seconds.
NOISE = 6


def stalled_browser(host: str, port: int) -> socket.socket:
    """Open /ws with a tiny receive buffer, then never read again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def paced_series(directory: Path, series: int, blob: bytes, n: int, rate: float,
                 closed: list[float]) -> None:
    """Write n files at ``rate`` files/s, noting time.monotonic() after each close."""
    start = time.monotonic()
    for i in range(1, n + 1):
        delay = start + (i - 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        (directory / scanner_name(series, i)).write_bytes(blob)
        closed.append(time.monotonic())


async def latencies(ws: Any, directory: Path, series: int, blob: bytes, n: int, rate: float,
                    noise: tuple[Path, bytes, int]) -> list[float]:
    """Close-to-message latency (ms) of each file of a series written at ``rate`` files/s,
    while NOISE x that many files of 100 series of another station (``noise``: directory,
    blob, first series number) stream alongside: their messages fill a stalled page."""
    closed: list[float] = []
    received: dict[int, float] = {}
    noise_dir, noise_blob, first = noise

    def noise_writer() -> None:
        start = time.monotonic()
        for i in range(n * NOISE):
            if (delay := start + i / (rate * NOISE) - time.monotonic()) > 0:
                time.sleep(delay)
            (noise_dir / scanner_name(first + i % 100, 1 + i // 100)).write_bytes(noise_blob)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, paced_series, directory, series, blob, n,
                           rate, closed)
        nursery.start_soon(trio.to_thread.run_sync, noise_writer)
        while n not in received:
            m = json.loads(await ws.get_message())
            if m.get("series") == key(series):
                received[1 if m["type"] == "new" else m["content"]] = time.monotonic()
    # counts come coalesced: file i is shown by the first message counting at least i
    shown = sorted(received.items())
    return [(next(at for count, at in shown if count >= i) - t) * 1e3
            for i, t in enumerate(closed, start=1)]


async def test_stalled_browser_among_100_churning_ones(tmp_path: Path) -> None:
    """100 browsers connect and disconnect in a loop while files stream; then one more
    stops reading. The others' latency does not change, and the stalled one is dropped
    (memory stays bounded)."""
    root = tmp_path / "scanner"
    session = root / SESSION
    session.mkdir(parents=True)
    service = await start_service(root, tmp_path / "db.sqlite", tmp_path / "log")
    host, port = service.url.removeprefix("http://").rsplit(":", 1)
    blobs = {n: dicom_blob(tmp_path, SeriesNumber=n) for n in (31, 32)}
    noise_dir = root / "20261124.NOISE"
    noise_dir.mkdir()
    noise_blob = dicom_blob(tmp_path, Station="NOISE", StudyUID="1.2.826.0.1.3680043.11")
    n, rate = 500, 100.0  # per phase: 5 s of files, NOISE x as many alongside
    churners = await trio.to_thread.run_sync(start_churn, service.url)
    try:
        with trio.fail_after(60):
            async with open_websocket_url(service.url.replace("http", "ws") + "/ws") as ws:
                before = await latencies(ws, session, 31, blobs[31], n, rate, (noise_dir, noise_blob, 1000))
                rss_before = service.vm_kb()["VmRSS"]
                stalled = await trio.to_thread.run_sync(stalled_browser, host, int(port))
                try:
                    during = await latencies(
                        ws, session, 32, blobs[32], n, rate, (noise_dir, noise_blob, 300))
                    health = await service.health()
                    rss_after = service.vm_kb()["VmRSS"]
                finally:
                    stalled.close()
    finally:
        connects = await trio.to_thread.run_sync(stop_churn, churners)
        assert await service.stop() == 0
    p50_before, p50_during = statistics.median(before), statistics.median(during)
    print(f"p50 {p50_before:.1f} ms -> {p50_during:.1f} ms with a stalled browser; "
          f"{connects} churn connections; RSS {rss_before} -> {rss_after} kB")
    assert connects >= 100
    # A stalled browser that held up the pipeline would cost seconds (500 files at 100/s);
    # 100 churning clients on 2 shared cores make both medians swing between ~5 and
    # ~130 ms from run to run, whichever phase has the stalled browser.
    assert p50_during < 3 * p50_before + 150.0
    assert health["hub"]["dropped_subscribers"] == 1  # the stalled one, and only it
    assert rss_after - rss_before < 30_000
