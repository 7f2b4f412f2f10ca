"""Siemens XA (syngo MR XA10 and later: Vida, Prisma/Skyra upgraded to XA): no CSA header.

XA writes what the CSA held into two private blocks, always found by their creator
string, never by a fixed element number (a PACS may renumber blocks):

- "SIEMENS MR SDS 01" (series level, (0021,10xx) when the block is 0x10)
- "SIEMENS MR SDI 02" (image level, (0021,11xx) when the block is 0x11)

In an interoperability (classic single-frame) file both blocks are top-level elements.
In an enhanced file, SDS is nested in the shared functional group item as the one-item
sequence (0021,xxFE), and SDI likewise in each frame's item.  Where each value is read
(offsets within the block; dcm2niix's console/nii_dicom.cpp reads the same tags):

    (0021,1019) SDS ASCCONV: the protocol text, as the CSA series header's MrPhoenixProtocol
                (Shims, tSequenceFileName, sPat.lAccelFactPE)
    (0021,1009) SDS PATModeText: "p2", "p2s3" (present when the series is accelerated)
    (0021,105E) SDS FoV text: "FoV 216*216"
    (0021,111C) SDI PhaseEncodingDirectionPositive: 1 or 0
    (0021,1153) SDI BandwidthPerPixelPhaseEncode (FD)
    (0021,1177) SDI sequence name: "epfid2d1_64" (as (0018,0024) SequenceName)

Enhanced XA files carry no "TA" text (classic and interoperability files keep it in
(0051,xx0A) SIEMENS MR HEADER): there TA is not recorded.
"""

from __future__ import annotations

import re
from typing import Any, Final

from mrqart.headers import dicom, enhanced
from mrqart.headers import siemens_csa as csa

SDS: Final = "SIEMENS MR SDS 01"
SDI: Final = "SIEMENS MR SDI 02"
GROUP: Final = 0x0021

ASCCONV: Final = 0x19  # (0021,xx19) in SDS
PAT_MODE: Final = 0x09  # (0021,xx09) in SDS
FOV: Final = 0x5E  # (0021,xx5E) in SDS
PHASE_POSITIVE: Final = 0x1C  # (0021,xx1C) in SDI
BWPPE: Final = 0x53  # (0021,xx53) in SDI
SEQUENCE_NAME: Final = 0x77  # (0021,xx77) in SDI

NOT_RECORDED: Final = ("TA",)
ACCEL_KEY: Final = "sPat.lAccelFactPE"


def is_xa(elements: dict[int, bytes], fg: enhanced.FunctionalGroups | None) -> bool:
    """Whether the file carries the XA private blocks (top-level or nested)."""
    if dicom.private_block(elements, GROUP, SDS) is not None:
        return True
    return fg is not None and dicom.private_block(fg.shared, GROUP, SDS) is not None


def blocks(
    elements: dict[int, bytes], fg: enhanced.FunctionalGroups | None
) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """(SDS, SDI) elements by offset: top-level in interoperability files, nested in the
    functional groups (shared; first frame) in enhanced ones."""
    sds = enhanced.block(elements, GROUP, SDS)
    sdi = enhanced.block(elements, GROUP, SDI)
    if fg is not None:
        sds = sds or fg.private(GROUP, SDS)
        sdi = sdi or fg.private(GROUP, SDI, frame=0)
    return sds, sdi


def fields(
    elements: dict[int, bytes], fg: enhanced.FunctionalGroups | None, shim_keys: tuple[str, ...]
) -> dict[str, Any]:
    """Phase, iPAT, BWPPE, FoV, SequenceType and the ASCCONV text's values for
    `shim_keys` (under "ascconv") from the XA blocks; absent values are left out."""
    sds, sdi = blocks(elements, fg)
    out: dict[str, Any] = {}
    phase = dicom.numbers(sdi.get(PHASE_POSITIVE), "IS")
    if phase:
        out["Phase"] = phase[0]
    bwppe = dicom.numbers(sdi.get(BWPPE), "FD")
    if bwppe:
        out["BWPPE"] = bwppe[0]
    if fov := dicom.text(sds.get(FOV)):
        out["FoV"] = fov
    if name := dicom.text(sdi.get(SEQUENCE_NAME)):
        out["SequenceType"] = name
    protocol = sds.get(ASCCONV) or b""
    values: dict[str, str] = {}
    if span := csa.ascconv_span(protocol):
        values = csa.ascconv_values(protocol, span, (*shim_keys, ACCEL_KEY))
    out["ascconv"] = values
    if ipat := dicom.text(sds.get(PAT_MODE)):
        out["iPAT"] = ipat
    elif (accel := _int(values.get(ACCEL_KEY))) is not None and accel > 1:
        # Unaccelerated series carry no PATModeText; classic CSA leaves it empty too.
        out["iPAT"] = f"p{accel}"
    return out


def _int(text: str | None) -> int | None:
    if text is None or not re.fullmatch(r"\s*-?(0x[0-9a-fA-F]+|\d+)\s*", text):
        return None
    return int(text, 0)
