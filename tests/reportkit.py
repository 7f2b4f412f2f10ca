"""A month of synthetic sessions in a store, for the report tests (model, CLI, mail, pages).

Project "Brain^Wellness" scans one session each weekday of November 2026 with the
protocol localizer, T1w, rest, dwi; then on Monday 2026-11-30 two sessions:

- DAY1 (09:00): rest has TR 2000 (as on 11-25, 11-26 and 11-27: a 4-day streak), dwi
  is missing;
- DAY2 (11:00): T1w has FA 12 (template 9), rest stopped at 250 of 300 files and the
  operator acknowledged it, dwi has TE 92 (template 89) and the physicist accepted it as
  the new reference at 12:10, and "fmap_new" was never seen before (no template).

Series are recorded as the live path records them: one that differed from its template
does not vote (``trusted=False``), so a wrong series never becomes the reference.

Project "Kids/Study 2" (a slash and a space in its name) scans T1w and rest on 11-23
and 11-30, both conforming.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mrqart.rules.protocol import Alert
from mrqart.store import Store
from mrqart.synth import DEFAULT_FIELDS

PROJECT = "Brain^Wellness"
KIDS = "Kids/Study 2"
DAY = dt.date(2026, 11, 30)
DAY1 = "1.2.826.0.1.3680043.2.1125.20261130.1"
DAY2 = "1.2.826.0.1.3680043.2.1125.20261130.2"
KIDS_DAY = "1.2.826.0.1.3680043.2.1125.20261130.3"
STREAK_DAYS = ("20261125", "20261126", "20261127")
ACK_REASON = "participant moved, stopped early"
ACK_AT = "2026-11-30T11:40:00+00:00"
ACK_BY = "otto"
ACCEPT_BY = "dr. physicist"
ACCEPT_REASON = "new diffusion scheme, approved by the PI"
ACCEPT_AT = "2026-11-30T12:10:00+00:00"

#: name -> (parameters that differ from synth's DEFAULT_FIELDS, usual number of files)
SERIES: dict[str, tuple[dict[str, Any], int]] = {
    "localizer": ({"TR": 8.6, "TE": 4.0, "FA": 20.0, "SequenceType": "fl2d1"}, 3),
    "T1w": ({"TR": 2300.0, "TE": 2.98, "FA": 9.0, "SequenceType": "tfl3d1_16ns"}, 192),
    "rest": ({}, 300),
    "dwi": ({"TR": 3200.0, "TE": 89.0, "FA": 90.0, "SequenceType": "epse2d1_86"}, 64),
    "fmap_new": ({"TR": 600.0, "TE": 4.92, "FA": 55.0, "SequenceType": "fm2d2r"}, 72),
}
PROTOCOL = ("localizer", "T1w", "rest", "dwi")


def record_session(
    store: Store, session: str, day: str, hour: int, names: tuple[str, ...], *,
    project: str = PROJECT, subject: str = "sub", changed: dict[str, dict[str, Any]] | None = None,
    n_files: dict[str, int] | None = None, station: str = "AWP167046",
) -> None:
    """Record one session's series, numbered 1.. in order, a minute apart."""
    for number, name in enumerate(names, start=1):
        fields, usual = SERIES[name]
        header = {
            **DEFAULT_FIELDS, **fields, **(changed or {}).get(name, {}),
            "Project": project, "SequenceName": name, "SeriesNumber": number,
            "StudyUID": session, "SeriesUID": f"{session}.{number}", "SubID": subject,
            "Station": station, "AcqDate": day, "AcqTime": f"{hour:02d}{number:02d}00.000000",
        }
        store.record_series(header, n_files=(n_files or {}).get(name, usual), source="live",
                            session=session, trusted=name not in (changed or {}))


def build_month(store: Store) -> None:
    """Record the month described in the module doc."""
    day = dt.date(2026, 11, 2)
    while day < DAY:
        if day.weekday() < 5:
            key = day.strftime("%Y%m%d")
            wrong = {"rest": {"TR": 2000.0}} if key in STREAK_DAYS else None
            record_session(store, f"1.2.826.0.1.3680043.2.1125.{key}.1", key, 9, PROTOCOL,
                           subject=f"sub{key}", changed=wrong)
        day += dt.timedelta(1)
    record_session(store, "1.2.826.0.1.3680043.2.1125.20261123.3", "20261123", 14,
                   ("T1w", "rest"), project=KIDS, subject="kid01", station="AWP2")
    record_session(store, DAY1, "20261130", 9, ("localizer", "T1w", "rest"), subject="sub-a",
                   changed={"rest": {"TR": 2000.0}})
    record_session(store, DAY2, "20261130", 11, (*PROTOCOL, "fmap_new"), subject="sub-b",
                   changed={"T1w": {"FA": 12.0}, "dwi": {"TE": 92.0}}, n_files={"rest": 250})
    record_session(store, KIDS_DAY, "20261130", 14, ("T1w", "rest"), project=KIDS,
                   subject="kid02", station="AWP2")
    incomplete = Alert(id=f"{DAY2}:3:incomplete", kind="incomplete", session=DAY2,
                       series=f"{DAY2}:3", text="rest series 3 incomplete: 250 of 300")
    store.acknowledge(incomplete.to_json(), ACK_REASON, ACK_AT, ACK_BY)
    store.accept(DAY2, 4, reason=ACCEPT_REASON, by=ACCEPT_BY, at=ACCEPT_AT)
