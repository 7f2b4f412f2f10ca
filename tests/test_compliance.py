"""Stations' current sessions: session changes, quiet sessions, alerts and acks. Pure."""

from __future__ import annotations

from mrqart.rules.compliance import Compliance
from mrqart.rules.protocol import Expected, Protocol

PROTOCOL = Protocol("P", (Expected("fmap", 2), Expected("rest", 300)))


def header(n: int, name: str) -> dict:
    return {"SeriesNumber": n, "SequenceName": name, "Shims": "null"}


def test_a_new_session_finishes_the_last_one_and_its_alerts_stay_in_view() -> None:
    c = Compliance(finish_minutes=10)
    assert c.start_session("AWP1", "S1", PROTOCOL, now=0.0) == []
    c.on_series("AWP1", "S1:1", header(1, "fmap"), now=1.0)
    c.on_count("AWP1", "S1:1", 1, now=2.0)
    alerts = c.start_session("AWP1", "S2", PROTOCOL, now=3.0)
    assert [a.text for a in alerts] == ["fmap series 1 incomplete: 1 of 2", "missing: rest"]
    view = c.view("AWP1")
    assert view["session"] == "S2"
    assert [a["kind"] for a in view["alerts"]] == ["missing", "incomplete"]
    assert c.view("other") is None


def test_a_quiet_session_finishes_once() -> None:
    c = Compliance(finish_minutes=1)
    c.start_session("AWP1", "S1", PROTOCOL, now=0.0)
    c.on_series("AWP1", "S1:1", header(1, "fmap"), now=0.0)
    c.on_count("AWP1", "S1:1", 2, now=30.0)
    assert c.finish_quiet(now=89.0) == {}
    (alerts,) = c.finish_quiet(now=90.0).values()
    assert [a.text for a in alerts] == ["missing: rest"]
    assert c.finish_quiet(now=1000.0) == {}
    assert c.view("AWP1")["finished"] is True


def test_acknowledged_alerts_carry_their_reason() -> None:
    c = Compliance()
    c.start_session("AWP1", "S1", PROTOCOL, now=0.0)
    (alert,) = c.start_session("AWP1", "S2", PROTOCOL, now=1.0)
    assert c.alert(alert.id) == ("AWP1", alert)
    c.acknowledge(alert.id, "participant asked to stop", "2026-11-24T10:00:00", "ana")
    (shown,) = c.view("AWP1")["alerts"]
    assert shown["ack"] == {"reason": "participant asked to stop", "at": "2026-11-24T10:00:00",
                            "by": "ana"}
    assert c.alert("nope") is None


def test_a_resolved_alert_leaves_the_view() -> None:
    c = Compliance()
    c.start_session("AWP1", "S1", PROTOCOL, now=0.0)
    c.on_series("AWP1", "S1:1", header(1, "fmap"), now=0.0)
    (alert,) = c.on_series("AWP1", "S1:2", header(2, "rest"), now=1.0)
    assert [a["id"] for a in c.view("AWP1")["alerts"]] == [alert.id]
    assert c.on_count("AWP1", "S1:1", 2, now=2.0) == ([], [alert])
    assert c.view("AWP1")["alerts"] == []
    assert c.alert(alert.id) is None
