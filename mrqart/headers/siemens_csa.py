"""Siemens CSA2 private headers: find one element fast, parse the ASCCONV protocol, write both.

A Siemens MR image carries two CSA blobs in the private block whose creator is
"SIEMENS CSA HEADER": (0029,xx10) the image header and (0029,xx20) the series
header.  CSA2 layout (all little endian)::

    b"SV10" b"\\x04\\x03\\x02\\x01" uint32 n_tags uint32 77
    n_tags x [ char name[64] int32 vm char vr[4] int32 syngodt int32 n_items int32 77
               n_items x [ int32 len int32 len int32 77 int32 len, bytes[len], pad to 4 ] ]

The series header's MrPhoenixProtocol element (MrProtocol in early VB) holds the
protocol text, including an ``### ASCCONV BEGIN ... ### ASCCONV END ###`` block of
``key = value`` lines.  Reading never builds the whole CSA into Python objects: the
image header's tag table is walked once for the few names we need, and the ASCCONV
block is searched in the bytes (see ``read_header`` speed target).
"""

from __future__ import annotations

import functools
import re
import struct
import warnings
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "SHIM_KEYS",
    "SHIM_KEYS_VB",
    "CsaError",
    "ascconv_span",
    "ascconv_values",
    "encode_csa2",
    "image_element",
    "image_elements",
]

# Siemens writes these 8 bytes; readers check only "SV10" (the next 4 are zeros in
# some anonymised files, e.g. nibabel's csa_slice_norm.dcm).
CSA2_MAGIC = b"SV10\x04\x03\x02\x01"
_TAG_HEAD = struct.Struct("<64si4s3i")  # name, vm, vr, syngodt, n_items, 77
_ITEM_HEAD = struct.Struct("<4i")
_U32 = struct.Struct("<I")
# nibabel's sanity bound: a CSA header never holds more than this many tags or items.
MAX_ITEMS = 1000

ASCCONV_BEGIN = b"### ASCCONV BEGIN"
ASCCONV_END = b"### ASCCONV END"

# The Shims list, in the order of the header contract.  VD/VE/XA protocols name the
# gradient offsets per GPA (asGPAData[0]); VB protocols write them on sGRADSPEC itself.
SHIM_KEYS: tuple[str, ...] = (
    "sAdjData.uiAdjShimMode",
    "sGRADSPEC.asGPAData[0].lOffsetX",
    "sGRADSPEC.asGPAData[0].lOffsetY",
    "sGRADSPEC.asGPAData[0].lOffsetZ",
    *(f"sGRADSPEC.alShimCurrent[{i}]" for i in range(5)),
    "sTXSPEC.asNucleusInfo[0].lFrequency",
)
SHIM_KEYS_VB: tuple[str, ...] = tuple(k.replace("asGPAData[0].", "") for k in SHIM_KEYS)


# nibabel.nicom warns on import that its DICOM readers are experimental; we use only
# its CSA1 parser, so keep that warning out of the service's log.
warnings.filterwarnings(
    "ignore", message="The DICOM readers are highly experimental", category=UserWarning
)


class CsaError(ValueError):
    """The CSA bytes are not a CSA2 header we can read."""


def image_elements(csa: bytes, names: Iterable[str]) -> dict[str, str | None]:
    """First item of each CSA element in `names`, as a stripped string (None: absent/empty).

    CSA2 is read by walking its tag table: a name found by searching the bytes is not
    a tag, because Siemens leaves stale names in the unused bytes of other tags'
    64-byte name fields, sometimes before the real tag (issue 11).  The walk stops at
    the first inconsistency (a check field that is not 77 or 205, a count or length out
    of bounds): names found before it keep their values, the rest are None.  CSA1 (no
    "SV10") is read through nibabel; it raises CsaError when it cannot be parsed.
    """
    names = tuple(names)
    out: dict[str, str | None] = dict.fromkeys(names)
    if not csa.startswith(CSA2_MAGIC[:4]):
        for name in names:
            out[name] = _csa1_element(csa, name)
        return out
    # A bytes search gives candidate positions (fast, in C); the walk below proves
    # which candidate starts a tag.
    candidates: dict[int, str] = {}
    for name in names:
        key = name.encode("ascii") + b"\x00"
        pos = csa.find(key, 16)
        while pos != -1:
            candidates[pos] = name
            pos = csa.find(key, pos + 1)
    if not candidates:
        return out
    last = max(candidates)
    # CSA2 is 4-byte aligned throughout (84-byte tag heads, 16-byte item heads, values
    # padded to 4), so walk it as int32s: indexing is ~3x cheaper than struct.
    n = len(csa)
    with memoryview(csa)[: n - n % 4] as raw, raw.cast("i") as ints:
        n_tags = ints[2]
        if not 0 <= n_tags <= MAX_ITEMS:
            return out
        i, end = 4, len(ints)  # i: the position in int32s
        try:
            for _ in range(n_tags):
                pos = 4 * i
                if pos > last:
                    break
                n_items, check = ints[i + 19], ints[i + 20]
                if check not in (77, 205) or not 0 <= n_items <= MAX_ITEMS:
                    break
                i += 21
                if (name := candidates.get(pos)) is not None:
                    out[name] = _first_item(csa, 4 * i, n_items)
                for _ in range(n_items):
                    # Item head: int32 len, len, 77, len; the value is padded to 4 bytes.
                    item_len = ints[i + 1]
                    if item_len < 0:
                        return out
                    i += 4 + ((item_len + 3) >> 2)
                if i > end:
                    break
        except IndexError:  # a length that points past the end
            pass
    return out


