"""The DICOM node: real dcmtk storescu/echoscu and pynetdicom's SCU against the node
alone and against the whole service, verdicts read from /ws."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage
from trio_websocket import open_websocket_url

from mrqart import synth
from mrqart.headers import read_header
from mrqart.ingest.dicomnode import (
    STATUS_CANNOT_STORE,
    STATUS_SUCCESS,
    Allow,
    DicomNode,
    file_name,
    parse_allow,
    remove_stale_temps,
    study_dir,
)
from mrqart.live.service import Config, run_service
from tests.test_service import free_port, http_json, learn_template

# dcmtk's tools, by path: pynetdicom installs Python scripts of the same names on PATH.
STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"
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


def pynetdicom_store(port: int, paths: list[Path], ae_title: str = "PYSCU") -> list[int]:
    """Send ``paths`` in one association with pynetdicom's SCU; their statuses. Blocking."""
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="MRQART")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(dcmread(p)).Status) for p in paths]
    finally:
        assoc.release()


def received(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


# -- the node alone -------------------------------------------------------------------
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
    entered, release, answered = trio.Event(), trio.Event(), trio.Event()

    async def room() -> None:  # a pipeline that is behind until released
        entered.set()
        await release.wait()

    node = DicomNode(tmp_path / "recv", port=0, room=room)
    statuses: list[int] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(node.run)

            async def send() -> None:
                statuses.extend(await trio.to_thread.run_sync(pynetdicom_store, port, [path]))
                answered.set()

            nursery.start_soon(send)
            await entered.wait()
            assert node.statistics().waiting == 1
            assert statuses == [] and received(tmp_path / "recv") == []
            release.set()
            await answered.wait()
            assert statuses == [STATUS_SUCCESS]
            assert node.statistics().waiting == 0
            nursery.cancel_scope.cancel()
    assert [p.name for p in received(tmp_path / "recv")] == ["001_000002_000005.dcm"]


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


async def test_storescu_to_the_service_flags_the_wrong_series(tmp_path: Path) -> None:
    root = tmp_path / "scanner"
    root.mkdir()
    db = tmp_path / "db.sqlite"
    learn_template(db, tmp_path, SequenceName="rest", TR=1300.0)
    src = synth.write_session(tmp_path / "src", scale=0.05, wrong={"rest": {"TR": 2000.0}})
    per_series = expected_counts(src)
    study = dcmread(next(src.iterdir())).StudyInstanceUID
    dicom_port = free_port()
    config = Config(roots=(root,), db=db, port=0, dicom_port=dicom_port)
    stop = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, task_status=task_status))
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                echo = await run_tool(ECHOSCU, "-aec", "MRQART", "127.0.0.1", str(dicom_port))
                assert echo.returncode == 0, echo.stderr
                store = await run_tool(STORESCU, "-aec", "MRQART", "+sd", "+r",
                                       "127.0.0.1", str(dicom_port), str(src))
                assert store.returncode == 0, store.stderr
                messages = await collect_until(
                    ws, {f"{study}:{n}": count for n, count in per_series.items()})
            health = await http_json(url + "/healthz")
            stop.set()
    news = [m for m in messages if m["type"] == "new"]
    # every series announced once, with its verdict; only "rest" is wrong
    assert sorted(m["series"] for m in news) == sorted(f"{study}:{n}" for n in per_series)
    verdicts = {m["content"]["input"]["SequenceName"]: m["content"] for m in news}
    assert verdicts["rest"]["status"] == "nonconform"
    assert verdicts["rest"]["errors"]["TR"] == {"expect": 1300.0, "have": 2000.0}
    assert all(v["status"] != "nonconform" for k, v in verdicts.items() if k != "rest")
    # every instance received once: one file each, each seen once by the pipeline
    files = received(root / "dicomnode")
    assert len(files) == sum(per_series.values())
    assert health["files_seen"] == len(files)
    assert health["unreadable"] == 0


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
