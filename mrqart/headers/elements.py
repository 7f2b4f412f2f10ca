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

import errno
import os
import stat
import struct
from dataclasses import dataclass
from typing import Any, Final

from mrqart.headers import dicom, enhanced, ge, philips, siemens_xa
from mrqart.headers import siemens_csa as csa
from mrqart.headers.dicom import (
    HEAD,
    IMPLICIT_LE,
    LONG_VRS,
    MAX_HEADER_BYTES,
    SHORT_VRS,
    U32,
    UNDEFINED,
    UNSUPPORTED_TS,
    Malformed,
    Truncated,
    Unsupported,
    element,
    element_head,
    skip_sequence,
)

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
    "EchoNumber", "InstanceNumber", "ImageType", "Frames", "EchoTimes", "not_recorded",
)  # fmt: skip
# Keys computed from the others or from the file's format, not stored in one element:
# Frames (0028,0008) NumberOfFrames, 1 for single-frame files; EchoTimes, every echo
# time of the file's frames in frame order ([TE] for a single-frame file); not_recorded,
# the header keys this scanner never records (see NOT_RECORDED), which rules never flag.
DERIVED_KEYS: Final = ("Frames", "EchoTimes", "not_recorded")

_STANDARD: Final = {(f.group << 16) | f.element: f for f in FIELDS if f.creator is None}
# Siemens MR HEADER and CSA (0019, 0029, 0051), XA SDS/SDI and GE RELA (0021), GE
# PARM (0043): whole private groups are kept, their blocks found by creator later.
_PRIVATE_GROUPS: Final = frozenset({0x0019, 0x0021, 0x0029, 0x0043, 0x0051})
_CHARSET: Final = 0x00080005  # SpecificCharacterSet
_ACQ_DATETIME: Final = 0x0008002A  # AcquisitionDateTime (enhanced files have no 0008,0022/0032)
_PULSE_SEQUENCE: Final = 0x00189005  # PulseSequenceName (enhanced files' SequenceName)
_N_FRAMES: Final = 0x00280008  # NumberOfFrames
_WANTED: Final = frozenset(_STANDARD) | {
    _CHARSET, _ACQ_DATETIME, _PULSE_SEQUENCE, _N_FRAMES, ge.REORDERING,
    enhanced.SHARED, enhanced.PER_FRAME,
}  # fmt: skip
_LAST_GROUP: Final = enhanced.PER_FRAME >> 16  # (5200,xxxx): the functional groups

# Per scanner: the header keys it never records (the page shows "not recorded by this
# scanner", the rules never flag them); a file that holds one anyway (XA
# interoperability files keep the TA text) lists only the others.  Classic Siemens
# records every key.
NOT_RECORDED: Final[dict[str, tuple[str, ...]]] = {
    "siemens": (),
    "siemens_xa": siemens_xa.NOT_RECORDED,
    "ge": ge.NOT_RECORDED,
    "philips": philips.NOT_RECORDED,
    "other": (),
}

_TRANSFER_SYNTAX: Final = 0x00020010
_PREAMBLE: Final = 128
_FIRST_READ: Final = 256 * 1024  # covers a Siemens header with its ~90 KB of CSA
_CHUNK: Final = 1024 * 1024
_PIXEL_TAG: Final = b"\xe0\x7f\x10\x00"  # (7FE0,0010) PixelData
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

