"""The DICOM node: real dcmtk storescu/echoscu and pynetdicom's SCU against the node
alone and against the whole service, verdicts read from /ws."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from pydicom import Dataset, dcmread
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage
from trio_websocket import open_websocket_url

from mrqart import synth
from mrqart.headers import read_header
from mrqart.ingest.dicomnode import (
    STATUS_CANNOT_STORE,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    Allow,
    DicomNode,
    file_name,
    parse_allow,
    remove_stale_temps,
    study_dir,
)
from mrqart.live.service import FILE_BUFFER, Config, Pipeline, run_service
from mrqart.store import Store
from tests.faultkit import poll, series_rows, start_service
from tests.test_faults import fill
from tests.test_service import (
    TODAY,
    free_port,
    http_json,
    learn_template,
    next_message,
    start_cli,
    station_series,
)

# dcmtk's tools, by path: pynetdicom installs Python scripts of the same names on PATH.
STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"


@pytest.fixture
def dcmtk() -> None:
    """Skip without dcmtk's tools on a developer's machine; in CI (CI=true) their absence
    is a failure (.ci/run installs Debian's dcmtk)."""
    missing = [tool for tool in (STORESCU, ECHOSCU) if not os.path.exists(tool)]
    if missing:
        message = f"{', '.join(missing)} not found: install Debian's dcmtk package"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


needs_dcmtk = pytest.mark.usefixtures("dcmtk")
STUDY = synth.DEFAULT_FIELDS["StudyUID"]


# -- pure parts -------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("SCANNER1", (Allow("SCANNER1"),)),
    ("10.0.0.5", (Allow(None, ipaddress.ip_network("10.0.0.5/32")),)),
    ("10.0.0.0/24", (Allow(None, ipaddress.ip_network("10.0.0.0/24")),)),
    ("AWP167046@10.1.2.3", (Allow("AWP167046", ipaddress.ip_network("10.1.2.3/32")),)),
    ("::1", (Allow(None, ipaddress.ip_network("::1/128")),)),
    ("A, B ,,", (Allow("A"), Allow("B"))),
])
def test_parse_allow(text: str, expected: tuple[Allow, ...]) -> None:
    assert parse_allow([text]) == expected


