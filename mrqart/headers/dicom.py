"""The DICOM encoding, as MR scanners write it: data elements (explicit or implicit VR
little endian), sequences and items, and the few value representations mrqart decodes.

Every function takes bytes and positions and never reads a file; each is bounded:
lengths are checked against the buffer before use (never allocated), sequences are
walked with an explicit stack, not recursion.  Errors are Truncated (the buffer ends
inside an element: the caller may read more) and Malformed.
"""

from __future__ import annotations

import struct
from typing import Final

IMPLICIT_LE: Final = "1.2.840.10008.1.2"
UNSUPPORTED_TS: Final = {
    "1.2.840.10008.1.2.2": "explicit VR big endian",
    "1.2.840.10008.1.2.1.99": "deflated explicit VR little endian",
}
# Explicit VRs whose length is a 4-byte field after 2 reserved bytes (PS3.5 7.1.2);
# the writer in mrqart.synth uses the same list.
LONG_VRS: Final = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
SHORT_VRS: Final = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split()
)
HEAD: Final = struct.Struct("<HH2sH")  # group, element, VR, short length
U32: Final = struct.Struct("<I")
UNDEFINED: Final = 0xFFFFFFFF
_ITEM, _SEQ_END = 0xE000, 0xE0DD  # delimiters in group FFFE
_ITEM_END: Final = 0xE00D
_DELIM: Final = struct.Struct("<HHI")


# Bounds on what one file may cost (issue 10): nothing we need lies beyond this many
# bytes of a file, and sequences never nest deeper than this in real MR headers
# (Enhanced MR functional groups nest 3-4 levels).
MAX_HEADER_BYTES: Final = 16 * 1024 * 1024
MAX_DEPTH: Final = 32


class Truncated(Exception):
    """The buffer ends inside an element: `need` is a position the walk must reach
    (an element's declared end, or just past the buffer when it is not known)."""

    def __init__(self, need: int, tag: int | None = None) -> None:
        super().__init__(need, tag)
        self.need, self.tag = need, tag


class Malformed(Exception):
    """The bytes do not follow the DICOM encoding."""


class Unsupported(Malformed):
    """DICOM in an encoding MR scanners do not write (big endian, deflated)."""


def element(buf: bytes, pos: int, explicit: bool) -> tuple[int, bytes, int, int]:
    """(tag, VR, value start, value end) of the element at `pos`.

    For an undefined-length sequence the value end is the position after its delimiter.
    The VR is b"UN" in implicit VR data.  Raises Truncated or Malformed.
    """
    tag, vr, start, end = element_head(buf, pos, explicit)
    if end == -1:
        # Sequences; in explicit files a UN of undefined length holds implicit VR.
        end = skip_sequence(buf, start, explicit and vr != b"UN")
    return tag, vr, start, end


def skip_sequence(buf: bytes, pos: int, explicit: bool) -> int:
    """Position after the delimiter of the undefined-length sequence whose items start at `pos`.

    Iterative, with an explicit stack of open sequences and items: a hostile file of
    thousands of nested sequences costs no Python recursion; deeper than MAX_DEPTH is
    Malformed.  Defined-length items are stepped over whole.
    """
    n = len(buf)
    # One entry per open level: (is_item, explicit VR inside).
    stack: list[tuple[bool, bool]] = [(False, explicit)]
    while stack:
        if pos + 8 > n:
            raise Truncated(n + 1)
        in_item, explicit = stack[-1]
        group, elem, length = _DELIM.unpack_from(buf, pos)
        if not in_item:  # inside a sequence: an item or the sequence delimiter
            pos += 8
            if group != 0xFFFE:
                raise Malformed(f"({group:04X},{elem:04X}) where a sequence item was expected")
            if elem == _SEQ_END:
                stack.pop()
            elif elem != _ITEM:
                raise Malformed(f"unexpected delimiter (FFFE,{elem:04X})")
            elif length == UNDEFINED:
                stack.append((True, explicit))
            elif pos + length > n:
                raise Truncated(pos + length, 0xFFFEE000)
            else:
                pos += length
        elif group == 0xFFFE and elem == _ITEM_END:
            pos += 8
            stack.pop()
        else:  # an element of an undefined-length item
            _, vr, start, end = element_head(buf, pos, explicit)
            if end != -1:
                pos = end
            else:
                if len(stack) >= 2 * MAX_DEPTH:  # a sequence and an item per level
                    raise Malformed(f"sequences nested deeper than {MAX_DEPTH} levels")
                stack.append((False, explicit and vr != b"UN"))
                pos = start
    return pos


