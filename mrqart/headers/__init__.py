"""One DICOM file -> the flat, JSON-native header dict mrqart checks: the element walker
(``elements``), the Siemens CSA header and its ASCCONV protocol (``siemens_csa``).

Pure: imports nothing of mrqart but itself, and never trio.
"""

from mrqart.headers.elements import (
    FIELDS,
    HEADER_KEYS,
    LONG_VRS,
    NULL,
    Field,
    Unreadable,
    read_header,
)

__all__ = ["FIELDS", "HEADER_KEYS", "LONG_VRS", "NULL", "Field", "Unreadable", "read_header"]
