"""Siemens CSA2 private headers: find one element fast, parse the ASCCONV protocol, write both.

A Siemens MR image carries two CSA blobs in the private block whose creator is
"SIEMENS CSA HEADER": (0029,xx10) the image header and (0029,xx20) the series
header.  CSA2 layout (all little endian)::

    b"SV10" b"\\x04\\x03\\x02\\x01" uint32 n_tags uint32 77
    n_tags x [ char name[64] int32 vm char vr[4] int32 syngodt int32 n_items int32 77
               n_items x [ int32 len int32 len int32 77 int32 len, bytes[len], pad to 4 ] ]

The series header's MrPhoenixProtocol element (MrProtocol in early VB) holds the
protocol text, including an ``### ASCCONV BEGIN ... ### ASCCONV END ###`` block of
``key = value`` lines.  Reading never builds the whole CSA into Python objects: we
look up the few names we need directly in the bytes (see ``read_header`` speed target).
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
]

# Siemens writes these 8 bytes; readers check only "SV10" (the next 4 are zeros in
# some anonymised files, e.g. nibabel's csa_slice_norm.dcm).
CSA2_MAGIC = b"SV10\x04\x03\x02\x01"
_TAG_HEAD = struct.Struct("<64si4s3i")  # name, vm, vr, syngodt, n_items, 77
_ITEM_HEAD = struct.Struct("<4i")
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


def image_element(csa: bytes, name: str) -> str | None:
    """First item of CSA2 element `name` as a stripped string, None if absent or empty.

    Reads CSA1 (no "SV10") through nibabel.  Raises CsaError when the element's
    layout is inconsistent or a CSA1 header cannot be parsed.
    """
    if not csa.startswith(CSA2_MAGIC[:4]):
        return _csa1_element(csa, name)
    # Names are NUL-terminated in a 64-byte field that starts a tag: search for the
    # terminated name and check the layout around it rather than walking ~100 tags.
    key = name.encode("ascii") + b"\x00"
    pos = csa.find(key, 16)
    while pos != -1:
        if pos + _TAG_HEAD.size <= len(csa):
            _, vm, _vr, _dt, n_items, _ = _TAG_HEAD.unpack_from(csa, pos)
            if 0 <= n_items <= MAX_ITEMS and 0 <= vm <= MAX_ITEMS:
                break
        pos = csa.find(key, pos + 1)
    else:
        return None
    if n_items == 0:
        return None
    start = pos + _TAG_HEAD.size + _ITEM_HEAD.size
    if start > len(csa):
        raise CsaError(f"{name}: truncated item header")
    item_len = _ITEM_HEAD.unpack_from(csa, start - _ITEM_HEAD.size)[1]
    if item_len < 0 or start + item_len > len(csa):
        raise CsaError(f"{name}: item length {item_len} out of bounds")
    value = csa[start : start + item_len].split(b"\x00", 1)[0].strip()
    return value.decode("latin-1") if value else None


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
