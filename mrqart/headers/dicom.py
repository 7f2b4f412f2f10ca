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
    Malformed.  Defined-length items are stepped over whole.  The hot path of enhanced
    files (thousands of nested elements), so element heads are read inline.
    """
    n = len(buf)
    head, delim, u32 = HEAD.unpack_from, _DELIM.unpack_from, U32.unpack_from
    short_vrs, long_vrs = SHORT_VRS, LONG_VRS
    # One entry per open level: (is_item, explicit VR inside).
    stack: list[tuple[bool, bool]] = [(False, explicit)]
    in_item = False
    while stack:
        if pos + 8 > n:
            raise Truncated(n + 1)
        if not in_item:  # inside a sequence: an item or the sequence delimiter
            group, elem, length = delim(buf, pos)
            pos += 8
            if group != 0xFFFE:
                raise Malformed(f"({group:04X},{elem:04X}) where a sequence item was expected")
            if elem == _SEQ_END:
                stack.pop()
                if stack:
                    in_item, explicit = stack[-1]
            elif elem != _ITEM:
                raise Malformed(f"unexpected delimiter (FFFE,{elem:04X})")
            elif length == UNDEFINED:
                stack.append((True, explicit))
                in_item = True
            elif pos + length > n:
                raise Truncated(pos + length, 0xFFFEE000)
            else:
                pos += length
            continue
        group, elem, vr, length = head(buf, pos)
        if group == 0xFFFE:
            if elem != _ITEM_END:
                raise Malformed(f"unexpected delimiter (FFFE,{elem:04X}) in an item")
            pos += 8
            stack.pop()
            in_item, explicit = stack[-1]
            continue
        if explicit:
            if vr in short_vrs:
                pos += 8 + length
                continue
            if vr not in long_vrs:
                raise Malformed(f"bad VR {vr!r} at ({group:04X},{elem:04X})")
            if pos + 12 > n:
                raise Truncated(pos + 12)
            length = u32(buf, pos + 8)[0]
            pos += 12
        else:
            length = u32(buf, pos + 4)[0]
            pos += 8
            vr = b"UN"
        if length != UNDEFINED:
            pos += length
            if pos > n:
                raise Truncated(pos, (group << 16) | elem)
            continue
        if len(stack) >= 2 * MAX_DEPTH:  # a sequence and an item per level
            raise Malformed(f"sequences nested deeper than {MAX_DEPTH} levels")
        explicit = explicit and vr != b"UN"  # an undefined-length UN holds implicit VR
        stack.append((False, explicit))
        in_item = False
    if pos > n:
        raise Truncated(pos)
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


def item_datasets(
    raw: bytes, explicit: bool, delimited: bool = False, later: frozenset[int] | None = None
) -> list[dict[int, bytes]]:
    """Each item's elements (tag -> value bytes) of a sequence whose value is `raw`.

    What items() then dataset() give, in one iterative pass over every nested element:
    the per-frame functional groups of an enhanced file hold thousands.  `delimited`:
    `raw` runs on past an undefined-length sequence, which must end at its delimiter
    (Truncated if `raw` ends first).  `later`: of the items after the first, keep only
    these tags (an enhanced file's frames repeat what the first holds).  Raises
    Malformed or Truncated.
    """
    n = len(raw)
    head, delim, u32 = HEAD.unpack_from, _DELIM.unpack_from, U32.unpack_from
    short_vrs = SHORT_VRS
    keep: frozenset[int] | None = None  # None: every tag
    out: list[dict[int, bytes]] = []
    item: dict[int, bytes] = {}
    # Open levels (is_item, explicit): [the sequence, an item, a nested sequence, ...];
    # an element that starts at depth 2 is one of an item's own elements.
    stack: list[tuple[bool, bool]] = [(False, explicit)]
    depth = 1
    in_item = False
    pending: tuple[int, int] | None = None  # an item's undefined-length element: tag, start
    pos = 0
    while True:
        if pos + 8 > n:
            if depth == 1 and pos == n and not delimited:
                return out  # a defined-length sequence's value, all read
            raise Truncated(n + 1)
        if in_item:
            group, elem, vr, length = head(raw, pos)
            if explicit and vr in short_vrs and group != 0xFFFE:  # the common case
                start = pos + 8
                pos = start + length
                if depth == 2 and (keep is None or (group << 16) | elem in keep):
                    item[(group << 16) | elem] = raw[start:pos]
                continue
            if group == 0xFFFE:
                if elem != _ITEM_END:
                    raise Malformed(f"unexpected delimiter (FFFE,{elem:04X}) in an item")
                pos += 8
                stack.pop()
                depth -= 1
                in_item, explicit = stack[-1]
                continue
            if explicit:
                if vr not in LONG_VRS:
                    raise Malformed(f"bad VR {vr!r} at ({group:04X},{elem:04X})")
                if pos + 12 > n:
                    raise Truncated(pos + 12)
                length = u32(raw, pos + 8)[0]
                start = pos + 12
            else:
                length = u32(raw, pos + 4)[0]
                start = pos + 8
                vr = b"UN"
            if length != UNDEFINED:
                pos = start + length
                if pos > n:
                    raise Truncated(pos, (group << 16) | elem)
                if depth == 2 and (keep is None or (group << 16) | elem in keep):
                    item[(group << 16) | elem] = raw[start:pos]
                continue
            if depth >= 2 * MAX_DEPTH:  # a sequence and an item per level
                raise Malformed(f"sequences nested deeper than {MAX_DEPTH} levels")
            if depth == 2 and (keep is None or (group << 16) | elem in keep):
                pending = ((group << 16) | elem, start)
            explicit = explicit and vr != b"UN"  # an undefined-length UN holds implicit VR
            stack.append((False, explicit))
            depth += 1
            in_item = False
            pos = start
            continue
        group, elem, length = delim(raw, pos)  # an item or a sequence delimiter
        pos += 8
        if group != 0xFFFE:
            raise Malformed(f"({group:04X},{elem:04X}) where a sequence item was expected")
        if elem == _SEQ_END:
            stack.pop()
            depth -= 1
            if not depth:
                return out
            in_item, explicit = stack[-1]
            if depth == 2 and pending is not None:
                item[pending[0]] = raw[pending[1] : pos]
                pending = None
        elif elem != _ITEM:
            raise Malformed(f"unexpected delimiter (FFFE,{elem:04X})")
        else:
            if depth == 1:
                if out:
                    keep = later
                item = {}
                out.append(item)
            if length == UNDEFINED:
                stack.append((True, explicit))
                depth += 1
                in_item = True
            elif pos + length > n:
                raise Truncated(pos + length, 0xFFFEE000)
            else:
                if depth == 1:
                    found = dataset(raw[pos : pos + length], explicit)
                    item.update(found if keep is None else {t: found[t] for t in keep & found.keys()})
                pos += length


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
