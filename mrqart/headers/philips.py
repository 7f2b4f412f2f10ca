"""Philips (Ingenia, Achieva; software 5.x writes Enhanced MR multi-frame files).

Everything mrqart compares is standard in Philips files: the functional groups
(``enhanced``) give TR, TE, flip angle, PE direction, pixel spacing, bandwidth and the
SENSE factor ((0018,9069) ParallelReductionFactorInPlane, in the MR Modifier macro);
(0018,9005) PulseSequenceName ("FFE", "TSE") is the SequenceType.

Philips stores no phase encoding polarity, no shim currents and no sequence file name,
no bandwidth per pixel in the phase direction (its equivalent is the water-fat shift,
(2001,1022) FL, which mrqart does not compare) and no TA or FoV text: those fields are
not recorded, and the rules never flag them.
"""

from __future__ import annotations

from typing import Any, Final

NOT_RECORDED: Final = ("Phase", "Shims", "SequenceFile", "BWPPE", "TA", "FoV")


def is_philips(manufacturer: Any) -> bool:
    return isinstance(manufacturer, str) and manufacturer.upper().startswith("PHILIPS")
