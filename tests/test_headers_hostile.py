"""read_header against hostile and malformed files (issue 10) and the CSA tag walk (issue 11).

Every hostile input gives Unreadable with a reason, never an exception, never a block,
never an allocation the size of a declared length.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from mrqart import synth
from mrqart.headers import Unreadable, read_header
from mrqart.headers import siemens_csa as csa
from mrqart.headers.dicom import MAX_DEPTH, MAX_HEADER_BYTES

MiB = 1024 * 1024


def good_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "good.dcm"
    synth.write_dicom(path)
    return path.read_bytes()


def after_meta(data: bytes) -> int:
    """Offset of the first data set element: after (0002,0000) FileMetaInformationGroupLength."""
    assert data[132:136] == b"\x02\x00\x00\x00"
    return 132 + 12 + struct.unpack_from("<I", data, 140)[0]


def insert_first(data: bytes, raw: bytes) -> bytes:
    """`raw` spliced in as the first data set element(s)."""
    pos = after_meta(data)
    return data[:pos] + raw + data[pos:]


def nested_sequences(depth: int) -> bytes:
    """(0008,0001) SQ with `depth` nested undefined-length sequences and items."""
    open_one = b"\x08\x00\x01\x00SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    close_one = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return open_one * depth + close_one * depth


def ob_element(tag: int, length: int) -> bytes:
    """The head of an OB element declaring `length` bytes (its value not included)."""
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, b"OB", 0, length)


def sparse(path: Path, head: bytes, size: int) -> Path:
    """`head` followed by zeros up to `size` bytes, as a sparse file (no disk, no RAM)."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def read_bounded(path: Path | str) -> tuple[dict | Unreadable, int]:
    """read_header's result and its peak Python allocation in bytes."""
    tracemalloc.start()
    try:
        result = read_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


# --- the hostile inputs, one row each ---------------------------------------------------


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "MR.fifo.dcm"
    os.mkfifo(path)
    return path


def unix_socket(tmp_path: Path) -> Path:
    path = tmp_path / "s.dcm"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays
    return path


def symlink_to_good(tmp_path: Path) -> Path:
    target = tmp_path / "target.dcm"
    target.write_bytes(good_bytes(tmp_path))
    link = tmp_path / "link.dcm"
    link.symlink_to(target)
    return link


def symlink_loop(tmp_path: Path) -> Path:
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def deep_sequences(tmp_path: Path) -> Path:
    path = tmp_path / "deep.dcm"
    path.write_bytes(insert_first(good_bytes(tmp_path), nested_sequences(1200)))
    assert 40_000 < path.stat().st_size - len(good_bytes(tmp_path)) < 45_000  # the 42 KB file
    return path


def declared_4gb(tmp_path: Path) -> Path:
    path = tmp_path / "4gb.dcm"
    path.write_bytes(insert_first(good_bytes(tmp_path), ob_element(0x00080001, 0xFFFFFFF0)))
    return path


def beyond_file(tmp_path: Path) -> Path:
    # 1 MB declared, a few KB there: under the cap, beyond the file.
    path = tmp_path / "beyond.dcm"
    path.write_bytes(insert_first(good_bytes(tmp_path), ob_element(0x00080001, MiB)))
    return path


def huge_private_element(tmp_path: Path) -> Path:
    # A 512 MB file: a real header whose first element is a 500 MB private OB.
    data = good_bytes(tmp_path)
    pos = after_meta(data)
    head = data[:pos] + ob_element(0x00091010, 500 * MiB)
    return sparse(tmp_path / "512mb.dcm", head, 512 * MiB)


def header_over_cap(tmp_path: Path) -> Path:
    # Twenty 1 MB private elements: each fine, together beyond MAX_HEADER_BYTES.
    data = good_bytes(tmp_path)
    pos = after_meta(data)
    path = tmp_path / "bigheader.dcm"
    with open(path, "wb") as f:
        f.write(data[:pos])
        for i in range(20):
            f.write(ob_element(0x00090000 | (0x1000 + i), MiB))
            f.seek(MiB, os.SEEK_CUR)
        f.write(data[pos:])
    return path


