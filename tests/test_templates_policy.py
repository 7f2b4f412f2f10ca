"""The template policy (rules/templates.py): pure, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from mrqart.rules.check import check
from mrqart.rules.templates import (
    Election,
    Tally,
    accepted_result,
    acquired_at,
    announce_software_change,
    elect,
    software_change,
    votes,
)


@pytest.mark.parametrize(
    ("source", "status", "trusted"),
    [
        ("import", None, True),
        ("import", "nonconform", True),
        ("live", "conform", True),
        ("live", "no_template", True),
        ("live", "accepted", True),
        ("live", "nonconform", False),
        ("live", "software_changed", False),
        ("live", None, False),
    ],
)
def test_who_votes(source: str, status: str | None, trusted: bool) -> None:
    assert votes(source, None if status is None else {"status": status}) is trusted


@pytest.mark.parametrize(
    ("established", "tallies", "expected"),
    [
        # nothing counted yet
        (None, [], Election(None, False)),
        (7, [], Election(7, False)),
        # the first trusted series establishes its set
        (None, [Tally(1, 1)], Election(1, True, "first trusted series")),
        # with none established, most votes, ties to the latest acquired
        (None, [Tally(1, 2, "20261101 090000"), Tally(2, 3, "20261001 090000")],
         Election(2, True, "3 trusted series")),
        (None, [Tally(1, 2, "20261101 090000"), Tally(2, 2, "20261001 090000")],
         Election(1, True, "2 trusted series")),
        # a tie never changes the template, whatever the dates
        (1, [Tally(1, 2, "20261001 090000"), Tally(2, 2, "20261101 090000")],
         Election(1, False)),
        (1, [Tally(1, 1), Tally(2, 1), Tally(3, 1)], Election(1, False)),
        # fewer votes: no change
        (1, [Tally(1, 3), Tally(2, 2)], Election(1, False)),
        # strictly more: the new set wins
        (1, [Tally(1, 2), Tally(2, 3)],
         Election(2, True, "3 trusted series against 2 for the established set")),
        # the established set lost its votes (a person's decision reset the count)
        (1, [Tally(2, 1)],
         Election(2, True, "first trusted series against 0 for the established set")),
        (1, [Tally(1, 0), Tally(2, 0)], Election(1, False)),
    ],
)
def test_elect(established: int | None, tallies: list[Tally], expected: Election) -> None:
    assert elect(established, tallies) == expected


@pytest.mark.parametrize(
    ("previous", "current", "change"),
    [
        ("syngo MR E11", "syngo MR XA30", ("syngo MR E11", "syngo MR XA30")),
        ("syngo MR E11", "syngo  MR e11", None),  # white space and case are not a change
        (None, "syngo MR XA30", None),  # first series of the sequence on this station
        ("syngo MR E11", "null", None),  # the header does not say
        (["syngo MR XA30", "XA30A"], "syngo MR XA60",
         ("syngo MR XA30 / XA30A", "syngo MR XA60")),
    ],
)
def test_software_change(previous: Any, current: Any, change: tuple[str, str] | None) -> None:
    assert software_change(previous, current) == change


TEMPLATE = {"TR": 1300.0, "FA": 52.0, "Project": "P"}


@pytest.mark.parametrize(
    ("header", "status"),
    [({"TR": 2000.0, "FA": 60.0, "Project": "P"}, "software_changed"),
     (TEMPLATE, "conform")],
)
def test_software_change_is_announced_instead_of_flagged(
    header: dict[str, Any], status: str
) -> None:
    result = announce_software_change(check(header, TEMPLATE), ("E11", "XA30"))
    assert result["status"] == status
    assert result["note"] == "first series since the software changed from E11 to XA30"
    assert result["errors"] == check(header, TEMPLATE)["errors"]  # still there to read


def test_accepted_result() -> None:
    wrong = check({"TR": 2000.0, "FA": 52.0, "Project": "P"}, TEMPLATE)
    result = accepted_result(wrong, reason="new protocol", by="ana", at="2026-11-30T11:00:00")
    assert result["conforms"] and result["status"] == "accepted" and result["errors"] == {}
    assert result["note"] == "accepted: new protocol"
    assert result["template"]["TR"] == 2000.0
    assert result["accepted"] == {"reason": "new protocol", "by": "ana",
                                  "at": "2026-11-30T11:00:00",
                                  "changes": {"TR": {"expect": 1300.0, "have": 2000.0}}}


@pytest.mark.parametrize(
    ("stored", "iso"),
    [("20261124 101500.000000", "2026-11-24T10:15:00"), ("20261124 101500", "2026-11-24T10:15:00"),
     (None, None), ("null null", None), ("2026 10", None)],
)
def test_acquired_at(stored: str | None, iso: str | None) -> None:
    assert acquired_at(stored) == iso