def _first_item(csa: bytes, pos: int, n_items: int) -> str | None:
    """The first item at `pos` as a stripped string; None when empty or out of bounds."""
    if n_items == 0 or pos + 16 > len(csa):
        return None
    start = pos + 16
    end = start + _U32.unpack_from(csa, pos + 4)[0]
    if end > len(csa):
        return None
    value = csa[start:end].split(b"\x00", 1)[0].strip()
    return value.decode("latin-1") if value else None


def image_element(csa: bytes, name: str) -> str | None:
    """First item of CSA element `name` as a stripped string, None if absent or empty."""
    return image_elements(csa, (name,))[name]


def _csa1_element(csa: bytes, name: str) -> str | None:
    """`image_element` for the older CSA1 layout (rare; VA/early VB), via nibabel."""
    # CSA1 item lengths depend on the tag count in an odd way; nibabel knows it.
    from nibabel.nicom import csareader

    try:
        items = csareader.read(csa)["tags"].get(name, {}).get("items", [])
    except (csareader.CSAReadError, struct.error, ValueError, AssertionError) as e:
        raise CsaError(f"CSA1: {e}") from e
    return str(items[0]).strip() if items else None


def ascconv_span(csa: bytes) -> tuple[int, int] | None:
    """(start, end) of the ASCCONV block's key lines in the series CSA `csa`, or None.

    `start` is the line break before the first key, `end` the END marker.
    """
    begin = csa.find(ASCCONV_BEGIN)
    if begin == -1:
        return None
    # The block ends a few KB before the CSA does: searching backwards is ~10x cheaper.
    end = csa.rfind(ASCCONV_END, begin)
    start = csa.find(b"\n", begin, end)
    return None if end == -1 or start == -1 else (start, end)


@functools.lru_cache(maxsize=8)
def _runs(keys: tuple[str, ...]) -> tuple[tuple[bytes, re.Pattern[bytes]], ...]:
    """The runs `keys` fall in: (b"\\n" + run prefix, pattern matching the run's end)."""
    prefixes = dict.fromkeys("".join(k.partition(".")[:2]).encode("ascii") for k in keys)
    return tuple((b"\n" + p, re.compile(rb"\n(?!" + re.escape(p) + rb")")) for p in prefixes)


def ascconv_values(csa: bytes, span: tuple[int, int], keys: Iterable[str]) -> dict[str, str]:
    """Raw values of those ASCCONV `keys` that the block at `span` of `csa` assigns.

    Accepts both separators seen in the field: runs of spaces (VB, VD) and tabs (VE/XA)
    around "=".  Values keep their ASCCONV spelling (``0x2``, ``""%SiemensSeq%\\ep2d""``).
    """
    keys = tuple(keys)
    wanted = {k.encode("ascii") for k in keys}
    begin, end = span
    out: dict[str, str] = {}
    # ASCCONV writes the protocol structure in order, so all keys of one structure
    # (sGRADSPEC.*) form one run of lines.  Find each run with bytes.find and split
    # only its lines: ~5x faster than a regex over the whole ~50 KB block.
    for run, run_end in _runs(keys):
        start = csa.find(run, begin, end)
        if start == -1:
            continue
        stop = run_end.search(csa, start + 1, end)
        for line in csa[start + 1 : stop.start() if stop else end].split(b"\n"):
            key, eq, value = line.partition(b"=")
            key = key.rstrip(b" \t")
            if eq and key in wanted:
                out.setdefault(key.decode("ascii"), value.strip().decode("latin-1"))
    return out


# --- writing ----------------------------------------------------------------------


def _encode_tag(name: str, vr: str, values: Sequence[str], vm: int) -> bytes:
    # As Siemens does: an element with values has at least 6 items (the ones past the
    # values empty) and ends its header with 77; an empty one has no items and 205.
    n_items = max(6, len(values)) if values else 0
    parts = [
        _TAG_HEAD.pack(
            name.encode("ascii"), vm, vr.encode("ascii"), 0, n_items, 77 if values else 205
        )
    ]
    for i in range(n_items):
        data = values[i].encode("latin-1") + b"\x00" if i < len(values) else b""
        parts.append(_ITEM_HEAD.pack(len(data), len(data), 77, len(data)))
        parts.append(data + b"\x00" * (-len(data) % 4))
    return b"".join(parts)


def encode_csa2(elements: Mapping[str, tuple[str, Sequence[str]]]) -> bytes:
    """CSA2 bytes holding `elements`: name -> (VR, list of string items), in order."""
    body = [CSA2_MAGIC, struct.pack("<2I", len(elements), 77)]
    for name, (vr, values) in elements.items():
        body.append(_encode_tag(name, vr, values, max(1, len(values))))
    return b"".join(body)