def _elements(buf: bytes, complete: bool) -> tuple[dict[int, bytes], bool]:
    """Value bytes of the elements the header needs, from a DICOM file or its prefix.

    `complete` says `buf` is the whole file.  Raises Truncated when `buf` ends inside
    the part we need, Malformed when the bytes are not DICOM.
    """
    if len(buf) < _PREAMBLE + 4:
        if complete:
            raise Malformed("shorter than the 128-byte preamble and DICM prefix")
        raise Truncated(_PREAMBLE + 4)
    if buf[_PREAMBLE : _PREAMBLE + 4] != b"DICM":
        raise Malformed("no DICM prefix after the 128-byte preamble")
    pos = _PREAMBLE + 4
    syntax = IMPLICIT_LE
    # File meta information (group 0002) is always explicit VR little endian.
    while buf[pos : pos + 2] == b"\x02\x00":
        tag, _, start, pos = element(buf, pos, True)
        if tag == _TRANSFER_SYNTAX:
            syntax = _text(buf[start:pos])
    if syntax in UNSUPPORTED_TS:
        raise Unsupported(f"transfer syntax {UNSUPPORTED_TS[syntax]}")
    explicit = syntax != IMPLICIT_LE
    out: dict[int, bytes] = {}
    n = len(buf)
    head, u32 = HEAD.unpack_from, U32.unpack_from
    # The hot loop (60-150 elements a file) inlines the common cases of _element.
    while pos + 8 <= n:
        group, elem, vr, length = head(buf, pos)
        if group > _LAST_GROUP:  # tags ascend: nothing we need comes later
            return out, explicit
        if explicit:
            if vr in SHORT_VRS:
                start = pos + 8
                pos = start + length
            elif vr in LONG_VRS and pos + 12 <= n and u32(buf, pos + 8)[0] != UNDEFINED:
                start = pos + 12
                pos = start + u32(buf, pos + 8)[0]
            else:  # undefined lengths, delimiters, malformed VRs
                start, pos = _undefined(buf, pos, explicit, out)
                if pos == -1:
                    return out, explicit
        elif (length := u32(buf, pos + 4)[0]) != UNDEFINED:
            start = pos + 8
            pos = start + length
        else:  # implicit VR sequences
            start, pos = _undefined(buf, pos, explicit, out)
            if pos == -1:
                return out, explicit
        if pos > n:
            raise Truncated(pos, (group << 16) | elem)
        if group in _PRIVATE_GROUPS or ((group << 16) | elem) in _WANTED:
            out[(group << 16) | elem] = buf[start:pos]
    if pos != n or not complete:
        raise Truncated(n + 1)
    return out, explicit


def _undefined(buf: bytes, pos: int, explicit: bool, out: dict[int, bytes]) -> tuple[int, int]:
    """(value start, value end) of the element at `pos` that the hot loop does not inline.

    An undefined-length (5200,9230) Per-frame Functional Groups is the last element a
    header needs and the longest to walk (every frame's nested items): its value is
    kept as the rest of `buf` (out[enhanced.PER_FRAME], with out[enhanced.TAIL] set),
    parsed once later, and (start, -1) says the walk is done.
    """
    tag, vr, start, end = element_head(buf, pos, explicit)
    if end != -1:
        return start, end
    if tag == enhanced.PER_FRAME:
        out[enhanced.PER_FRAME] = buf[start:]
        out[enhanced.TAIL] = b""
        return start, -1
    return start, skip_sequence(buf, start, explicit and vr != b"UN")


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
            found = csa.image_elements(image, _CSA_IMAGE_NAMES)
        except csa.CsaError:  # a CSA1 header nibabel cannot parse
            found = {}
        out["iPAT"] = found.get("ImaPATModeText") or NULL
        try:
            if (phase := found.get("PhaseEncodingDirectionPositive")) is not None:
                out["Phase"] = int(phase)
        except ValueError:  # a Phase that is not an integer
            pass
    if series and (span := csa.ascconv_span(series)):
        out.update(_protocol_fields(csa.ascconv_values(series, span, _ASCCONV_KEYS)))
    return out


def _protocol_fields(values: dict[str, str]) -> dict[str, Any]:
    """Shims and SequenceFile from ASCCONV `values` (CSA series header or XA SDS)."""
    out: dict[str, Any] = {"Shims": _shims(values), "SequenceFile": NULL}
    if seq := values.get("tSequenceFileName"):
        # Inside the CSA the protocol is one quoted string, so quotes come doubled.
        out["SequenceFile"] = seq.strip('"').replace("\\", "/") or NULL
    return out


