"""Siemens XA files from the generator (enhanced and interoperability), the live pipeline
on them, and hostile functional groups and private blocks."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
import trio
from sidecar import close, comparisons
from trio_websocket import open_websocket_url

from mrqart import synth
from mrqart.headers import HEADER_KEYS, NULL, Unreadable, read_header
from mrqart.ingest.inotify import Flag
from mrqart.ingest.watcher import MemoryEventSource
from mrqart.live.service import Config, run_service
from mrqart.store import Store

SESSION = "20261124.MRQART_test.26.11.24_10_00_00_DST_1.2.3"


def header(path: Path) -> dict[str, Any]:
    result = read_header(path)
    assert isinstance(result, dict), result
    return result


CASES = {
    "enhanced, defaults": {"enhanced": True, "frames": 1},
    "enhanced, 96 frames": {"enhanced": True, "frames": 96},
    "enhanced, 3 echoes": {"enhanced": True, "frames": 12, "echo_times": [14.2, 35.9, 57.6]},
    "enhanced, ROW, p3, other shims": {
        "enhanced": True, "frames": 4, "PED_major": "ROW", "Matrix": [0, 256, 240, 0], "iPAT": "p3",
        "Shims": [2, -1, 0, 12345, -300, 0, 7, -8, 9, 123254321], "Phase": 0,
    },
    "interoperability, defaults": {"enhanced": False},
    "interoperability, no TA, p2s3": {"enhanced": False, "TA": NULL, "iPAT": "p2s3"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_generated_xa_files_round_trip(tmp_path: Path, case: str) -> None:
    path = tmp_path / "xa.dcm"
    synth.write_xa(path, **CASES[case])
    result = header(path)
    expected = synth.xa_header(**CASES[case])
    assert list(result) == list(HEADER_KEYS)
    assert result == expected
    assert json.loads(json.dumps(result)) == result


def test_generated_xa_files_are_valid_for_pydicom(tmp_path: Path) -> None:
    # An independent reader sees the same structure: frames, SDS/SDI by creator.
    path = tmp_path / "xa.dcm"
    synth.write_xa(path, frames=5, echo_times=[10.0, 12.46])
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1"
    assert int(ds.NumberOfFrames) == len(ds.PerFrameFunctionalGroupsSequence) == 5
    echoes = [f.MREchoSequence[0].EffectiveEchoTime for f in ds.PerFrameFunctionalGroupsSequence]
    assert echoes == [10.0, 12.46, 10.0, 12.46, 10.0]
    shared = ds.SharedFunctionalGroupsSequence[0]
    sds = shared[shared.private_block(0x0021, "SIEMENS MR SDS 01").get_tag(0xFE)].value[0]
    assert "### ASCCONV BEGIN" in sds[sds.private_block(0x0021, "SIEMENS MR SDS 01").get_tag(0x19)].value.decode()
    assert header(path)["EchoTimes"] == [10.0, 12.46]


def test_private_blocks_found_by_creator_not_number(tmp_path: Path) -> None:
    # A PACS that renumbers the blocks (SDS at 0x42, SDI at 0x43) must not matter.
    path = tmp_path / "xa.dcm"
    synth.write_xa(path, enhanced=False)
    ds = pydicom.dcmread(path)
    moved = pydicom.Dataset()
    for element in ds:
        group, elem = element.tag.group, element.tag.element
        if group == 0x0021 and elem in (0x10, 0x11):
            moved.add_new((0x0021, elem + 0x32), element.VR, element.value)
        elif group == 0x0021 and elem >> 8 in (0x10, 0x11):
            moved.add_new((0x0021, ((elem >> 8) + 0x32) << 8 | (elem & 0xFF)), element.VR, element.value)
        else:
            moved.add(element)
    moved.file_meta = ds.file_meta
    moved.save_as(tmp_path / "moved.dcm", enforce_file_format=True)
    assert header(tmp_path / "moved.dcm") == header(path)


# --- the generator's XA files as dcm2niix reads them ------------------------------------------

DCM2NIIX = shutil.which("dcm2niix")


@pytest.mark.parametrize(
    "fields",
    [
        {"enhanced": True},
        {"enhanced": True, "PED_major": "ROW", "Matrix": [0, 96, 96, 0], "Phase": 0, "iPAT": "p3",
         "TR": 2000.0, "FA": 8.5, "BWPPE": 3.906},
        {"enhanced": False},
        {"enhanced": False, "Phase": 0, "iPAT": "null", "SequenceFile": "%SiemensSeq%/ep2d_bold"},
    ],
    ids=["enhanced", "enhanced ROW p3", "interoperability", "interoperability PA"],
)  # fmt: skip
def test_generated_xa_files_agree_with_dcm2niix(tmp_path: Path, fields: dict[str, Any]) -> None:
    """An independent reader (dcm2niix, the test extra) reads the generator's XA files as
    mrqart does: the generator writes what real XA30 files hold."""
    assert DCM2NIIX, "dcm2niix is part of the test extra (pip install -e '.[test]')"
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    synth.write_xa(source / "xa.dcm", **fields)
    done = subprocess.run([DCM2NIIX, "-b", "o", "-o", str(out), str(source)],
                          check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    docs = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(docs) == 1, done.stdout
    result = header(source / "xa.dcm")
    checked = list(comparisons(result, docs[0]))
    wrong = [f"{f}: mrqart {mine!r} != dcm2niix {theirs!r}" for f, mine, theirs, ok in checked if not ok]
    assert not wrong, "\n".join(wrong)
    # dcm2niix leaves out the acceleration factor of an unaccelerated series.
    accelerated = {"iPAT"} if result["iPAT"] != NULL else set()
    assert {f for f, *_ in checked} >= {"TR", "FA", "PED_major", "Phase", "BWP", "BWPPE",
                                       "Shims", "SequenceFile", "SequenceType"} | accelerated  # fmt: skip
    assert close(result["TE"], docs[0]["EchoTime"] * 1000, 0.001)


# --- hostile XA files -----------------------------------------------------------------------


def seq_head(tag: int) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, b"SQ", 0)


def set_length(data: bytes, pos: int, length: int) -> bytes:
    """`data` with the 4-byte length at `pos` replaced."""
    return data[:pos] + struct.pack("<I", length) + data[pos + 4 :]


def lying_groups(data: bytes) -> bytes:
    # The per-frame functional groups declare 3 GB.
    return set_length(data, data.index(seq_head(0x52009230)) + 8, 3 << 30)


def lying_macro_item(data: bytes) -> bytes:
    # An item nested in a shared macro claims to be longer than its sequence.
    shared = data.index(seq_head(0x52009229))
    item = data.index(b"\xfe\xff\x00\xe0", data.index(b"\xfe\xff\x00\xe0", shared) + 8)
    return set_length(data, item + 4, 50_000)


def lying_private_block(data: bytes) -> bytes:
    # The nested SDS block's sequence (0021,10FE) claims 1 MB.
    return set_length(data, data.index(seq_head(0x002110FE)) + 8, 1 << 20)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lying_groups, "element too large: (5200,9230)"),
        (lying_macro_item, "malformed: a nested element (FFFE,E000) ends beyond its parent"),
        (lying_private_block, "malformed: a nested element (0021,10FE) ends beyond its parent"),
    ],
)
def test_hostile_functional_groups_are_unreadable(tmp_path: Path, damage: Any, reason: str) -> None:
    path = tmp_path / "xa.dcm"
    synth.write_xa(path, frames=4)
    path.write_bytes(damage(path.read_bytes()))
    result = read_header(path)
    assert isinstance(result, Unreadable), result
    assert reason in result.reason, result.reason


ENHANCED_96 = next((Path(__file__).parent / "data" / "dcm_qa_xa30" / "In").glob("5_*/*.dcm"))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        # Cut inside the per-frame groups (undefined lengths, as the scanner writes them).
        (lambda d: d[: len(d) * 3 // 4], "or the file is truncated"),
        # The per-frame sequence's delimiter replaced: it never ends.
        (lambda d: d[: d.rindex(b"\xfe\xff\xdd\xe0")] + b"\xfe\xff\x00\xe1" + d[d.rindex(b"\xfe\xff\xdd\xe0") + 4 :],
         "malformed: unexpected delimiter (FFFE,E100)"),
        # A nested item delimiter where an element of a frame is expected.
        (lambda d: d.replace(b"\x18\x00\x82\x90FD", b"\xfe\xff\x0e\xe0FD", 1), "malformed: unexpected delimiter (FFFE,E00E)"),
    ],
    ids=["cut", "never closed", "bad delimiter"],
)
def test_hostile_real_enhanced_file(tmp_path: Path, damage: Any, reason: str) -> None:
    path = tmp_path / "bad.dcm"
    path.write_bytes(damage(ENHANCED_96.read_bytes()))
    result = read_header(path)
    assert isinstance(result, Unreadable), result
    assert reason in result.reason, result.reason


# --- the live pipeline on XA files -------------------------------------------------------------


async def next_message(ws: Any, **match: Any) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.get_message())
        if all(message.get(k) == v for k, v in match.items()):
            return message


@pytest.mark.parametrize("enhanced", [True, False], ids=["enhanced", "interoperability"])
async def test_xa_series_through_the_service(tmp_path: Path, enhanced: bool) -> None:
    """A template learnt from one XA series; a live XA series with a wrong TR is flagged,
    its later files counted (frames, for enhanced files), a multi-echo enhanced series
    records all its echo times from one file."""
    root = tmp_path / "scanner"
    session = root / SESSION
    session.mkdir(parents=True)
    db = tmp_path / "db.sqlite"
    sample = tmp_path / "sample.dcm"
    synth.write_xa(sample, enhanced=enhanced, SequenceName="rest")
    store = Store(db)
    store.record_series(header(sample), n_files=300, source="import", session="past")
    store.close()
    source = MemoryEventSource()
    stop = trio.Event()
    config = Config(roots=(root,), db=db, port=0, catch_up=False)
    frames = 8 if enhanced else 1
    uid = "1.2.3.4.9"

    def write(index: int, **fields: Any) -> None:
        path = session / f"{index:04d}_1.3.12.2.1107.5.2.43.{index}.dcm"  # XA export names
        extra = {"frames": frames} if enhanced else {}
        synth.write_xa(path, enhanced=enhanced, SeriesUID=uid, InstanceNumber=index,
                       **extra, **fields)  # fmt: skip
        assert source.emit(path, Flag.CLOSE_WRITE)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: run_service(
                config, stop=stop, source=source, task_status=task_status))
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                write(1, SequenceName="rest", TR=2000.0)
                new = await next_message(ws, type="new")
                assert new["content"]["status"] == "nonconform"
                assert new["content"]["errors"] == {"TR": {"expect": 1300.0, "have": 2000.0}}
                assert new["content"]["input"]["Frames"] == frames
                for index in (2, 3):
                    write(index, SequenceName="rest", TR=2000.0)
                update = await next_message(ws, type="update", content=3 * frames)
                assert update["series"] == new["series"]
                if enhanced:
                    path = session / "0001_multi_echo.dcm"
                    synth.write_xa(path, frames=6, echo_times=[14.2, 35.9, 57.6],
                                   SeriesNumber=9, SeriesUID="1.2.3.4.10", SequenceName="me_bold")
                    source.emit(path, Flag.CLOSE_WRITE)
                    await next_message(ws, type="new", series=new["series"].rsplit(":", 1)[0] + ":9")
            stop.set()
    store = Store(db)
    counts = {r["header"]["SeriesNumber"]: r["n_files"] for r in store.series_on("20241016")}
    template = store.template("MRQART_test", "me_bold") if enhanced else None
    store.close()
    assert counts[1] == 3 * frames
    if enhanced:
        assert template is not None and template["TE"] == [14.2, 35.9, 57.6]


@pytest.mark.parametrize("vendor", ["xa", "xa-interop"])
def test_simulated_xa_session_counts_every_image(tmp_path: Path, vendor: str) -> None:
    """`mrqart simulate --vendor xa`: every series of the protocol, its images as frames
    of enhanced files (or single-frame files), echo times as the protocol says."""
    session = synth.write_session(tmp_path, scale=0.05, vendor=vendor)
    frames: dict[int, int] = {}
    echoes: dict[int, set[float]] = {}
    for path in session.iterdir():
        h = header(path)
        assert h["Manufacturer"] == "Siemens Healthineers" and h["not_recorded"] in ([], ["TA"])
        frames[h["SeriesNumber"]] = frames.get(h["SeriesNumber"], 0) + h["Frames"]
        echoes.setdefault(h["SeriesNumber"], set()).update(h["EchoTimes"])
    expected = {
        number: max(1, round(s["n_files"] * 0.05)) * len(s.get("echo_times") or (None,))
        for number, s in enumerate(synth.PROTOCOL, start=1)
    }
    assert frames == expected
    me_bold = 1 + [s["name"] for s in synth.PROTOCOL].index("me_bold")
    assert echoes[me_bold] == {14.2, 35.9, 57.6}
