"""Enhanced MR (multi-frame) files: the standard parameters in the functional groups.

An Enhanced MR Image (SOP class 1.2.840.10008.5.1.4.1.1.4.1; Siemens XA, Philips 5.x)
keeps one header for many frames.  Parameters live in functional-group macros, each a
one-item sequence, either in the Shared Functional Groups (5200,9229) item or in each
frame's item of the Per-frame Functional Groups (5200,9230).  A macro may be in either
place, so each lookup tries the first frame, then the shared item.

    (0018,9112) MR Timing and Related Parameters: (0018,0080) TR, (0018,1314) flip angle
    (0018,9114) MR Echo: (0018,9082) EffectiveEchoTime (per frame for multi-echo)
    (0018,9125) MR FOV/Geometry: (0018,1312) in-plane PE direction, (0018,9058) and
                (0018,9231) frequency and phase encoding steps
    (0028,9110) Pixel Measures: (0028,0030) PixelSpacing
    (0018,9006) MR Imaging Modifier: (0018,0095) PixelBandwidth
    (0018,9115) MR Modifier: (0018,9069) ParallelReductionFactorInPlane

Bounded: the nesting read is fixed (group -> macro -> element), every length is checked
by ``dicom``; a malformed group raises ``dicom.Malformed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from mrqart.headers import dicom

SHARED: Final = 0x52009229  # (5200,9229) SharedFunctionalGroupsSequence
PER_FRAME: Final = 0x52009230  # (5200,9230) PerFrameFunctionalGroupsSequence
# A key (no tag) that says elements[PER_FRAME] is the rest of the file from the start of
# an undefined-length per-frame sequence: it ends at its delimiter, not at its end.
TAIL: Final = -1

TIMING: Final = 0x00189112
ECHO: Final = 0x00189114
GEOMETRY: Final = 0x00189125
PIXEL_MEASURES: Final = 0x00289110
IMAGING_MODIFIER: Final = 0x00189006
MODIFIER: Final = 0x00189115


@dataclass(frozen=True)
class FunctionalGroups:
    """The shared item and the per-frame items of one enhanced file."""

    shared: dict[int, bytes]
    frames: list[dict[int, bytes]]
    explicit: bool

    def frame(self, i: int) -> dict[int, bytes]:
        """The elements of frame `i`'s item ({} when there is no such frame)."""
        return self.frames[i] if i < len(self.frames) else {}

    def macro(self, tag: int, frame: int = 0) -> dict[int, bytes]:
        """The elements of macro `tag`'s item: from frame `frame`, else shared; {} if none."""
        for source in (self.frame(frame), self.shared):
            if (raw := source.get(tag)) is not None:
                found = dicom.items(raw, self.explicit)
                if found:
                    return dicom.dataset(found[0], self.explicit)
        return {}

    def private(self, group: int, creator: str, frame: int | None = None) -> dict[int, bytes]:
        """A nested private block (a one-item sequence (gggg,xxFE) next to its creator,
        as Siemens XA writes them): its item's elements by offset 0x00-0xFF; {} if absent.
        From the shared item, or from frame `frame`'s item."""
        source = self.shared if frame is None else self.frame(frame)
        return nested_private(source, group, creator, self.explicit)


def nested_private(
    source: dict[int, bytes], group: int, creator: str, explicit: bool
) -> dict[int, bytes]:
    """The private block of `creator` nested in `source` as (gggg,xxFE) -> one item that
    repeats the creator: offset -> value bytes ({} when absent)."""
    base = dicom.private_block(source, group, creator)
    if base is None or (raw := source.get(base | 0xFE)) is None:
        return {}
    found = dicom.items(raw, explicit)
    if not found:
        return {}
    return block(dicom.dataset(found[0], explicit), group, creator)


def block(elements: dict[int, bytes], group: int, creator: str) -> dict[int, bytes]:
    """The elements of `creator`'s private block in `elements`, by offset 0x00-0xFF."""
    base = dicom.private_block(elements, group, creator)
    if base is None:
        return {}
    return {tag & 0xFF: raw for tag, raw in elements.items() if tag & 0xFFFFFF00 == base}


def read(elements: dict[int, bytes], explicit: bool) -> FunctionalGroups | None:
    """The functional groups of an enhanced file's top-level `elements`, or None."""
    if SHARED not in elements and PER_FRAME not in elements:
        return None
    shared_items = dicom.item_datasets(elements.get(SHARED, b""), explicit)
    # Frames after the first are read for their echo times only (multi-echo files).
    frames = dicom.item_datasets(
        elements.get(PER_FRAME, b""), explicit, TAIL in elements, later=frozenset({ECHO})
    )
    return FunctionalGroups(shared_items[0] if shared_items else {}, frames, explicit)


def _first(values: list[Any]) -> Any:
    return values[0] if values else None


def echo_times(fg: FunctionalGroups) -> list[float]:
    """Every frame's (0018,9082) EffectiveEchoTime, each distinct value once, in frame
    order.  Computed frames (a Philips field map in Hz) give 0: not an echo time."""
    out: list[float] = []
    for i in range(max(1, len(fg.frames))):
        te = _first(dicom.numbers(fg.macro(ECHO, i).get(0x00189082), "FD"))
        if te is not None and te > 0 and te not in out:
            out.append(te)
    return out


def standard(fg: FunctionalGroups) -> dict[str, Any]:
    """Header values the functional groups give (keys of HEADER_KEYS plus "EchoTimes" and
    "ParallelFactor"); a value the file does not hold is left out."""
    out: dict[str, Any] = {}
    timing = fg.macro(TIMING)
    if (tr := _first(dicom.numbers(timing.get(0x00180080), "DS"))) is not None:
        out["TR"] = tr
    if (fa := _first(dicom.numbers(timing.get(0x00181314), "DS"))) is not None:
        out["FA"] = fa
    if times := echo_times(fg):
        out["TE"], out["EchoTimes"] = times[0], times
    geometry = fg.macro(GEOMETRY)
    if direction := dicom.text(geometry.get(0x00181312)):
        # Enhanced files spell it COLUMN; classic files (and dcm2niix) COL.
        out["PED_major"] = "COL" if direction == "COLUMN" else direction
        freq = _first(dicom.numbers(geometry.get(0x00189058), "US"))
        phase = _first(dicom.numbers(geometry.get(0x00189231), "US"))
        if freq is not None and phase is not None:
            # (0018,1310) AcquisitionMatrix: frequency rows\columns, phase rows\columns.
            rows = out["PED_major"] == "ROW"
            out["Matrix"] = [0, freq, phase, 0] if rows else [freq, 0, 0, phase]
    spacing = dicom.numbers(fg.macro(PIXEL_MEASURES).get(0x00280030), "DS")
    if spacing:
        out["PixelResol"] = spacing
    if (bwp := _first(dicom.numbers(fg.macro(IMAGING_MODIFIER).get(0x00180095), "DS"))) is not None:
        out["BWP"] = bwp
    factor = _first(dicom.numbers(fg.macro(MODIFIER).get(0x00189069), "FD"))
    if factor is not None:
        out["ParallelFactor"] = factor
    return out
