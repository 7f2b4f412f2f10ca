"""The templates the live path checks against, held in memory.

A verdict must not wait for the database: another process may hold its write lock
(a backup, ``mrqart import`` beside the service) for seconds. The session task reads
templates here only; the store task (service.Pipeline's flush) refreshes the cache
from the store after it records new series and every TEMPLATE_REFRESH_S (templates
pinned or imported by another process), and never blocks a reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mrqart.rules.check import template_name
from mrqart.store import param_set_of, template_key

#: How often the store task reloads every template, to see what other processes wrote.
TEMPLATE_REFRESH_S = 10.0

_Key = tuple[str, str]


def key_of(header: Mapping[str, Any]) -> _Key:
    """The cache key of a header's series: its Project x template name, as the store folds them."""
    return template_key(str(header.get("Project")), template_name(header))


class TemplateCache:
    """Project x template name -> the template (the 17 parameters), as the store ranks them.

    ``learn`` makes the first series of a name its own template at once (what the store
    will say once that series is recorded), so the next series of that name in the same
    session is checked against it even before the store task has written it.
    """

    def __init__(self) -> None:
        self._templates: dict[_Key, dict[str, Any]] = {}
        self._provisional: dict[_Key, dict[str, Any]] = {}  # learnt, not yet reloaded
        # (station, key) -> the SoftwareVersions of its last series (rules.templates)
        self._software: dict[tuple[str, _Key], Any] = {}

    def __len__(self) -> int:
        return len(self._templates)

    def get(self, header: Mapping[str, Any]) -> dict[str, Any] | None:
        """The template for a header's series, or None if the project has none for it."""
        return self._templates.get(key_of(header))

    def learn(self, header: Mapping[str, Any], echo_times: Iterable[float] = ()) -> None:
        """A new series is on its way to the store: a name without a template gets this
        series' parameters (with its echo times, for an enhanced multi-echo file)."""
        key = key_of(header)
        if key not in self._templates:
            self._templates[key] = self._provisional[key] = param_set_of(header, echo_times)

    def load(self, templates: Iterable[Mapping[str, Any]]) -> None:
        """Replace the cache by the store's ``templates()``; a learnt entry stays until
        its series is written and ``update`` gives the store's answer for it."""
        fresh = {template_key(t["project"], t["sequence_name"]): t["params"] for t in templates}
        for key in [k for k in self._provisional if k in fresh]:
            del self._provisional[key]
        self._templates = {**self._provisional, **fresh}

    def update(self, templates: Mapping[_Key, dict[str, Any] | None]) -> None:
        """Set the store's answers (``store.template(*key)``; the key is already folded)
        for names whose new series were written: the store's policy decides from now on,
        None included."""
        for key, template in templates.items():
            self._provisional.pop(key, None)
            if template is None:
                self._templates.pop(key, None)
            else:
                self._templates[key] = template

    def previous_software(self, header: Mapping[str, Any]) -> tuple[bool, Any]:
        """(known?, the SoftwareVersions of the last series of this header's sequence on its
        station): known once this process has seen such a series or asked the store."""
        key = (str(header.get("Station")), key_of(header))
        return key in self._software, self._software.get(key)

    def saw_software(self, header: Mapping[str, Any]) -> None:
        """Remember this new series' software: the next of its sequence compares with it."""
        self._software[(str(header.get("Station")), key_of(header))] = header.get("SoftwareVersions")