_CSA_IMAGE_NAMES: Final = ("PhaseEncodingDirectionPositive", "ImaPATModeText")
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
    bad input and never blocks: missing, empty, truncated or non-DICOM files, symlinks,
    FIFOs, devices and sockets give Unreadable; at most MAX_HEADER_BYTES are read.
    """
    name = os.fspath(path)
    try:
        return _read_header(name)
    except _Refused as e:
        return Unreadable(name, str(e))
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            return Unreadable(name, _SYMLINK)
        return Unreadable(name, f"{type(e).__name__}: {e.strerror or e}")
    except Unsupported as e:
        return Unreadable(name, f"unsupported: {e}")
    except Malformed as e:
        return Unreadable(name, f"not DICOM: {e}")


class _Refused(Exception):
    """Not read, or not read further; the message is the Unreadable reason."""


_SYMLINK: Final = "not a regular file: symlink (not followed)"
_FILE_TYPES: Final = (
    (stat.S_ISDIR, "IsADirectoryError: not a regular file: directory"),
    (stat.S_ISFIFO, "not a regular file: FIFO"),
    (stat.S_ISSOCK, "not a regular file: socket"),
    (stat.S_ISCHR, "not a regular file: character device"),
    (stat.S_ISBLK, "not a regular file: block device"),
    (stat.S_ISLNK, _SYMLINK),
)


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        reason = next((r for test, r in _FILE_TYPES if test(mode)), "not a regular file")
        raise _Refused(reason)


def _read_header(name: str) -> dict[str, Any]:
    """The header dict of the file `name`, reading only as much of it as the walk needs
    (enhanced files: up to the end of their functional groups) and never more than
    MAX_HEADER_BYTES.

    lstat first, so a FIFO or a device is never even opened; then open with O_NOFOLLOW
    and O_NONBLOCK (the path may have been swapped in between) and fstat that what was
    opened is a regular file.  Raises _Refused, OSError, Malformed.
    """
    _check_regular(os.lstat(name).st_mode)
    fd = os.open(name, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        _check_regular(st.st_mode)
        buf: bytes | bytearray = os.read(fd, _FIRST_READ)
        if not buf:
            raise _Refused("empty file")
        while True:
            complete = len(buf) < _FIRST_READ or len(buf) >= st.st_size
            try:
                elements, explicit = _elements(buf, complete)
                if not complete and enhanced.TAIL in elements and _PIXEL_TAG not in buf:
                    # The per-frame groups run to the pixel data: parsing them now would
                    # only find that they go on past the buffer.  (The tag's bytes only
                    # decide how much to read; the parse below proves where they end.)
                    raise Truncated(len(buf) + 1)
                if isinstance(buf, bytearray):  # slices of a grown buffer: hashable bytes
                    elements = {tag: bytes(raw) for tag, raw in elements.items()}
                try:
                    return _header(elements, explicit)
                except Malformed as e:  # a functional group or private block that lies
                    raise _Refused(f"malformed: {e}") from None
                except Truncated as e:
                    # Past a complete buffer a nested length lies; else the per-frame
                    # groups run on past the buffer: read more (below).
                    if complete or len(buf) >= MAX_HEADER_BYTES or e.need > MAX_HEADER_BYTES:
                        raise _Refused(_nested_reason(e)) from None
                    raise
            except Truncated as e:
                if e.need > MAX_HEADER_BYTES or complete or len(buf) >= MAX_HEADER_BYTES:
                    raise _Refused(_truncated_reason(e, len(buf), st.st_size)) from None
                # Grow geometrically: enhanced files keep their functional groups
                # (5200,xxxx) some hundred KB in, before the pixel data.
                target = max(e.need + _FIRST_READ, 2 * len(buf))
                buf = _read_more(fd, buf, min(st.st_size, MAX_HEADER_BYTES, target))
    finally:
        os.close(fd)


def _nested_reason(e: Truncated) -> str:
    """Why a nested structure (functional group, private block) cannot be read."""
    where = f" ({e.tag >> 16:04X},{e.tag & 0xFFFF:04X})" if e.tag is not None else ""
    if e.need > MAX_HEADER_BYTES:
        return f"element too large:{where} declares {e.need:,} bytes"
    return f"malformed: a nested element{where} ends beyond its parent (or the file is truncated)"


def _truncated_reason(e: Truncated, have: int, size: int) -> str:
    """Why a walk that ran out of bytes stops: an element declaring more than the cap or
    the file (a hostile length, or a file cut short), or a header too big to read."""
    if e.tag is None:
        if have >= MAX_HEADER_BYTES:
            return f"header larger than {MAX_HEADER_BYTES:,} bytes (element too large)"
        return "truncated DICOM"
    where = f"({e.tag >> 16:04X},{e.tag & 0xFFFF:04X})"
    if e.need > MAX_HEADER_BYTES:
        return f"element too large: {where} ends at byte {e.need:,}, beyond the {MAX_HEADER_BYTES:,}-byte cap"
    return f"truncated DICOM: element too large: {where} ends at byte {e.need:,}, the file at {size:,}"


def _read_more(fd: int, buf: bytes | bytearray, target: int) -> bytearray:
    """`buf` grown in place to `target` bytes (fewer at end of file) from `fd`.

    In chunks appended to one bytearray: the peak is the target plus one chunk, never
    twice the target."""
    grown = buf if isinstance(buf, bytearray) else bytearray(buf)
    while len(grown) < target and (chunk := os.read(fd, min(_CHUNK, target - len(grown)))):
        grown += chunk
    return grown


def _header(elements: dict[int, bytes], explicit: bool) -> dict[str, Any]:
    """The header dict from the element bytes that _elements collected.

    Standard elements first; an enhanced file's functional groups then give what its
    top level lacks; the vendor's private blocks give the rest.  Raises Malformed or
    Truncated for a nested structure that lies about its lengths.
    """
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
    frames = dicom.numbers(elements.get(_N_FRAMES), "IS")
    values["Frames"] = frames[0] if frames and frames[0] > 0 else 1
    fg = enhanced.read(elements, explicit)
    parallel = NULL
    if fg is not None:
        from_groups = enhanced.standard(fg)
        parallel = from_groups.pop("ParallelFactor", NULL)
        values.update(from_groups)  # per-frame values are the authority in enhanced files
        _fill(values, "SequenceType", _text(elements.get(_PULSE_SEQUENCE, b"")))
    if (when := _text(elements.get(_ACQ_DATETIME, b""))) and len(when) > 8:
        # (0008,002A) YYYYMMDDHHMMSS.FFFFFF: what enhanced files have instead.
        _fill(values, "AcqDate", when[:8])
        _fill(values, "AcqTime", when[8:])
    maker = vendor(values["Manufacturer"], elements, fg, blocks)
    values.update(Phase=NULL, iPAT=NULL, Shims=NULL, SequenceFile=NULL)
    if maker == "siemens":
        image = series = None
        if (csa_base := blocks.get((0x0029, SIEMENS_CSA))) is not None:
            image = elements.get(csa_base | CSA_IMAGE)
            series = elements.get(csa_base | CSA_SERIES)
        values.update(_csa_fields(image, series))
    elif maker == "siemens_xa":
        xa = siemens_xa.fields(elements, fg, _ASCCONV_KEYS)
        values.update(_protocol_fields(xa.pop("ascconv")))
        _fill(values, "SequenceType", xa.pop("SequenceType", None))
        values.update(xa)
    elif maker == "ge":
        values.update(ge.fields(elements))
    if values["iPAT"] == NULL and isinstance(parallel, float) and parallel > 1:
        # (0018,9069) ParallelReductionFactorInPlane, in Siemens' PATModeText form.
        values["iPAT"] = f"p{parallel:g}"
    if "EchoTimes" not in values:
        values["EchoTimes"] = [values["TE"]] if isinstance(values["TE"], float) else NULL
    values["not_recorded"] = [k for k in NOT_RECORDED[maker] if values[k] == NULL]
    return {key: values[key] for key in HEADER_KEYS}


def _fill(values: dict[str, Any], key: str, value: Any) -> None:
    """Set `key` from a fallback source when the primary one gave nothing."""
    if values.get(key, NULL) == NULL and value not in (None, "", NULL):
        values[key] = value


def vendor(
    manufacturer: Any,
    elements: dict[int, bytes],
    fg: enhanced.FunctionalGroups | None,
    blocks: dict[tuple[int, str], int],
) -> str:
    """Which reader a file needs: "siemens" (classic, CSA), "siemens_xa" (SDS/SDI
    blocks, no CSA), "ge", "philips" or "other"."""
    if (0x0029, SIEMENS_CSA) in blocks:
        return "siemens"
    if siemens_xa.is_xa(elements, fg):
        return "siemens_xa"
    if ge.is_ge(manufacturer):
        return "ge"
    if philips.is_philips(manufacturer):
        return "philips"
    text = manufacturer.upper() if isinstance(manufacturer, str) else ""
    return "siemens" if "SIEMENS" in text else "other"
