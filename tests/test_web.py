"""Routes through Quart-Trio's test client: /state, the API, /ws, static files, bad input."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from mrqart.live.hub import Hub, Message
from mrqart.live.session import SessionState
from mrqart.live.web import create_app

HEADER = {"StudyUID": "1.2.3", "SeriesNumber": 7, "Station": "AWP1", "SequenceName": "rest"}
RESULT = {"conforms": False, "errors": {"TR": {"expect": 1.3, "have": 2.0}},
          "input": HEADER, "template": {"TR": 1.3}, "status": "nonconform"}


@pytest.fixture
def state() -> SessionState:
    s = SessionState()
    path = "/in/sess/001_000007_000001.dcm"
    s.add_series(s.key_for(path, HEADER), HEADER, RESULT, path, now=1.0)
    return s


async def test_state_and_api(state: SessionState) -> None:
    client = create_app(state, Hub()).test_client()
    with trio.fail_after(5):
        r = await client.get("/state")
        assert await r.get_json() == {"AWP1": {"station": "AWP1", "content": RESULT}}
        r = await client.get("/api/stations")
        assert [s["station"] for s in await r.get_json()] == ["AWP1"]
        r = await client.get("/api/stations/AWP1/series")
        (series,) = await r.get_json()
        assert series["series"] == "1.2.3:7" and series["n_files"] == 1
        assert series["status"] == "nonconform"


async def test_all_stations_adds_the_databases_others(state: SessionState) -> None:
    db = [{"station": "AWP1", "session": "old", "n_series": 9, "last_seen": None},
          {"station": "SiteB", "session": "b1", "project": "P", "n_series": 2,
           "last_seen": "2026-11-24T09:30:00"}]
    client = create_app(state, Hub(), all_stations=lambda: db).test_client()
    with trio.fail_after(5):
        r = await client.get("/api/stations")
        here, there = await r.get_json()
    assert here["station"] == "AWP1" and here["n_series"] == 1  # this process's own view
    assert there == {**db[1], "remote": True}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/stations/UNKNOWN/series", 404),
        ("/api/stations/%3Cscript%3E/series", 404),  # a name is data: unknown, not malformed
        ("/api/stations/%00/series", 400),
        ("/api/stations/..%2F..%2Fx/series", 400),
        ("/station/..%2F..%2Fetc%2Fpasswd", 400),
        ("/static/" + "a" * 300 + ".js", 404),  # past NAME_MAX: absent, not a 500
        ("/static/../mrqart/live/web.py", 404),
        ("/static/%2e%2e/pyproject.toml", 404),
        ("/static/..%2fpyproject.toml", 404),
        ("/nope", 404),
    ],
)
async def test_bad_requests_get_clear_4xx(state: SessionState, path: str, status: int) -> None:
    client = create_app(state, Hub()).test_client()
    with trio.fail_after(5):
        r = await client.get(path)
    assert r.status_code == status


async def test_ws_relays_hub_messages_and_ignores_garbage(state: SessionState) -> None:
    hub = Hub()
    client = create_app(state, hub).test_client()
    with trio.fail_after(5):
        async with client.websocket("/ws") as ws:
            await ws.send("garbage \x00 that the server must ignore")
            await trio.testing.wait_all_tasks_blocked()
            hub.publish(Message("AWP1", "update", 2, series="1.2.3:7"))
            got = json.loads(await ws.receive())
    assert got == {"station": "AWP1", "type": "update", "content": 2, "series": "1.2.3:7"}
