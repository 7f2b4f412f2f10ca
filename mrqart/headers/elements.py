"""Header extraction: one DICOM file -> the flat, JSON-native header dict mrqart checks.

``read_header(path)`` reads only the elements it needs.  It walks the data elements
itself (explicit or implicit VR little endian, which is what MR scanners write) and
stops at the first group after (0051,xxxx), so it never touches pixel data or the
remaining elements.  The Siemens CSA image header and the series header's ASCCONV
protocol are read with ``mrqart.headers.siemens_csa`` directly from the bytes.  Why not pydicom: a
``dcmread(stop_before_pixels=True)`` alone costs about twice a whole read_header, and
with nibabel's CSA parser on top (the original tool) about five times
(bench/bench_headers.py); bursts of hundreds of files/s share one core with the rest.

Bad input never raises: the result is ``Unreadable(path, reason)``.  A broken part
(CSA, ASCCONV, a malformed number) makes only its own fields "null".
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, Final

from mrqart.headers import siemens_csa as csa

__all__ = ["FIELDS", "HEADER_KEYS", "LONG_VRS", "NULL", "Field", "Unreadable", "read_header"]

NULL: Final = "null"


@dataclass(frozen=True)
class Unreadable:
    """A file that is not (or not yet) a readable DICOM; `reason` says why.

    Reasons start with "empty file", "truncated DICOM" (also a file still being
    written), "not DICOM: ...", "unsupported: ..." (big endian, deflated) or the
    OSError's name ("FileNotFoundError: ...").
    """

    path: str
    reason: str


@dataclass(frozen=True)
class Field:
    """One header value stored in a DICOM element.

    For a private element `creator` names the private block and `element` is the
    offset inside it (0x28 for (0019,xx28)); the block number xx is looked up per file.
    `multi` fields are lists (of numbers, or of strings for CS); the others one value.
    """

    name: str
    group: int
    element: int
    vr: str
    multi: bool = False
    creator: str | None = None


SIEMENS_MR: Final = "SIEMENS MR HEADER"
SIEMENS_CSA: Final = "SIEMENS CSA HEADER"

# The standard and private elements behind the header dict (DICOM keyword in comments).
FIELDS: Final[tuple[Field, ...]] = (
    Field("AcqTime", 0x0008, 0x0032, "TM"),  # AcquisitionTime
    Field("AcqDate", 0x0008, 0x0022, "DA"),  # AcquisitionDate
    Field("SeriesNumber", 0x0020, 0x0011, "IS"),
    Field("SubID", 0x0010, 0x0010, "PN"),  # PatientName
    Field("Comments", 0x0020, 0x4000, "LT"),  # ImageComments
    Field("Operator", 0x0008, 0x1070, "PN"),  # OperatorsName
    Field("Station", 0x0008, 0x1010, "SH"),  # StationName
    Field("Project", 0x0008, 0x1030, "LO"),  # StudyDescription
    Field("SequenceName", 0x0008, 0x103E, "LO"),  # SeriesDescription
    Field("SequenceType", 0x0018, 0x0024, "SH"),  # SequenceName
    Field("PED_major", 0x0018, 0x1312, "CS"),  # InPlanePhaseEncodingDirection
    Field("TR", 0x0018, 0x0080, "DS"),  # RepetitionTime
    Field("TE", 0x0018, 0x0081, "DS"),  # EchoTime
    Field("FA", 0x0018, 0x1314, "DS"),  # FlipAngle
    Field("Matrix", 0x0018, 0x1310, "US", multi=True),  # AcquisitionMatrix
    Field("PixelResol", 0x0028, 0x0030, "DS", multi=True),  # PixelSpacing
    Field("BWP", 0x0018, 0x0095, "DS"),  # PixelBandwidth
    Field("BWPPE", 0x0019, 0x28, "FD", creator=SIEMENS_MR),  # BandwidthPerPixelPhaseEncode
    Field("TA", 0x0051, 0x0A, "SH", creator=SIEMENS_MR),  # e.g. "TA 05:08"
    Field("FoV", 0x0051, 0x0C, "SH", creator=SIEMENS_MR),  # e.g. "FoV 1610*1610"
    Field("Manufacturer", 0x0008, 0x0070, "LO"),
    Field("SoftwareVersions", 0x0018, 0x1020, "LO"),
    Field("StudyUID", 0x0020, 0x000D, "UI"),  # StudyInstanceUID
    Field("SeriesUID", 0x0020, 0x000E, "UI"),  # SeriesInstanceUID
    Field("EchoNumber", 0x0018, 0x0086, "IS"),  # EchoNumbers
    Field("InstanceNumber", 0x0020, 0x0013, "IS"),
    # ImageType: a field map's phase series shares its magnitude's description (see
    # check.template_name)
    Field("ImageType", 0x0008, 0x0008, "CS", multi=True),
)
CSA_IMAGE: Final = 0x10  # (0029,xx10) CSA Image Header Info
CSA_SERIES: Final = 0x20  # (0029,xx20) CSA Series Header Info

# Key order of the header dict (the shared contract).
HEADER_KEYS: Final[tuple[str, ...]] = (
    "Phase", "iPAT", "AcqTime", "AcqDate", "SeriesNumber", "SubID", "Comments",
    "Operator", "Station", "Project", "SequenceName", "SequenceType", "PED_major",
    "TR", "TE", "FA", "Matrix", "PixelResol", "BWP", "BWPPE", "TA", "FoV", "Shims",
    "SequenceFile", "Manufacturer", "SoftwareVersions", "StudyUID", "SeriesUID",
    "EchoNumber", "InstanceNumber", "ImageType",
)  # fmt: skip

_STANDARD: Final = {(f.group << 16) | f.element: f for f in FIELDS if f.creator is None}
_PRIVATE_GROUPS: Final = frozenset({0x0019, 0x0029, 0x0051})
_CHARSET: Final = 0x00080005  # SpecificCharacterSet
_WANTED: Final = frozenset(_STANDARD) | {_CHARSET}
_LAST_GROUP: Final = max(_PRIVATE_GROUPS | {f.group for f in FIELDS})

# --- the element walker ------------------------------------------------------------

IMPLICIT_LE: Final = "1.2.840.10008.1.2"
_UNSUPPORTED_TS: Final = {
    "1.2.840.10008.1.2.2": "explicit VR big endian",
    "1.2.840.10008.1.2.1.99": "deflated explicit VR little endian",
}
# Explicit VRs whose length is a 4-byte field after 2 reserved bytes (PS3.5 7.1.2);
# the writer in mrqart.synth uses the same list.
LONG_VRS: Final = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS: Final = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split()
)
_HEAD: Final = struct.Struct("<HH2sH")  # group, element, VR, short length
_U32: Final = struct.Struct("<I")
_UNDEFINED: Final = 0xFFFFFFFF
_ITEM, _SEQ_END = 0xE000, 0xE0DD  # delimiters in group FFFE
_ITEM_END_TAG: Final = 0xFFFEE00D
_TRANSFER_SYNTAX: Final = 0x00020010
_PREAMBLE: Final = 128
_FIRST_READ: Final = 256 * 1024  # covers a Siemens header with its ~90 KB of CSA


class _Truncated(Exception):
    """The buffer ends inside an element."""


class _Malformed(Exception):
    """The bytes do not follow the DICOM encoding."""


class _Unsupported(_Malformed):
    """DICOM in an encoding MR scanners do not write (big endian, deflated)."""


def _element(buf: bytes, pos: int, explicit: bool) -> tuple[int, bytes, int, int]:
    """(tag, VR, value start, value end) of the element at `pos`.

    For an undefined-length sequence the value end is the position after its delimiter.
    The VR is b"UN" in implicit VR data.  Raises _Truncated or _Malformed.
    """
    if pos + 8 > len(buf):
        raise _Truncated
    group, elem, vr, length = _HEAD.unpack_from(buf, pos)
    if explicit and group != 0xFFFE:
        if vr in LONG_VRS:
            if pos + 12 > len(buf):
                raise _Truncated
            length = _U32.unpack_from(buf, pos + 8)[0]
            pos += 12
        elif vr in _SHORT_VRS:
            pos += 8
        else:
            raise _Malformed(f"bad VR {vr!r} at ({group:04X},{elem:04X})")
    else:
        length = _U32.unpack_from(buf, pos + 4)[0]
        pos += 8
        vr = b"UN"
    if length == _UNDEFINED:
        # Sequences; in explicit files a UN of undefined length holds implicit VR.
        return (group << 16) | elem, vr, pos, _skip_sequence(buf, pos, explicit and vr != b"UN")
    if pos + length > len(buf):
        raise _Truncated
    return (group << 16) | elem, vr, pos, pos + length


def _skip_sequence(buf: bytes, pos: int, explicit: bool) -> int:
    """Position after the delimiter of the undefined-length sequence whose items start at `pos`."""
    while True:
        if pos + 8 > len(buf):
            raise _Truncated
        group, elem, length = struct.unpack_from("<HHI", buf, pos)
        pos += 8
        if group != 0xFFFE:
            raise _Malformed(f"({group:04X},{elem:04X}) where a sequence item was expected")
        if elem == _SEQ_END:
            return pos
        if elem != _ITEM:
            raise _Malformed(f"unexpected delimiter (FFFE,{elem:04X})")
        if length != _UNDEFINED:
            pos += length
            continue
        # An undefined-length item: step over its elements up to the item delimiter.
        while True:
            tag, _, _, end = _element(buf, pos, explicit)
            pos = end
            if tag == _ITEM_END_TAG:
                break


def _elements(buf: bytes, complete: bool) -> dict[int, bytes]:
    """Value bytes of the elements the header needs, from a DICOM file or its prefix.

    `complete` says `buf` is the whole file.  Raises _Truncated when `buf` ends inside
    the part we need, _Malformed when the bytes are not DICOM.
    """
    if len(buf) < _PREAMBLE + 4:
        if complete:
            raise _Malformed("shorter than the 128-byte preamble and DICM prefix")
        raise _Truncated
    if buf[_PREAMBLE : _PREAMBLE + 4] != b"DICM":
        raise _Malformed("no DICM prefix after the 128-byte preamble")
    pos = _PREAMBLE + 4
    syntax = IMPLICIT_LE
    # File meta information (group 0002) is always explicit VR little endian.
    while buf[pos : pos + 2] == b"\x02\x00":
        tag, _, start, pos = _element(buf, pos, True)
        if tag == _TRANSFER_SYNTAX:
            syntax = _text(buf[start:pos])
    if syntax in _UNSUPPORTED_TS:
        raise _Unsupported(f"transfer syntax {_UNSUPPORTED_TS[syntax]}")
    explicit = syntax != IMPLICIT_LE
    out: dict[int, bytes] = {}
    n = len(buf)
    head, u32 = _HEAD.unpack_from, _U32.unpack_from
    # The hot loop (60-150 elements a file) inlines the common cases of _element.
    while pos + 8 <= n:
        group, elem, vr, length = head(buf, pos)
        if group > _LAST_GROUP:  # tags ascend: nothing we need comes later
            return out
        if explicit:
            if vr in _SHORT_VRS:
                start = pos + 8
                pos = start + length
            elif vr in LONG_VRS and pos + 12 <= n and u32(buf, pos + 8)[0] != _UNDEFINED:
                start = pos + 12
                pos = start + u32(buf, pos + 8)[0]
            else:  # undefined lengths, delimiters, malformed VRs
                _, _, start, pos = _element(buf, pos, explicit)
        elif (length := u32(buf, pos + 4)[0]) != _UNDEFINED:
            start = pos + 8
            pos = start + length
        else:  # implicit VR sequences
            _, _, start, pos = _element(buf, pos, explicit)
        if pos > n:
            raise _Truncated
        if group in _PRIVATE_GROUPS or ((group << 16) | elem) in _WANTED:
            out[(group << 16) | elem] = buf[start:pos]
    if pos != n or not complete:
        raise _Truncated
    return out


# --- value decoding ----------------------------------------------------------------


def _text(raw: bytes, encoding: str = "latin-1") -> str:
    return raw.decode(encoding, "replace").strip(" \x00")


def _number(text: str, vr: str) -> int | float:
    return int(text) if vr == "IS" else float(text)


def _decode(raw: bytes, field: Field, encoding: str) -> Any:
    """The JSON-native value of `field` from its element bytes, or "null"."""
    vr = field.vr
    try:
        if vr in ("US", "FD"):
            fmt = "<H" if vr == "US" else "<d"
            size = struct.calcsize(fmt)
            values = [v for (v,) in struct.iter_unpack(fmt, raw[: len(raw) - len(raw) % size])]
            if not values:
                return NULL
            return values if field.multi else values[0]
        text = _text(raw, encoding)
        if not text:
            return NULL
        if vr in ("DS", "IS"):
            if field.multi:
                return [_number(t.strip(), vr) for t in text.split("\\")]
            return _number(text.strip(), vr)
    except ValueError:  # a malformed number spoils only its own field
        return NULL
    if field.multi:  # a multi-valued string, e.g. ImageType ORIGINAL\PRIMARY\M\ND
        return [t.strip() for t in text.split("\\")]
    if vr == "LT":  # free text: keep it on one line for tables and logs
        text = " ".join(text.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())
    return text


def _private_blocks(elements: dict[int, bytes]) -> dict[tuple[int, str], int]:
    """(group, creator) -> base tag of that private block, from (gggg,0010-00FF)."""
    blocks: dict[tuple[int, str], int] = {}
    for tag, raw in elements.items():
        group, elem = tag >> 16, tag & 0xFFFF
        if group in _PRIVATE_GROUPS and 0x10 <= elem <= 0xFF:
            blocks.setdefault((group, _text(raw)), (group << 16) | (elem << 8))
    return blocks


def _csa_fields(image: bytes | None, series: bytes | None) -> dict[str, Any]:
    """Phase, iPAT, Shims and SequenceFile from the CSA blobs; "null" for what is missing."""
    out: dict[str, Any] = {"Phase": NULL, "iPAT": NULL, "Shims": NULL, "SequenceFile": NULL}
    if image:
        try:
            phase = csa.image_element(image, "PhaseEncodingDirectionPositive")
            out["Phase"] = int(phase) if phase is not None else NULL
            out["iPAT"] = csa.image_element(image, "ImaPATModeText") or NULL
        except ValueError:  # CsaError, or a Phase that is not an integer
            pass
    if series and (span := csa.ascconv_span(series)):
        values = csa.ascconv_values(series, span, _ASCCONV_KEYS)
        out["Shims"] = _shims(values)
        if seq := values.get("tSequenceFileName"):
            # Inside the CSA the protocol is one quoted string, so quotes come doubled.
            out["SequenceFile"] = seq.strip('"').replace("\\", "/") or NULL
    return out


_ASCCONV_KEYS: Final = (*csa.SHIM_KEYS, *csa.SHIM_KEYS_VB, "tSequenceFileName")


def _shims(values: dict[str, str]) -> list[int] | str:
    """The 10 shim numbers, or "null" when the protocol names none of them.

    ASCCONV omits entries that hold their default (0), so a missing entry is 0.
    """
    found = [values.get(k, values.get(vb)) for k, vb in zip(csa.SHIM_KEYS, csa.SHIM_KEYS_VB)]
    if all(v is None for v in found):
        return NULL
    try:
        return [int(v, 0) if v is not None else 0 for v in found]
    except ValueError:
        return NULL


def read_header(path: str | os.PathLike[str]) -> dict[str, Any] | Unreadable:
    """The header dict of the DICOM file at `path` (keys HEADER_KEYS), or Unreadable.

    Every value is JSON-native; missing or empty values are "null".  Never raises for
    bad input: missing, empty, truncated or non-DICOM files give Unreadable.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            buf = f.read(_FIRST_READ)
            complete = len(buf) < _FIRST_READ
            while True:
                try:
                    elements = _elements(buf, complete)
                    break
                except _Truncated:
                    if complete:
                        return Unreadable(name, "truncated DICOM")
                    buf += f.read()  # rare: a header larger than the first read
                    complete = True
    except OSError as e:
        return Unreadable(name, f"{type(e).__name__}: {e.strerror or e}")
    except _Unsupported as e:
        return Unreadable(name, f"unsupported: {e}")
    except _Malformed as e:
        if not buf:
            return Unreadable(name, "empty file")
        return Unreadable(name, f"not DICOM: {e}")
    return _header(elements)


def _header(elements: dict[int, bytes]) -> dict[str, Any]:
    """The header dict from the element bytes that _elements collected."""
    charset = _text(elements.get(_CHARSET, b""))
    encoding = "utf-8" if "ISO_IR 192" in charset else "latin-1"
    blocks = _private_blocks(elements)
    values: dict[str, Any] = {}
    for field in FIELDS:
        if field.creator is None:
            tag = (field.group << 16) | field.element
        elif (base := blocks.get((field.group, field.creator))) is not None:
            tag = base | field.element
        else:
            tag = None
        raw = elements.get(tag) if tag is not None else None
        values[field.name] = NULL if raw is None else _decode(raw, field, encoding)
    image = series = None
    if (csa_base := blocks.get((0x0029, SIEMENS_CSA))) is not None:
        image, series = elements.get(csa_base | CSA_IMAGE), elements.get(csa_base | CSA_SERIES)
    values.update(_csa_fields(image, series))
    return {key: values[key] for key in HEADER_KEYS}