def sequence_with_lying_item(tmp_path: Path) -> Path:
    # An undefined-length sequence whose item declares 3 GB.
    raw = b"\x08\x00\x01\x00SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\x00\x00\x00\xc0"
    path = tmp_path / "lying-item.dcm"
    path.write_bytes(insert_first(good_bytes(tmp_path), raw))
    return path


def unclosed_sequence(tmp_path: Path) -> Path:
    raw = b"\x08\x00\x01\x00SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    path = tmp_path / "unclosed.dcm"
    path.write_bytes(insert_first(good_bytes(tmp_path), raw))
    return path


HOSTILE: dict[str, tuple[Callable[[Path], Path | str], str]] = {
    "FIFO": (fifo, "not a regular file: FIFO"),
    "socket": (unix_socket, "not a regular file: socket"),
    "character device": (lambda _: "/dev/zero", "not a regular file: character device"),
    "symlink to a good file": (symlink_to_good, "symlink (not followed)"),
    "symlink loop": (symlink_loop, "symlink (not followed)"),
    "1,200 nested sequences": (deep_sequences, f"nested deeper than {MAX_DEPTH}"),
    "4 GB declared length": (declared_4gb, "element too large: (0008,0001)"),
    "length beyond the file": (beyond_file, "element too large: (0008,0001)"),
    "512 MB file, 500 MB element": (huge_private_element, "element too large: (0009,1010)"),
    "header beyond the cap": (header_over_cap, "element too large"),
    "sequence item declaring 3 GB": (sequence_with_lying_item, "element too large: (FFFE,E000)"),
    "sequence never closed": (unclosed_sequence, "truncated DICOM"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_file_is_unreadable_with_reason(tmp_path: Path, kind: str) -> None:
    make, reason = HOSTILE[kind]
    path = make(tmp_path)
    box: list[object] = []
    # In a thread: a read that blocks (a FIFO opened for reading) fails the test
    # instead of hanging it.
    reader = threading.Thread(target=lambda: box.append(read_bounded(path)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert box, f"read_header({kind}) blocked"
    result, peak = box[0]
    assert isinstance(result, Unreadable), result
    assert result.path == str(path)
    assert reason in result.reason, result.reason
    # Never allocates a declared length: at most the cap (with the bytearray's
    # over-allocation on growth), plus one read chunk.
    assert peak < MAX_HEADER_BYTES * 5 // 4 + 2 * MiB, f"{kind}: peak {peak:,} bytes"


@pytest.mark.parametrize("kind", ["4 GB declared length", "512 MB file, 500 MB element"])
def test_declared_length_costs_no_memory(tmp_path: Path, kind: str) -> None:
    path = HOSTILE[kind][0](tmp_path)
    _, peak = read_bounded(path)
    assert peak < 2 * MiB, f"peak {peak:,} bytes"


def test_512_mb_of_pixel_data_reads_only_the_header(tmp_path: Path) -> None:
    # A real 512 MB image: the header is read, the pixel data never.
    data = good_bytes(tmp_path)
    pixels = data.rindex(b"\xe0\x7f\x10\x00")
    head = data[:pixels] + ob_element(0x7FE00010, 512 * MiB - pixels - 12)
    path = sparse(tmp_path / "big.dcm", head, 512 * MiB)
    result, peak = read_bounded(path)
    assert result == synth.DEFAULT_FIELDS
    assert peak < 2 * MiB, f"peak {peak:,} bytes"


def test_nesting_within_the_cap_reads(tmp_path: Path) -> None:
    path = tmp_path / "nested.dcm"
    path.write_bytes(insert_first(good_bytes(tmp_path), nested_sequences(MAX_DEPTH)))
    assert read_header(path) == synth.DEFAULT_FIELDS
    path.write_bytes(insert_first(good_bytes(tmp_path), nested_sequences(MAX_DEPTH + 1)))
    assert "nested deeper" in read_header(path).reason


# --- the CSA tag walk (issue 11, 1) ------------------------------------------------------


def stale_name_csa(real: str) -> bytes:
    """A CSA2 image header in which a stale copy of "ImaPATModeText" sits in the unused
    bytes of an earlier tag's 64-byte name field, as Siemens leaves them."""
    elements = {
        "EchoLinePosition": ("IS", ["48"]),
        "ImaAbsTablePosition": ("IS", ["0", "0", "-1210"]),
        "PhaseEncodingDirectionPositive": ("IS", ["1"]),
        "ImaPATModeText": ("LO", [real] if real else []),
        "SliceNormalVector": ("FD", ["0.0", "0.0", "1.0"]),
    }
    data = csa.encode_csa2(elements)
    # The name field of ImaAbsTablePosition: "ImaAbsTablePosition\0ImaPATModeText\0..."
    name = data.index(b"ImaAbsTablePosition\x00")
    stale = b"ImaPATModeText\x00"
    data = data[: name + 20] + stale + data[name + 20 + len(stale) :]
    return data


@pytest.mark.parametrize("real", ["p2", "p2s3", ""])
def test_stale_tag_name_before_the_real_tag(real: str) -> None:
    data = stale_name_csa(real)
    stale = data.index(b"ImaPATModeText\x00")
    assert stale < data.rindex(b"ImaPATModeText\x00")  # a search finds the stale copy first
    # The stale copy passes the old plausibility check (0 <= vm, n_items <= 1000).
    _, vm, _, _, n_items, _ = struct.unpack_from("<64si4s3i", data, stale)
    assert 0 <= vm <= 1000 and 0 <= n_items <= 1000
    found = csa.image_elements(data, ("ImaPATModeText", "PhaseEncodingDirectionPositive"))
    assert found == {"ImaPATModeText": real or None, "PhaseEncodingDirectionPositive": "1"}


def test_stale_name_through_read_header(tmp_path: Path) -> None:
    data = good_bytes(tmp_path)
    image = synth._image_csa(1, "p2")
    assert image in data
    path = tmp_path / "stale.dcm"
    stale = stale_name_csa("p2s3")
    # Same-length swap keeps every element length right.
    stale = stale + b"\x00" * (len(image) - len(stale))
    assert len(stale) == len(image)
    path.write_bytes(data.replace(image, stale))
    result = read_header(path)
    assert isinstance(result, dict), result
    assert (result["iPAT"], result["Phase"]) == ("p2s3", 1)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        # The check field after n_items is neither 77 nor 205: the walk stops there.
        (lambda d: d[:96] + struct.pack("<i", 12) + d[100:], {"a": None, "b": None}),
        # n_items lies: the walk goes astray after a's first item and never meets b.
        (lambda d: d[:92] + struct.pack("<i", 12) + d[96:], {"a": "1", "b": None}),
        # An item length past the end: the tags before it keep their values.
        # (b's first item: 16-byte head and "x\0" padded to 4, then five empty items.)
        (lambda d: d[: len(d) - 96] + b"\xff\xff\xff\x7f" + d[len(d) - 92 :],
         {"a": "1", "b": None}),
        # A tag count far beyond the bound.
        (lambda d: d[:8] + struct.pack("<I", 10**6) + d[12:], {"a": None, "b": None}),
        # Cut short inside a's first item, and just after it.
        (lambda d: d[:110], {"a": None, "b": None}),
        (lambda d: d[:120], {"a": "1", "b": None}),
    ],
)
def test_broken_csa_tables_never_raise(damage: Callable[[bytes], bytes], expected: dict) -> None:
    data = csa.encode_csa2({"a": ("IS", ["1"]), "b": ("LO", ["x"])})
    assert csa.image_elements(data, ("a", "b")) == {"a": "1", "b": "x"}
    assert csa.image_elements(damage(data), ("a", "b")) == expected