def element_head(buf: bytes, pos: int, explicit: bool) -> tuple[int, bytes, int, int]:
    """(tag, VR, value start, value end) of the element at `pos`, value end -1 for an
    undefined length.  The VR is b"UN" in implicit VR data.  Raises Truncated (also
    for a declared length beyond the buffer, never allocating it) or Malformed."""
    n = len(buf)
    if pos + 8 > n:
        raise Truncated(pos + 8)
    group, elem, vr, length = HEAD.unpack_from(buf, pos)
    if explicit and group != 0xFFFE:
        if vr in LONG_VRS:
            if pos + 12 > n:
                raise Truncated(pos + 12)
            length = U32.unpack_from(buf, pos + 8)[0]
            pos += 12
        elif vr in SHORT_VRS:
            pos += 8
        else:
            raise Malformed(f"bad VR {vr!r} at ({group:04X},{elem:04X})")
    else:
        length = U32.unpack_from(buf, pos + 4)[0]
        pos += 8
        vr = b"UN"
    tag = (group << 16) | elem
    if length == UNDEFINED:
        return tag, vr, pos, -1
    if pos + length > n:
        raise Truncated(pos + length, tag)
    return tag, vr, pos, pos + length



def items(raw: bytes, explicit: bool) -> list[bytes]:
    """The content of each item of a sequence whose value is `raw` (defined or undefined
    length, delimiters included).  Raises Malformed or Truncated."""
    out: list[bytes] = []
    pos, n = 0, len(raw)
    while pos + 8 <= n:
        group, elem, length = _DELIM.unpack_from(raw, pos)
        pos += 8
        if group != 0xFFFE:
            raise Malformed(f"({group:04X},{elem:04X}) where a sequence item was expected")
        if elem == _SEQ_END:
            break
        if elem != _ITEM:
            raise Malformed(f"unexpected delimiter (FFFE,{elem:04X})")
        if length != UNDEFINED:
            if pos + length > n:
                raise Truncated(pos + length, 0xFFFEE000)
            out.append(raw[pos : pos + length])
            pos += length
            continue
        start = pos
        while True:  # an undefined-length item ends at its delimiter
            if pos + 8 > n:
                raise Truncated(n + 1)
            if raw[pos : pos + 4] == b"\xfe\xff\x0d\xe0":
                out.append(raw[start:pos])
                pos += 8
                break
            pos = element(raw, pos, explicit)[3]
    return out


def dataset(raw: bytes, explicit: bool) -> dict[int, bytes]:
    """Tag -> value bytes of the elements of one item's content `raw` (nested sequences
    as their raw value, for `items`).  Raises Malformed or Truncated."""
    out: dict[int, bytes] = {}
    pos, n = 0, len(raw)
    while pos + 8 <= n:
        tag, _, start, end = element(raw, pos, explicit)
        out[tag] = raw[start:end]
        pos = end
    return out


def text(raw: bytes | None, encoding: str = "latin-1") -> str:
    """A string value, stripped of padding; "" for None."""
    return raw.decode(encoding, "replace").strip(" \x00") if raw else ""


_BINARY: Final = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f", "FD": "<d"}


def numbers(raw: bytes | None, vr: str) -> list[float] | list[int]:
    """The values of a numeric element (binary US/SS/UL/SL/FL/FD, or text DS/IS);
    [] when absent, empty or malformed."""
    if not raw:
        return []
    if vr in _BINARY:
        fmt = _BINARY[vr]
        size = struct.calcsize(fmt)
        return [v for (v,) in struct.iter_unpack(fmt, raw[: len(raw) - len(raw) % size])]
    try:
        if vr == "IS":
            return [int(t) for t in text(raw).split("\\")]
        return [float(t) for t in text(raw).split("\\")]
    except ValueError:
        return []


def private_block(elements: dict[int, bytes], group: int, creator: str) -> int | None:
    """Base tag (gggg,xx00) of the private block of `creator` in `group`, found by its
    creator element (gggg,0010-00FF), never by a fixed element number."""
    for elem in range(0x10, 0x100):
        raw = elements.get((group << 16) | elem)
        if raw is not None and text(raw) == creator:
            return (group << 16) | (elem << 8)
    return None
