"""Patient data in the header dict: which fields name or describe a person, and the
three ways mrqart shows them (``PHI_MODES``): ``show``; ``initials`` (names cut to
initials, free text dropped, file paths cut to their names); ``hide`` (names gone,
and the acquisition date and series UID that would still point at one visit).

Birth date, patient ID and address are never read into the header at all
(``elements.FIELDS``). Used by the live service per connection and by the report.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

PHI_MODES = ("show", "initials", "hide")

#: Header fields that name people or may hold free text about them.
_NAMES = frozenset({"SubID", "Operator"})
_FREE_TEXT = frozenset({"Comments"})
#: Dropped when hiding: with the name gone these would still point at one person's visit.
_HIDDEN_TOO = frozenset({"AcqDate", "SeriesUID"})


def initials(name: str) -> str:
    """``"Doe^John"`` -> ``"D.J."``; a name of one word (``"sub01"``) -> ``"S."``."""
    parts = [p for p in re.split(r"[\^\s_,.]+", name) if p]
    return "".join(f"{p[0].upper()}." for p in parts[:3])


def filter_phi(value: Any, mode: str) -> Any:
    """``value`` (a wire message, a CheckResult, an API answer) with patient data
    filtered for ``mode``; ``show`` returns it unchanged. A file path keeps only its name
    (a session directory is often named after the patient)."""
    if mode == "show":
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if key in _NAMES:
                if mode == "initials" and isinstance(item, str):
                    out[key] = initials(item)
            elif key in _FREE_TEXT or (mode == "hide" and key in _HIDDEN_TOO):
                continue
            elif key == "path" and isinstance(item, str):
                out[key] = os.path.basename(item)
            else:
                out[key] = filter_phi(item, mode)
        return out
    if isinstance(value, list):
        return [filter_phi(item, mode) for item in value]
    return value
