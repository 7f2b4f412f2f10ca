"""One DICOM file -> the flat, JSON-native header dict mrqart checks: the element walker
(``elements``), the Siemens CSA header and its ASCCONV protocol (``siemens_csa``).

Pure: imports nothing of mrqart but itself, and never trio.
"""

from typing import Any

from mrqart.headers.elements import (
    FIELDS,
    HEADER_KEYS,
    LONG_VRS,
    NULL,
    Field,
    Unreadable,
    read_header,
)

__all__ = [
    "FIELDS", "HEADER_KEYS", "LONG_VRS", "NULL", "Field", "Unreadable", "frames_of", "read_header",
]


def frames_of(header: dict[str, Any]) -> int:
    """How many images a file holds: its header's Frames (enhanced multi-frame), else 1."""
    frames = header.get("Frames")
    return frames if isinstance(frames, int) and frames > 0 else 1