@pytest.mark.parametrize(("text", "complaint"), [
    ("SEVENTEEN_LETTERS", "16 characters"),
    ("SCANNER@scanner.example.org", "not an IP address"),
])
def test_parse_allow_refuses(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_allow([text])


@pytest.mark.parametrize(("entry", "ae", "address", "admitted"), [
    ("SCANNER", "SCANNER", "10.9.9.9", True),
    ("SCANNER", "OTHER", "10.9.9.9", False),
    ("10.0.0.0/24", "ANY", "10.0.0.77", True),
    ("10.0.0.0/24", "ANY", "10.0.1.77", False),
    ("SCANNER@10.0.0.5", "SCANNER", "10.0.0.5", True),
    ("SCANNER@10.0.0.5", "SCANNER", "10.0.0.6", False),
    ("SCANNER@10.0.0.5", "OTHER", "10.0.0.5", False),
])
def test_allow_admits(entry: str, ae: str, address: str, admitted: bool) -> None:
    (allow,) = parse_allow([entry])
    assert allow.admits(ae, address) is admitted


@pytest.mark.parametrize(("series", "instance", "sop", "expected"), [
    (5, 12, "1.2.3", "001_000005_000012.dcm"),
    ("17", "66", "1.2.3", "001_000017_000066.dcm"),
    (None, 3, "1.2.3.4", "MR.1.2.3.4"),
    ("x", 3, "1.2.3.4", "MR.1.2.3.4"),
    (-1, 3, "1.2.3.4", "MR.1.2.3.4"),
])
def test_file_name(series: Any, instance: Any, sop: str, expected: str) -> None:
    assert file_name(series, instance, sop) == expected


def test_names_never_carry_paths() -> None:
    assert file_name(None, None, "../../etc/passwd").startswith("MR.unknown-")
    assert study_dir("../x") == study_dir(None) == study_dir("1." * 40) == "unknown-study"
    assert study_dir("1.2.840.1") == "1.2.840.1"


def test_node_off_loopback_needs_an_allow_list(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--dicom-allow"):
        DicomNode(tmp_path, host="0.0.0.0")
    DicomNode(tmp_path, host="0.0.0.0", allow=parse_allow(["SCANNER"]))


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    study = tmp_path / "1.2.3"
    study.mkdir()
    (study / ".001_000001_000001.dcm.abcd1234.part").write_bytes(b"half")
    (study / "001_000001_000002.dcm").write_bytes(b"whole")
    assert remove_stale_temps(tmp_path) == 1
    assert [p.name for p in study.iterdir()] == ["001_000001_000002.dcm"]


# -- helpers --------------------------------------------------------------------------
async def run_tool(*argv: str) -> trio.CompletedProcess[bytes]:
    return await trio.run_process(list(argv), capture_stdout=True, capture_stderr=True,
                                  check=False)


def open_association(port: int) -> Any:
    """An association from pynetdicom's SCU (AE title SCANNER) to the node. Blocking."""
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="MRQART")
    assert assoc.is_established
    return assoc


def pynetdicom_store(port: int, items: list[Path] | list[Dataset]) -> list[int]:
    """Send files or data sets in one association with pynetdicom's SCU; their
    statuses. Blocking."""
    assoc = open_association(port)
    try:
        return [int(assoc.send_c_store(dcmread(x) if isinstance(x, Path) else x).Status)
                for x in items]
    finally:
        assoc.release()


class Background:
    """pynetdicom's SCU sending in a worker thread: ``statuses`` once ``answered``."""

    def __init__(self, nursery: trio.Nursery, port: int, items: list[Path] | list[Dataset]) -> None:
        self.statuses: list[int] = []
        self.answered = trio.Event()
        nursery.start_soon(self._send, port, items)

    async def _send(self, port: int, items: list[Path] | list[Dataset]) -> None:
        self.statuses.extend(await trio.to_thread.run_sync(pynetdicom_store, port, items))
        self.answered.set()


def received(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


# -- the node alone -------------------------------------------------------------------
@needs_dcmtk
async def test_node_answers_echo_and_writes_what_storescu_sends(tmp_path: Path) -> None:
    src = synth.write_session(tmp_path / "src", scale=0.02)
    sent = sorted(src.iterdir())
    node = DicomNode(tmp_path / "recv", port=0)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(node.run)
            echo = await run_tool(ECHOSCU, "127.0.0.1", str(port))
            assert echo.returncode == 0, echo.stderr
            store = await run_tool(STORESCU, "-aec", "MRQART", "127.0.0.1", str(port), *map(str, sent))
            assert store.returncode == 0, store.stderr
            nursery.cancel_scope.cancel()
    got = received(tmp_path / "recv")
    # scanner names in one directory per study; each file is the one sent, byte for byte
    # in its data set (storescu may re-encode the meta header)
    study = dcmread(sent[0]).StudyInstanceUID
    assert [p.relative_to(tmp_path / "recv").as_posix() for p in got] == [
        f"{study}/{p.name}" for p in sent]
    for original, copy in zip(sent, got, strict=True):
        assert read_header(copy) == {**read_header(original)}
        assert dcmread(copy).PixelData == dcmread(original).PixelData
    assert node.statistics().stored == len(sent)
    assert node.statistics().failed == 0


async def test_a_store_that_cannot_be_written_gets_a_failure_status(tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    synth.write_dicom(path, SeriesNumber=7, InstanceNumber=1)
    recv = tmp_path / "recv"
    recv.mkdir()
    # A file where the study's directory must go: mkdir fails (root ignores file modes,
    # not this).
    (recv / STUDY).write_bytes(b"in the way")
    node = DicomNode(recv, port=0)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(node.run)
            statuses = await trio.to_thread.run_sync(pynetdicom_store, port, [path])
            assert statuses == [STATUS_CANNOT_STORE]
            assert node.statistics().failed == 1 and node.statistics().stored == 0
            # the way is clear again: the scanner's retry succeeds
            (recv / STUDY).unlink()
            statuses = await trio.to_thread.run_sync(pynetdicom_store, port, [path])
            assert statuses == [STATUS_SUCCESS]
            nursery.cancel_scope.cancel()
    assert [p.name for p in received(recv)] == ["001_000007_000001.dcm"]


async def test_a_store_waits_for_room_in_the_pipeline(tmp_path: Path) -> None:
    """Backpressure: while ``room`` does not return, the C-STORE gets no answer and no
    file is written; once it returns, the file is written and success answered."""
    path = tmp_path / "one.dcm"
    synth.write_dicom(path, SeriesNumber=2, InstanceNumber=5)
    entered, release = trio.Event(), trio.Event()

    async def room() -> None:  # a pipeline that is behind until released
        entered.set()
        await release.wait()

    node = DicomNode(tmp_path / "recv", port=0, room=room)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(node.run)
            scu = Background(nursery, port, [path])
            await entered.wait()
            assert node.statistics().waiting == 1
            assert scu.statuses == [] and received(tmp_path / "recv") == []
            release.set()
            await scu.answered.wait()
            assert scu.statuses == [STATUS_SUCCESS]
            assert node.statistics().waiting == 0
            nursery.cancel_scope.cancel()
    assert [p.name for p in received(tmp_path / "recv")] == ["001_000002_000005.dcm"]


async def test_the_first_file_of_a_new_study_waits_for_the_watch(tmp_path: Path) -> None:
    """The node makes a new study's directory, and writes its first file only once the
    watcher follows it (so the rename is an event, not a scan that holds it back)."""
    path = tmp_path / "one.dcm"
    synth.write_dicom(path, SeriesNumber=3, InstanceNumber=1)
    recv = tmp_path / "recv"
    watching = False
    asked = trio.Event()

    def watched(directory: Path) -> bool:  # a watcher that has not got there yet
        asked.set()
        return watching

    node = DicomNode(recv, port=0, watched=watched, watch_wait=60)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(node.run)
            scu = Background(nursery, port, [path])
            await asked.wait()
            await poll(lambda: trio.to_thread.run_sync((recv / STUDY).is_dir))
            assert received(recv) == [] and scu.statuses == []
            watching = True
            await scu.answered.wait()
            nursery.cancel_scope.cancel()
    assert scu.statuses == [STATUS_SUCCESS]
    assert [p.name for p in received(recv)] == ["001_000003_000001.dcm"]


async def test_a_watch_that_never_comes_delays_the_file_but_does_not_lose_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "one.dcm"
    synth.write_dicom(path)
    node = DicomNode(tmp_path / "recv", port=0, watched=lambda d: False, watch_wait=0.05)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(node.run)
            statuses = await trio.to_thread.run_sync(pynetdicom_store, port, [path, path])
            nursery.cancel_scope.cancel()
    assert statuses == [STATUS_SUCCESS] * 2
    assert len(received(tmp_path / "recv")) == 1  # the same instance twice: one file


# -- through the whole service ---------------------------------------------------------
async def collect_until(ws: Any, expected: dict[str, int]) -> list[dict[str, Any]]:
    """Every message until each series key in ``expected`` has reached its file count."""
    messages = []
    counts: dict[str, int] = {}
    while any(counts.get(k, 0) < n for k, n in expected.items()):
        message = json.loads(await ws.get_message())
        messages.append(message)
        if message["type"] == "new":
            counts[message["series"]] = max(counts.get(message["series"], 0), 1)
        elif message["type"] == "update":
            counts[message["series"]] = message["content"]
    return messages


def expected_counts(session: Path) -> dict[int, int]:
    """Series number -> number of files in a synthetic session directory."""
    return dict(Counter(int(p.name.split("_")[1]) for p in session.iterdir()))


async def storescu_to_service(
    tmp_path: Path, expected: dict[str, int], *inputs: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the service with a DICOM node on ``tmp_path/scanner``, check that it answers
    C-ECHO, send ``inputs`` with storescu in one association, and read /ws until every
    series key in ``expected`` has its count: (the messages, /healthz)."""
    (tmp_path / "scanner").mkdir()
    config = Config(roots=(tmp_path / "scanner",), db=tmp_path / "db.sqlite", port=0,
                    dicom_port=free_port())
    address = ("127.0.0.1", str(config.dicom_port))
    stop = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, task_status=task_status))
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                echo = await run_tool(ECHOSCU, "-aec", "MRQART", *address)
                assert echo.returncode == 0, echo.stderr
                store = await run_tool(STORESCU, "-aec", "MRQART", "+sd", "+r", *address, *inputs)
                assert store.returncode == 0, store.stderr
                messages = await collect_until(ws, expected)
            health = await http_json(url + "/healthz")
            stop.set()
    return messages, health


@needs_dcmtk
async def test_storescu_to_the_service_flags_the_wrong_series(tmp_path: Path) -> None:
    learn_template(tmp_path / "db.sqlite", tmp_path, SequenceName="rest", TR=1300.0)
    src = synth.write_session(tmp_path / "src", scale=0.05, wrong={"rest": {"TR": 2000.0}})
    per_series = expected_counts(src)
    study = dcmread(next(src.iterdir())).StudyInstanceUID
    messages, health = await storescu_to_service(
        tmp_path, {f"{study}:{n}": count for n, count in per_series.items()}, str(src))
    news = [m for m in messages if m["type"] == "new"]
    # every series announced once, with its verdict; only "rest" is wrong
    assert sorted(m["series"] for m in news) == sorted(f"{study}:{n}" for n in per_series)
    verdicts = {m["content"]["input"]["SequenceName"]: m["content"] for m in news}
    assert verdicts["rest"]["status"] == "nonconform"
    assert verdicts["rest"]["errors"]["TR"] == {"expect": 1300.0, "have": 2000.0}
    assert all(v["status"] != "nonconform" for k, v in verdicts.items() if k != "rest")
    # every instance received once: one file each, each seen once by the pipeline
    files = received(tmp_path / "scanner" / "dicomnode")
    assert len(files) == sum(per_series.values())
    assert health["files_seen"] == len(files)
    assert health["unreadable"] == 0


CORPUS = Path(__file__).parent / "data"


@needs_dcmtk
async def test_real_scanner_files_arrive_whole_and_counted(tmp_path: Path) -> None:
    """The real headers in tests/data (Siemens E11 and XA30 enhanced and interoperability,
    GE, Philips enhanced; MR and Enhanced MR Image Storage) sent by storescu in one
    association: each file lands once, reads back the same header, and each series
    reaches the page with its file count."""
    originals = sorted(CORPUS.rglob("*.dcm"))
    assert len(originals) >= 20
    expected = Counter(
        f"{ds.StudyInstanceUID}:{ds.SeriesNumber}"
        for ds in (dcmread(p, stop_before_pixels=True) for p in originals))
    messages, health = await storescu_to_service(tmp_path, dict(expected), *map(str, originals))
    assert sorted(m["series"] for m in messages if m["type"] == "new") == sorted(expected)
    assert health["files_seen"] == len(originals) and health["unreadable"] == 0
    by_uid = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in originals}
    got = received(tmp_path / "scanner" / "dicomnode")
    assert len(got) == len(originals)
    for copy in got:
        original = by_uid[dcmread(copy, stop_before_pixels=True).SOPInstanceUID]
        assert read_header(copy) == read_header(original), original


@needs_dcmtk
async def test_allow_list_rejects_other_ae_titles(tmp_path: Path) -> None:
    src = tmp_path / "one.dcm"
    synth.write_dicom(src)
    node = DicomNode(tmp_path / "recv", port=0, allow=parse_allow(["SCANNER"]))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(node.run)
            ok = await run_tool(ECHOSCU, "-aet", "SCANNER", "127.0.0.1", str(port))
            assert ok.returncode == 0, ok.stderr
            refused = await run_tool(STORESCU, "-aet", "INTRUDER", "127.0.0.1", str(port), str(src))
            assert refused.returncode != 0
            assert b"Calling AE Title Not Recognized" in refused.stderr
            nursery.cancel_scope.cancel()
    assert node.statistics().refused == 1
    assert received(tmp_path / "recv") == []


# -- failures, shutdown and kill -9, through the whole service --------------------------
async def mounted_tmpfs(directory: Path, options: str) -> None:
    directory.mkdir()
    done = await run_tool("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")


@pytest.mark.faults
async def test_a_full_receive_disk_answers_out_of_resources_and_counts_nothing(
    tmp_path: Path,
) -> None:
    """The receive directory's filesystem (a 1 MB tmpfs, outside the watched root) is
    full: the C-STORE gets 0xA700, nothing reaches the pipeline; with space back, the
    scanner's retry is stored and counted once."""
    disk = tmp_path / "disk"
    await mounted_tmpfs(disk, "size=1m")
    try:
        root = tmp_path / "scanner"
        root.mkdir()
        path = tmp_path / "one.dcm"
        synth.write_dicom(path, SeriesNumber=4, InstanceNumber=1)
        await trio.to_thread.run_sync(fill, disk)
        config = Config(roots=(root,), db=tmp_path / "db.sqlite", port=0,
                        dicom_port=free_port(), dicom_dir=disk)
        stop = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                url = await nursery.start(lambda task_status: run_service(
                    config, stop=stop, task_status=task_status))
                assert await trio.to_thread.run_sync(
                    pynetdicom_store, config.dicom_port, [path]) == [STATUS_OUT_OF_RESOURCES]
                assert (await http_json(url + "/healthz"))["files_seen"] == 0
                (disk / "filler").unlink()
                async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                    assert await trio.to_thread.run_sync(
                        pynetdicom_store, config.dicom_port, [path]) == [STATUS_SUCCESS]
                    new = await next_message(ws, type="new")
                assert new["series"] == f"{STUDY}:4"
                health = await http_json(url + "/healthz")
                stop.set()
        assert health["files_seen"] == 1
        assert [p.name for p in received(disk)] == ["001_000004_000001.dcm"]
    finally:
        with trio.CancelScope(shield=True):
            await run_tool("umount", "-l", str(disk))


@pytest.mark.faults
async def test_a_read_only_receive_disk_answers_failure(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    await mounted_tmpfs(disk, "ro,size=1m")
    try:
        path = tmp_path / "one.dcm"
        synth.write_dicom(path)
        node = DicomNode(disk, port=0)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(node.run)
                statuses = await trio.to_thread.run_sync(pynetdicom_store, port, [path] * 3)
                nursery.cancel_scope.cancel()
        assert statuses == [STATUS_CANNOT_STORE] * 3
        assert node.statistics().failed == 3 and received(disk) == []
    finally:
        with trio.CancelScope(shield=True):
            await run_tool("umount", "-l", str(disk))


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.faults
async def test_sigterm_stops_accepting_and_lets_the_running_association_finish(
    tmp_path: Path,
) -> None:
    root = tmp_path / "scanner"
    root.mkdir()
    db = tmp_path / "db.sqlite"
    paths = []
    for i in (1, 2):
        paths.append(tmp_path / f"{i}.dcm")
        synth.write_dicom(paths[-1], SeriesNumber=3, InstanceNumber=i, AcqDate=TODAY)
    dicom_port = free_port()
    service = await start_service(root, db, tmp_path / "log",
                                  args=("--dicom-port", str(dicom_port)))
    try:
        with trio.fail_after(30):
            assoc = await trio.to_thread.run_sync(open_association, dicom_port)
            first = await trio.to_thread.run_sync(lambda: assoc.send_c_store(dcmread(paths[0])))
            assert first.Status == STATUS_SUCCESS
            service.proc.send_signal(signal.SIGTERM)
            closed = await poll(lambda: trio.to_thread.run_sync(service.log_lines, "closed its port"))
            assert "waiting for 1 running associations" in closed[0]
            assert await trio.to_thread.run_sync(refused, dicom_port)
            # no new association, but the running one goes on...
            second = await trio.to_thread.run_sync(lambda: assoc.send_c_store(dcmread(paths[1])))
            assert second.Status == STATUS_SUCCESS
            await trio.to_thread.run_sync(assoc.release)
            # ...and the process ends once it is released
            assert await trio.to_thread.run_sync(service.proc.wait, 10) == 0
    finally:
        service.proc.kill()
    lines = service.log_lines("association from AE 'SCANNER'")
    assert len(lines) == 1 and "2 instances stored, 0 failed" in lines[0], lines
    # both files went through the pipeline before it stopped
    assert [(n, count) for _, n, count in series_rows(db)] == [(3, 2)]


@pytest.mark.faults
@needs_dcmtk
async def test_kill_9_during_a_transfer_then_restart_counts_each_instance_once(
    tmp_path: Path,
) -> None:
    root = tmp_path / "scanner"
    root.mkdir()
    db = tmp_path / "db.sqlite"
    src = synth.write_session(tmp_path / "src", scale=0.3)
    per_series = expected_counts(src)
    total = sum(per_series.values())
    recv = root / "dicomnode"
    dicom_port = free_port()
    args = ("--dicom-port", str(dicom_port))

    def files_received() -> list[Path]:
        return [p for p in recv.rglob("*.dcm")] if recv.exists() else []

    service = await start_service(root, db, tmp_path / "log1", args=args)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_tool, STORESCU, "-aec", "MRQART", "+sd", "+r",
                                   "127.0.0.1", str(dicom_port), str(src))
                await poll(lambda: trio.to_thread.run_sync(
                    lambda: len(files_received()) > total // 4))
                service.proc.kill()  # SIGKILL in the middle of the transfer
                await trio.to_thread.run_sync(service.proc.wait)
    finally:
        service.proc.kill()
    before = files_received()
    assert 0 < len(before) < total
    # no half-written file under a name the watcher would read
    for path in before:
        assert isinstance(read_header(path), dict), path

    service = await start_service(root, db, tmp_path / "log2", args=args)
    try:
        with trio.fail_after(60):
            # the scanner sends the whole session again
            again = await run_tool(STORESCU, "-aec", "MRQART", "+sd", "+r",
                                   "127.0.0.1", str(dicom_port), str(src))
            assert again.returncode == 0, again.stderr

            async def complete() -> list[dict[str, Any]] | None:
                series = await station_series(service.url, "AWP167046")
                counts = {s["series_number"]: s["n_files"] for s in series}
                return series if counts == per_series else None

            series = await poll(complete)
            health = await service.health()
    finally:
        assert await service.stop() == 0
    assert len(series) == len(per_series)  # each series once
    assert health["unreadable"] == 0
    assert len(files_received()) == total
    assert not list(recv.rglob("*.part"))  # stale temp files removed at the restart
    assert sorted((n, c) for _, n, c in series_rows(db)) == sorted(per_series.items())


class StalledStore(Store):
    """A real store whose template lookups wait until ``release`` is set: a session task
    stuck behind a slow database, so the pipeline falls behind."""

    release = threading.Event()

    def template(self, project: str, sequence_name: str) -> dict[str, Any] | None:
        self.release.wait()
        return super().template(project, sequence_name)


async def test_a_pipeline_that_is_behind_holds_the_c_store_back(tmp_path: Path) -> None:
    """End to end backpressure: the session task is stuck on the first file, the
    watcher's channel fills to half, and the next C-STORE waits (no file written, no
    answer) until the pipeline moves again; then every instance is stored and counted."""
    root = tmp_path / "scanner"
    root.mkdir()
    first = tmp_path / "first.dcm"
    synth.write_dicom(first, SeriesNumber=9, InstanceNumber=1, AcqDate=TODAY)
    datasets = []
    for i in range(1, 201):
        ds = dcmread(first)
        ds.InstanceNumber, ds.SOPInstanceUID = i, f"{ds.SOPInstanceUID}.{i}"
        datasets.append(ds)
    config = Config(roots=(root,), db=tmp_path / "db.sqlite", catch_up=False)
    StalledStore.release.clear()
    pipeline = Pipeline(config, open_store=StalledStore)
    node = DicomNode(root / "dicomnode", port=0, room=pipeline.wait_for_room)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(pipeline.run)
                port = await nursery.start(node.run)
                scu = Background(nursery, port, datasets)
                await poll(lambda: trio.to_thread.run_sync(lambda: node.statistics().waiting))
                stalled_at = node.statistics().stored
                assert FILE_BUFFER // 2 <= stalled_at < len(datasets)
                assert scu.statuses == []
                StalledStore.release.set()
                await scu.answered.wait()
                await poll(lambda: trio.to_thread.run_sync(
                    lambda: pipeline.health()["files_seen"] == len(datasets)))
                nursery.cancel_scope.cancel()
    finally:
        StalledStore.release.set()
    assert scu.statuses == [STATUS_SUCCESS] * len(datasets)
    assert pipeline.state.series_of("AWP167046")[0]["n_files"] == len(datasets)


# -- the command line and the hypercorn deploy ---------------------------------------------
def test_a_node_off_loopback_without_allow_list_does_not_start(tmp_path: Path) -> None:
    root = tmp_path / "scanner"
    root.mkdir()
    proc = start_cli(["run", str(root), "--host", "0.0.0.0", "--no-auth", "--port", "0", "--db",
                      str(tmp_path / "db.sqlite"), "--dicom-port", str(free_port())])
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "--dicom-allow" in err and "mrqart stopped:" in err, err


def test_a_bad_allow_entry_is_a_usage_error(tmp_path: Path) -> None:
    proc = start_cli(["run", str(tmp_path), "--dicom-port", "11112",
                      "--dicom-allow", "SCANNER@scanner.example.org"])
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "not an IP address" in err


def start_hypercorn(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--bind",
         f"127.0.0.1:{port}", "mrqart.live.service:app_from_env()"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@needs_dcmtk
async def test_deployed_under_hypercorn_the_node_answers(tmp_path: Path) -> None:
    root = tmp_path / "scanner"
    root.mkdir()
    port, dicom_port = free_port(), free_port()
    proc = await trio.to_thread.run_sync(start_hypercorn, port, {
        "MRQART_WATCH": str(root), "MRQART_DB": str(tmp_path / "db.sqlite"),
        "MRQART_DICOM_PORT": str(dicom_port), "MRQART_AE_TITLE": "QANODE"})
    path = tmp_path / "one.dcm"
    synth.write_dicom(path, SeriesNumber=6)
    try:
        with trio.fail_after(30):
            async def echoed() -> bool:
                done = await run_tool(ECHOSCU, "-aec", "QANODE", "127.0.0.1", str(dicom_port))
                return done.returncode == 0

            await poll(echoed)
            stored = await run_tool(STORESCU, "-aec", "QANODE", "127.0.0.1", str(dicom_port),
                                    str(path))
            assert stored.returncode == 0, stored.stderr

            async def counted() -> bool:
                return bool(await station_series(f"http://127.0.0.1:{port}", "AWP167046"))

            await poll(counted)
    finally:
        proc.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(proc.wait, 10)
    assert [p.name for p in received(root / "dicomnode")] == ["001_000006_000001.dcm"]


async def test_shutdown_aborts_an_association_that_outlives_the_drain(tmp_path: Path) -> None:
    """SIGTERM waits for running associations only ``drain_seconds``: one that stays open
    longer (a scanner that never releases) is aborted and the node's task ends."""
    node = DicomNode(tmp_path / "recv", port=0, drain_seconds=0.2)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(node.run)
            assoc = await trio.to_thread.run_sync(open_association, port)
            cancelled_at = time.monotonic()
            nursery.cancel_scope.cancel()
        stopped_after = time.monotonic() - cancelled_at
        await poll(lambda: trio.to_thread.run_sync(lambda: assoc.is_aborted))
    # drain_seconds and the abort, not the SCU's patience (it would wait for ever)
    assert stopped_after < 5, stopped_after
    assert node.statistics().active == 0
