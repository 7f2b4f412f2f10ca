"""Each station's current session against its project's protocol. Pure: no trio, no I/O.

The session task tells :class:`Compliance` about new series and file counts and, now
and then, the time; it answers with the alerts to publish. A session ends when another
starts on the same station or when no file has come for ``finish_minutes``; then the
last series is checked for completeness and missing series are reported.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mrqart.rules.protocol import FINISHED_AFTER_MINUTES, Alert, Checklist, Protocol, looks_finished

#: Alerts kept per station (the current session's and the last ones before it).
MAX_ALERTS = 50


@dataclass
class _Current:
    checklist: Checklist
    last_file: float


class Compliance:
    """The checklists of every station's current session, and their alerts."""

    def __init__(self, finish_minutes: float = FINISHED_AFTER_MINUTES) -> None:
        self.finish_minutes = finish_minutes
        self._current: dict[str, _Current] = {}
        self._alerts: dict[str, OrderedDict[str, Alert]] = {}  # station -> id -> alert
        self._acks: dict[str, dict[str, Any]] = {}  # id -> {"reason", "at", "by"}

    def session_of(self, station: str) -> str | None:
        current = self._current.get(station)
        return current.checklist.session if current else None

    def start_session(
        self, station: str, session: str, protocol: Protocol, now: float,
        acks: dict[str, dict[str, Any]] | None = None,
    ) -> list[Alert]:
        """A new session on ``station``: the previous one finishes (its alerts are returned)."""
        alerts = self._finish(station)
        self._current[station] = _Current(Checklist(session, protocol), now)
        self._acks.update(acks or {})
        return alerts

    def on_series(
        self, station: str, key: str, header: dict[str, Any], now: float,
        errors: dict[str, Any] | None = None,
    ) -> list[Alert]:
        current = self._current[station]
        current.last_file = now
        return self._remember(station, current.checklist.on_series(key, header, errors))

    def on_count(
        self, station: str, key: str, n_files: int, now: float
    ) -> tuple[list[Alert], list[Alert]]:
        """Another file counted; the alerts it (updates, resolves). Resolved ones are
        forgotten here."""
        current = self._current.get(station)
        if current is None:
            return [], []
        current.last_file = now
        updated, resolved = current.checklist.on_count(key, n_files)
        self._remember(station, updated)
        for alert in resolved:
            self._alerts.get(station, {}).pop(alert.id, None)
            self._acks.pop(alert.id, None)
        return updated, resolved

    def finish_quiet(self, now: float) -> dict[str, list[Alert]]:
        """Finish the sessions that had no file for ``finish_minutes``; alerts by station."""
        out = {}
        for station, current in list(self._current.items()):
            quiet = looks_finished(current.last_file, now, self.finish_minutes)
            if quiet and not current.checklist.finished:
                out[station] = self._remember(station, current.checklist.finish())
        return out

    def set_protocol(self, station: str, protocol: Protocol) -> None:
        """A pinned protocol replaces the learnt one of the current session."""
        current = self._current.get(station)
        if current is not None:
            current.checklist.protocol = protocol

    def stations_of(self, project: str) -> list[str]:
        return [s for s, c in self._current.items()
                if c.checklist.protocol.project.casefold() == project.casefold()]

    def alert(self, alert_id: str) -> tuple[str, Alert] | None:
        """The alert with this id and its station; None if it is unknown or forgotten."""
        for station, alerts in self._alerts.items():
            if alert_id in alerts:
                return station, alerts[alert_id]
        return None

    def acknowledge(self, alert_id: str, reason: str, at: str, by: str | None = None) -> None:
        self._acks[alert_id] = {"reason": reason, "at": at, "by": by}

    def alert_json(self, alert: Alert) -> dict[str, Any]:
        return {**alert.to_json(), "ack": self._acks.get(alert.id)}

    def view(self, station: str) -> dict[str, Any] | None:
        """The checklist of the station's current session with the station's recent
        alerts, newest first (a finished session's "missing" stays in view); None if none."""
        current = self._current.get(station)
        if current is None:
            return None
        alerts = [self.alert_json(a) for a in reversed(self._alerts.get(station, {}).values())]
        return {**current.checklist.view(), "alerts": alerts}

    def _finish(self, station: str) -> list[Alert]:
        current = self._current.pop(station, None)
        if current is None:
            return []
        return self._remember(station, current.checklist.finish())

    def _remember(self, station: str, alerts: list[Alert]) -> list[Alert]:
        kept = self._alerts.setdefault(station, OrderedDict())
        for alert in alerts:
            kept[alert.id] = alert
        while len(kept) > MAX_ALERTS:
            old, _ = kept.popitem(last=False)
            self._acks.pop(old, None)
        return alerts
