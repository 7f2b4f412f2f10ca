"""GE and Philips readers on their own: the values no file in tests/data exercises."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from mrqart.headers import NULL, ge, philips
from mrqart.rules.check import check


def text(value: str) -> bytes:
    raw = value.encode()
    return raw + b" " * (len(raw) % 2)


@pytest.mark.parametrize(
    ("asset", "multiband", "expected"),
    [
        ("0.5\\1", "0\\0\\0", "p2"),
        ("0.5\\1", "3\\1\\0", "p2s3"),
        ("1\\1", "3", "s3"),
        ("1\\1", "0\\0\\0\\\\\\", None),
        ("0.6667\\1", "", "p1.5"),
        (None, None, None),
        ("0\\1", "x", None),  # malformed: never a division by zero
    ],
)
def test_ge_acceleration_in_pat_mode_form(asset: str | None, multiband: str | None, expected: str | None) -> None:
    raw_asset = text(asset) if asset is not None else None
    raw_mb = text(multiband) if multiband is not None else None
    assert ge.pat_text(raw_asset, raw_mb) == expected


def user_data(version: float, epi: bool, flipped: bool, bottom_up: bool, offset: int = 64) -> bytes:
    """A (0043,102A) block in the layout dcm2niix reads."""
    data = bytearray(2048)
    struct.pack_into("<H", data, 24, offset)
    struct.pack_into("<f", data, offset, version)
    hdr, ky = offset, 0x394
    if version >= 25.002:
        hdr += 0x4C
        ky -= 0x8C
    struct.pack_into("<H", data, hdr + 0x3A, 0x800 if epi else 0)
    struct.pack_into("<H", data, hdr + 0x30, 0x4 if flipped else 0)
    struct.pack_into("<H", data, hdr + ky, 1 if bottom_up else 0)
    return bytes(data)


@pytest.mark.parametrize("version", [24.0, 26.002, 28.003])
@pytest.mark.parametrize(
    ("epi", "flipped", "bottom_up", "expected"),
    [
        (True, False, False, False),
        (True, True, False, True),
        (True, False, True, True),  # a bottom-up ky direction inverts the polarity
        (True, True, True, False),
        (False, True, False, None),  # not EPI: no polarity
    ],
)
def test_ge_epi_polarity_bit(version: float, epi: bool, flipped: bool, bottom_up: bool, expected: bool | None) -> None:
    assert ge.epi_polarity_flipped(user_data(version, epi, flipped, bottom_up)) is expected


@pytest.mark.parametrize(
    "data",
    [None, b"", b"\x00" * 100, user_data(2.0, True, True, False), b"\xff" * 1000],
    ids=["absent", "empty", "short", "bad version", "offset beyond"],
)
def test_ge_user_data_that_is_not_the_layout_gives_none(data: bytes | None) -> None:
    assert ge.epi_polarity_flipped(data) is None


def ge_elements(**private: Any) -> dict[int, bytes]:
    elements = {0x00430010: text("GEMS_PARM_01"), 0x00190010: text("GEMS_ACQU_01")}
    for offset, value in private.items():
        group = 0x0019 if offset == "x9C" else 0x0043
        elements[(group << 16) | 0x1000 | int(offset[1:], 16)] = value
    return elements


@pytest.mark.parametrize(
    ("reordering", "phase"), [("LINEAR", 0), ("REVERSE_LINEAR", 1), ("CENTRIC", None)]
)
def test_ge_polarity_from_rectilinear_reordering(reordering: str, phase: int | None) -> None:
    # (0018,9034), RX27 on: LINEAR is dcm2niix's "flipped", the reverse of Phase 1.
    elements = ge_elements(x9C=text("epiRT"))
    elements[ge.REORDERING] = text(reordering)
    assert ge.fields(elements).get("Phase") == phase


def test_ge_private_values_found_by_creator_at_any_block() -> None:
    elements = {
        0x00430012: text("GEMS_PARM_01"),  # block 0x12, not 0x10
        0x00431202: struct.pack("<h", -7),
        0x00431203: struct.pack("<h", 12),
        0x00431204: struct.pack("<h", 3),
        0x00431283: text("0.5\\1"),
        0x00430010: text("SOMEONE ELSE"),
        0x00431083: text("0.25\\1"),  # another creator's element at the usual number
    }
    assert ge.fields(elements) == {"Shims": [-7, 12, 3], "iPAT": "p2"}


def test_philips_not_recorded_fields_are_never_flagged() -> None:
    header = {p: NULL for p in ("Phase", "Shims", "SequenceFile", "BWPPE", "TA", "FoV")}
    header |= {"TR": 3.8, "not_recorded": list(philips.NOT_RECORDED)}
    template = {"Phase": 1, "BWPPE": 20.0, "FoV": "FoV 220*220", "TR": 2000.0}
    assert check(header, template)["errors"] == {"TR": {"expect": 2000.0, "have": 3.8}}
    # Without the list, the same header is "missing" all of them.
    del header["not_recorded"]
    assert set(check(header, template)["errors"]) == {"Phase", "BWPPE", "FoV", "TR"}


@pytest.mark.parametrize(
    ("maker", "is_ge", "is_philips"),
    [("GE MEDICAL SYSTEMS", True, False), ("Philips Medical Systems", False, True),
     ("Philips Healthcare", False, True), ("SIEMENS", False, False), (NULL, False, False)],
)  # fmt: skip
def test_vendor_from_manufacturer(maker: str, is_ge: bool, is_philips: bool) -> None:
    assert (ge.is_ge(maker), philips.is_philips(maker)) == (is_ge, is_philips)
