"""GE (Signa; DV2x, MR29 and later): private parameters in GEMS_ACQU_01 (0019,10xx) and
GEMS_PARM_01 (0043,10xx), found by creator string (dcm2niix's console/nii_dicom.cpp
reads the same tags):

    (0043,1083) GEMS_PARM AssetRFactors: "0.5\\1": in-plane acceleration R = 1 / first value
    (0043,10B6) GEMS_PARM multiband: first value is the slice acceleration factor
    (0043,1002-1004) GEMS_PARM gradient offsets X, Y, Z: the linear shims
    (0043,102A) GEMS_PARM user-defined data (binary): the EPI phase polarity bit
    (0019,109C) GEMS_ACQU pulse sequence name ("epiRT", "B0map"): SequenceType
    (0018,9034) RectilinearPhaseEncodeReordering (RX27+): LINEAR = flipped polarity

Phase follows the Siemens meaning of PhaseEncodingDirectionPositive as dcm2niix reads it
("j-" for a COL series with Phase 1): GE "unflipped" is 1, "flipped" is 0.

GE records no bandwidth per pixel in the phase direction, no TA or FoV text and no
sequence file: those fields are not recorded.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from mrqart.headers import dicom, enhanced

ACQU: Final = "GEMS_ACQU_01"
PARM: Final = "GEMS_PARM_01"
NOT_RECORDED: Final = ("BWPPE", "TA", "FoV", "SequenceFile")
REORDERING: Final = 0x00189034  # (0018,9034) RectilinearPhaseEncodeReordering


def is_ge(manufacturer: Any) -> bool:
    return isinstance(manufacturer, str) and manufacturer.upper().startswith("GE ")


def fields(elements: dict[int, bytes]) -> dict[str, Any]:
    """iPAT, Phase, Shims and SequenceType from GE's private blocks; absent ones left out."""
    parm = enhanced.block(elements, 0x0043, PARM)
    acqu = enhanced.block(elements, 0x0019, ACQU)
    out: dict[str, Any] = {}
    if name := dicom.text(acqu.get(0x9C)):
        out["SequenceType"] = name
    shims = [dicom.numbers(parm.get(off), "SS") for off in (0x02, 0x03, 0x04)]
    if all(shims):
        out["Shims"] = [s[0] for s in shims]
    if (ipat := pat_text(parm.get(0x83), parm.get(0xB6))) is not None:
        out["iPAT"] = ipat
    reordering = dicom.text(elements.get(REORDERING))
    if reordering in ("LINEAR", "REVERSE_LINEAR"):
        out["Phase"] = 0 if reordering == "LINEAR" else 1
    elif (flipped := epi_polarity_flipped(parm.get(0x2A))) is not None:
        out["Phase"] = 0 if flipped else 1
    return out


def pat_text(asset: bytes | None, multiband: bytes | None) -> str | None:
    """"p2", "p2s3", "s3" in Siemens' PATModeText form (p: in-plane, s: slice
    acceleration), or None when neither is accelerated."""
    text = ""
    factors = dicom.numbers(asset, "DS")
    if factors and factors[0] > 0 and (r := round(1 / factors[0], 2)) > 1:
        text += f"p{r:g}"
    bands = dicom.text(multiband).split("\\")[0].strip()
    if bands.isdigit() and int(bands) > 1:
        text += f"s{int(bands)}"
    return text or None


_U16: Final = struct.Struct("<H")


def epi_polarity_flipped(data: bytes | None) -> bool | None:
    """From (0043,102A) user-defined data: whether an EPI's phase encoding polarity is
    flipped; None when this is not EPI or the block is not the layout dcm2niix knows.

    The layout (dcm2niix): a uint16 header offset at byte 24; there a float32 version
    (5-40); from 25.002 on the fields sit 0x4C further and the ky direction 0x8C nearer.
    Bit 0x800 at +0x3A marks EPI, bit 0x4 at +0x30 a flipped polarity, and a ky
    direction of 1 (bottom up) at +0x394 inverts it.
    """
    if not data or len(data) < 916:
        return None
    try:
        offset = _U16.unpack_from(data, 24)[0]
        (version,) = struct.unpack_from("<f", data, offset)
        if not 5.0 <= version <= 40.0:
            return None
        hdr, ky = offset, 0x394
        if version >= 25.002:
            hdr += 0x4C
            ky -= 0x8C
        if not _U16.unpack_from(data, hdr + 0x3A)[0] & 0x800:
            return None
        flipped = bool(_U16.unpack_from(data, hdr + 0x30)[0] & 0x4)
        if _U16.unpack_from(data, hdr + ky)[0] == 1:
            flipped = not flipped
    except struct.error:  # offsets beyond the block
        return None
    return flipped
