"""Compare a header dict with a dcm2niix JSON sidecar, field by field (shared by the
corpus tests and the generator's XA tests)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from mrqart.headers import NULL

# Phase (PhaseEncodingDirectionPositive, GE's unflipped polarity = 1) as dcm2niix writes
# it for axial images: the sign follows from the in-plane direction (checked on every
# Siemens E11, XA30 and GE file in tests/data).
POLARITY = {("COL", 1): "j-", ("COL", 0): "j", ("ROW", 1): "i", ("ROW", 0): "i-"}


def pat_factor(ipat: Any) -> float:
    """The in-plane factor of "p2" / "p2s3" (1 when not accelerated: "null")."""
    if ipat == NULL:
        return 1.0
    match = re.match(r"p(\d+(?:\.\d+)?)", str(ipat))
    return float(match.group(1)) if match else 1.0


def close(a: Any, b: Any, tol: float) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol


def comparisons(header: dict[str, Any], doc: dict[str, Any]) -> Iterator[tuple[str, Any, Any, bool]]:
    """(field, mrqart value, dcm2niix value, agree) for each field the sidecar holds."""
    if "RepetitionTime" in doc:
        yield "TR", header["TR"], doc["RepetitionTime"], close(header["TR"], doc["RepetitionTime"] * 1000, 0.01)
    if "FlipAngle" in doc:
        yield "FA", header["FA"], doc["FlipAngle"], close(header["FA"], doc["FlipAngle"], 0.01)
    if "InPlanePhaseEncodingDirectionDICOM" in doc:
        their = doc["InPlanePhaseEncodingDirectionDICOM"]
        yield "PED_major", header["PED_major"], their, header["PED_major"] == their
    if "PhaseEncodingDirection" in doc:
        their = doc["PhaseEncodingDirection"]
        yield "Phase", header["Phase"], their, POLARITY.get((header["PED_major"], header["Phase"])) == their
    if "ParallelReductionFactorInPlane" in doc:
        their = doc["ParallelReductionFactorInPlane"]
        yield "iPAT", header["iPAT"], their, pat_factor(header["iPAT"]) == float(their)
    if "PixelBandwidth" in doc:
        their = doc["PixelBandwidth"]
        yield "BWP", header["BWP"], their, close(header["BWP"], their, 0.01)
    if "BandwidthPerPixelPhaseEncode" in doc:
        their = doc["BandwidthPerPixelPhaseEncode"]
        yield "BWPPE", header["BWPPE"], their, close(header["BWPPE"], their, 0.001)
    if "ShimSetting" in doc:
        their, shims = doc["ShimSetting"], header["Shims"]
        # Siemens: mode, 3 gradient offsets, 5 shim currents, frequency; dcm2niix the 8
        # in the middle.  GE: the 3 gradient offsets.
        mine = shims[1:9] if isinstance(shims, list) and len(shims) == 10 else shims
        yield "Shims", shims, their, mine == their
        if isinstance(shims, list) and len(shims) == 10 and "ImagingFrequency" in doc:
            freq = doc["ImagingFrequency"]
            yield "Shims[9] (frequency)", shims[9], freq, close(shims[9] / 1e6, freq, 2e-6)
    if "PulseSequenceDetails" in doc:
        their = doc["PulseSequenceDetails"].replace("\\", "/")
        yield "SequenceFile", header["SequenceFile"], their, header["SequenceFile"] == their
    if "SequenceName" in doc:
        their = doc["SequenceName"]
        yield "SequenceType", header["SequenceType"], their, header["SequenceType"] == their
