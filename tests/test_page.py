"""The console page (static/) in real headless Chromium.

Most tests run the page against ``FakeServer``: a tiny Quart-Trio app that serves
static/, answers /state and /api/... from a scripted backend in the contract's shapes,
and pushes scripted messages down /ws. That keeps page tests deterministic. One test
runs the real service end to end.

The README's screenshot is made by tests/test_page_checklist.py::test_screenshot.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from cdp import CHROMIUM, Page, open_chromium
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import jsonify, websocket
from quart_trio import QuartTrio

pytestmark = pytest.mark.browser

STATIC = Path(__file__).resolve().parent.parent / "static"
TIMEOUT = 30  # seconds, each test: Chromium start-up dominates
XSS = "<img src=x onerror=alert(1)>"

# A plausible BOLD protocol: the template the fake "learnt" and what conforming series carry.
TEMPLATE: dict[str, Any] = {
    "Project": "BrainStudy", "SequenceName": "ep2d_bold", "iPAT": "p2", "Comments": "rest",
    "SequenceType": "epfid2d1_64", "PED_major": "COL", "Phase": 1, "TR": 1300.0,
    "TE": 30.0, "Matrix": [64, 64], "PixelResol": [3.0, 3.0], "BWP": 2298.0,
    "BWPPE": 30.05, "FA": 60.0, "TA": "TA 06:32", "FoV": "216*216",
    "SequenceFile": "%SiemensSeq%\\ep2d_bold",
}


def check_result(template: dict[str, Any] | None, **values: Any) -> dict[str, Any]:
    """A CheckResult in the contract's shape: header = template + ``values``."""
    header = {**TEMPLATE, "SeriesNumber": 1, "AcqDate": "20261124", "AcqTime": "142501.250000",
              "StudyUID": "1.2.3", "Station": "MRC35343", **values}
    if template is None:
        return {"conforms": False, "errors": {}, "input": header, "template": {},
                "status": "no_template"}
    errors = {k: {"expect": v, "have": header[k]} for k, v in template.items() if header[k] != v}
    return {"conforms": not errors, "errors": errors, "input": header, "template": template,
            "status": "nonconform" if errors else "conform"}


@dataclass
class FakeServer:
    """Scripted backend: what /state and /api answer, and a /ws that relays ``send()``."""

    series: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # newest first
    #: While True, /ws refuses connections (the service is "down").
    refuse: bool = False
    url: str = ""
    _clients: set[trio.MemorySendChannel[str]] = field(default_factory=set)

    def add(self, station: str, key: str, content: dict[str, Any], n_files: int = 1) -> None:
        """A series the service already knows about (as restored from its store)."""
        self.series.setdefault(station, []).insert(0, {
            "series": key, "station": station, "session": content["input"]["StudyUID"],
            "series_number": content["input"]["SeriesNumber"],
            "sequence_name": content["input"]["SequenceName"], "n_files": n_files,
            "status": content["status"], "content": content,
        })

    def send(self, message: dict[str, Any]) -> None:
        """Push one wire message to every connected page (unbounded: test-sized bursts)."""
        for client in self._clients:
            client.send_nowait(json.dumps(message))

    def drop(self) -> None:
        """Close every page's WebSocket, as a service restart would."""
        for client in self._clients:
            client.close()
        self._clients.clear()

    def app(self) -> QuartTrio:
        app = QuartTrio(__name__, static_folder=str(STATIC), static_url_path="/static")

        @app.get("/")
        @app.get("/station/<station>")
        async def index(station: str = "") -> Any:
            return await app.send_static_file("index.html")

        @app.get("/state")
        async def state() -> Any:
            return jsonify({s: {"station": s, "content": rows[0]["content"]}
                            for s, rows in self.series.items() if rows})

        @app.get("/api/stations")
        async def stations() -> Any:
            now = datetime.now(UTC).isoformat()
            return jsonify([{"station": s, "n_series": len(rows), "last_seen": now}
                            for s, rows in self.series.items()])

        @app.get("/api/stations/<station>/series")
        async def series(station: str) -> Any:
            return jsonify(self.series.get(station, []))

        @app.websocket("/ws")
        async def ws() -> Any:
            if self.refuse:
                return "service down", 503
            await websocket.accept()
            send, receive = trio.open_memory_channel[str](math.inf)
            self._clients.add(send)
            try:
                async with receive:
                    async for text in receive:
                        await websocket.send(text)
                await websocket.close(1000)
            finally:  # also when the page went away and Quart cancelled us
                self._clients.discard(send)

        return app


@pytest.fixture
def chromium() -> None:
    """Skip browser tests without Chromium; in CI (CI=true) its absence is a failure."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} not found: install Debian's chromium package (or set CHROMIUM)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


async def serve_app(nursery: trio.Nursery, app: QuartTrio) -> str:
    """Serve ``app`` on a free localhost port until ``nursery`` is cancelled; its URL."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    binds = await nursery.start(partial(serve, app, config))
    return binds[0]


@pytest.fixture
async def server(nursery: trio.Nursery) -> FakeServer:
    fake = FakeServer()
    fake.url = await serve_app(nursery, fake.app())
    return fake


@pytest.fixture
async def page(chromium: None) -> AsyncIterator[Page]:
    async with open_chromium() as p:
        yield p


async def open_page(page: Page, url: str) -> None:
    await page.navigate(url)
    await page.wait_for("document.body.dataset.ready === '1'")


async def texts(page: Page, selector: str) -> list[str]:
    return await page.evaluate(
        f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)"
    )


def seed_realistic(server: FakeServer) -> None:
    """A morning at one scanner: green series, one red, one without a template."""
    for n, (seq, time) in enumerate([("AAHScout_32ch", "083012"), ("t1_mprage_sag", "083410"),
                                     ("ep2d_bold_rest", "084102"), ("ep2d_bold_task", "085233")], 1):
        template = {**TEMPLATE, "SequenceName": seq}
        server.add("MRC35343", str(n), check_result(template, SequenceName=seq, SeriesNumber=n,
                                                     AcqTime=time), n_files=176 + 10 * n)
    server.add("MRC35343", "5", check_result(None, SequenceName="gre_field_mapping",
                                             SeriesNumber=5, AcqTime="090230"), n_files=2)
    server.add("MRC35343", "6", check_result({**TEMPLATE, "SequenceName": "ep2d_bold_task"},
                                             SequenceName="ep2d_bold_task", SeriesNumber=6,
                                             AcqTime="090514", TR=2000.0, FA=52.0), n_files=34)


async def test_verdicts_green_red_neutral(server: FakeServer, page: Page) -> None:
    server.add("MRC35343", "1", check_result(TEMPLATE, SeriesNumber=1))
    server.add("MRC35343", "2", check_result(TEMPLATE, SeriesNumber=2, TR=2000.0))
    server.add("MRC35343", "3", check_result(None, SeriesNumber=3, SequenceName="new_seq"))
    with trio.fail_after(TIMEOUT):
        await open_page(page, server.url)
        statuses = await page.evaluate(
            "[...document.querySelectorAll('.series')].map(e => [e.dataset.key, e.dataset.status,"
            " e.querySelector('details').open])"
        )
        assert statuses == [["3", "no_template", False], ["2", "nonconform", True],
                            ["1", "conform", False]]
        assert await texts(page, "[data-key='2'] .problems li") == ["TR should be 1300 but is 2000"]
        assert await texts(page, "[data-key='2'] tr.diff td") == ["TR", "2000", "1300"]
        assert "No template yet" in (await texts(page, "[data-key='3'] .note"))[0]
        assert await texts(page, "#n-conform, #n-nonconform, #n-no-template") == ["1", "1", "1"]
        assert page.errors == []


async def test_live_new_and_update_messages(server: FakeServer, page: Page) -> None:
    server.add("MRC35343", "1", check_result(TEMPLATE, SeriesNumber=1), n_files=10)
    with trio.fail_after(TIMEOUT):
        await open_page(page, server.url)
        server.send({"station": "MRC35343", "type": "new", "series": "2",
                     "content": check_result(TEMPLATE, SeriesNumber=2, FA=90.0)})
        await page.wait_for("document.querySelector('.series')?.dataset.key === '2'")
        assert await texts(page, ".series .count") == ["1", "10"]
        assert await texts(page, "[data-key='2'] .problems li") == ["FA should be 60 but is 90"]
        server.send({"station": "MRC35343", "type": "update", "series": "2", "content": 42})
        await page.wait_for("document.querySelector(\"[data-key='2'] .count\").textContent === '42'")
        assert await texts(page, "[data-key='1'] .count") == ["10"]
        assert await texts(page, "#n-conform, #n-nonconform") == ["1", "1"]
        assert page.errors == []


async def test_a_watched_root_that_is_gone_is_shown(server: FakeServer, page: Page) -> None:
    """A "watch" message: "not watching ROOT since HH:MM" until the root is back (the
    root, a directory name, is text, never markup)."""
    root = "/srv/<b>scanner</b>"
    with trio.fail_after(TIMEOUT):
        await open_page(page, server.url)
        assert await page.evaluate("document.getElementById('watch-banner').hidden")
        server.send({"station": None, "type": "watch",
                     "content": {"not_watching": {root: "2026-11-30T10:02:00+00:00"}}})
        await page.wait_for("!document.getElementById('watch-banner').hidden")
        text = await page.evaluate("document.getElementById('watch-banner').textContent")
        hhmm = await page.evaluate("new Date('2026-11-30T10:02:00+00:00')"
                                   ".toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'})")
        assert text == f"not watching {root} since {hhmm}"
        assert await page.evaluate("document.querySelector('#watch-banner b')") is None
        server.send({"station": None, "type": "watch", "content": {"not_watching": {}}})
        await page.wait_for("document.getElementById('watch-banner').hidden")
        assert page.errors == []


async def test_an_unreachable_database_is_shown(server: FakeServer, page: Page) -> None:
    """A "database" message: "database unreachable since HH:MM" beside a gone root, until
    the database answers again."""
    banner = "document.getElementById('watch-banner')"
    with trio.fail_after(TIMEOUT):
        await open_page(page, server.url)
        server.send({"station": None, "type": "database",
                     "content": {"reachable": False, "unreachable_since": "10:02"}})
        await page.wait_for(f"!{banner}.hidden")
        assert await page.evaluate(f"{banner}.textContent") == "database unreachable since 10:02"
        server.send({"station": None, "type": "watch",
                     "content": {"not_watching": {"/srv/scanner": "2026-11-30T10:05:00+00:00"}}})
        await page.wait_for(f"{banner}.textContent.startsWith('not watching /srv/scanner')")
        assert (await page.evaluate(f"{banner}.textContent")).endswith(
            "; database unreachable since 10:02")
        server.send({"station": None, "type": "watch", "content": {"not_watching": {}}})
        server.send({"station": None, "type": "database",
                     "content": {"reachable": True, "unreachable_since": None}})
        await page.wait_for(f"{banner}.hidden")
        assert page.errors == []


async def test_header_values_are_inserted_as_text(server: FakeServer, page: Page) -> None:
    server.add("MRC35343", "1", check_result(TEMPLATE, SeriesNumber=1, Comments=XSS))
    with trio.fail_after(TIMEOUT):
        await open_page(page, server.url)
        server.send({"station": "MRC35343", "type": "new", "series": "2",
                     "content": check_result(None, SeriesNumber=2, SequenceName=XSS)})
        server.send({"station": None, "type": "unreadable",
                     "content": {"path": f"/in/{XSS}.dcm", "reason": "<b>truncated</b>"}})
        await page.wait_for("document.querySelectorAll('.unreadable li').length === 1")
        assert await texts(page, "[data-key='2'] .seq") == [XSS]
        assert await texts(page, "[data-key='1'] .problems li") == [
            f"Comments should be rest but is {XSS}"]
        assert (await texts(page, ".unreadable li"))[0].endswith(f"{XSS}.dcm — <b>truncated</b>")
        # No element was created from the data, so no onerror handler can ever run.
        assert await page.evaluate("document.querySelectorAll('main img, aside b').length") == 0
        assert page.dialogs == []
        assert page.errors == []


async def test_reconnect_banner_and_resync(server: FakeServer, page: Page) -> None:
    server.add("MRC35343", "1", check_result(TEMPLATE, SeriesNumber=1))
    with trio.fail_after(TIMEOUT):
        await open_page(page, server.url)
        assert await page.evaluate("document.getElementById('banner').hidden") is True
        server.refuse = True
        server.drop()
        await page.wait_for("document.body.dataset.conn === 'closed'")
        banner = await texts(page, "#banner")
        assert await page.evaluate("document.getElementById('banner').hidden") is False
        assert banner[0].startswith("Disconnected from mrqart")
        # While it was away, the service learnt a series; the re-sync must show it.
        server.add("MRC35343", "2", check_result(TEMPLATE, SeriesNumber=2, TR=2000.0))
        server.refuse = False
        await page.wait_for("document.body.dataset.syncs === '2'")
        assert await page.evaluate("document.getElementById('banner').hidden") is True
        assert await page.evaluate("document.body.dataset.conn") == "open"
        assert await texts(page, "[data-key='2'] .problems li") == ["TR should be 1300 but is 2000"]
        server.send({"station": "MRC35343", "type": "update", "series": "2", "content": 7})
        await page.wait_for("document.querySelector(\"[data-key='2'] .count\").textContent === '7'")


async def test_station_url_opens_that_station(server: FakeServer, page: Page) -> None:
    server.add("MRC35343", "a1", check_result(TEMPLATE, SeriesNumber=1))
    server.add("AWP167046", "b1", check_result(TEMPLATE, SeriesNumber=1, Station="AWP167046"))
    server.add("AWP167046", "b2", check_result(None, SeriesNumber=2, Station="AWP167046"))
    shown = "[...document.querySelectorAll('.series')].map(e => e.dataset.key).join()"
    with trio.fail_after(TIMEOUT):
        await open_page(page, f"{server.url}/station/AWP167046")
        assert await page.evaluate(shown) == "b2,b1"
        assert await texts(page, "#station-name") == ["AWP167046"]
        assert await page.evaluate("document.getElementById('station-select').value") == "AWP167046"
        await page.evaluate(
            "const s = document.getElementById('station-select');"
            "s.value = 'MRC35343'; s.dispatchEvent(new Event('change'))"
        )
        assert await page.evaluate("location.pathname") == "/station/MRC35343"
        assert await page.evaluate(shown) == "a1"
        await page.evaluate("history.back()")
        await page.wait_for(f"{shown} === 'b2,b1'")
        # A live series for the other station does not appear in this station's view.
        server.send({"station": "MRC35343", "type": "new", "series": "a2",
                     "content": check_result(TEMPLATE, SeriesNumber=2)})
        server.send({"station": "AWP167046", "type": "new", "series": "b3",
                     "content": check_result(TEMPLATE, SeriesNumber=3, Station="AWP167046")})
        await page.wait_for(f"{shown} === 'b3,b2,b1'")


async def test_dom_stays_bounded(server: FakeServer, page: Page) -> None:
    with trio.fail_after(TIMEOUT):
        await open_page(page, server.url)
        for n in range(1, 501):
            server.send({"station": "MRC35343", "type": "new", "series": str(n),
                         "content": check_result(TEMPLATE, SeriesNumber=n)})
            server.send({"station": "MRC35343", "type": "unreadable",
                         "content": {"path": f"/in/{n}.dcm", "reason": "zero bytes"}})
        await page.wait_for("document.querySelector('.series')?.dataset.key === '500'")
        assert await page.evaluate("document.querySelectorAll('.series').length") == 60
        assert await page.evaluate("document.querySelectorAll('.unreadable li').length") == 20
        # Counts cover the day, not only what is still on screen.
        assert await texts(page, "#n-conform") == ["500"]
        assert page.errors == []


def learn_template(archive: Path, db: Path) -> None:
    """Record three archived sessions with the synthetic scanner's defaults: the template.

    Three, because live series count too: the odd series of ``scan`` (which may be read
    before the conforming one, in directory order) must not tie with the template.
    """
    from mrqart.headers import read_header
    from mrqart.store import Store
    from mrqart.synth import write_dicom

    archive.mkdir()
    write_dicom(archive / "001_000001_000001.dcm")
    header = read_header(archive / "001_000001_000001.dcm")
    with Store(db) as store:
        for session in ("archive1", "archive2", "archive3"):
            store.record_series(header, n_files=200, source="import", session=session)


def scan(session: Path) -> None:
    """What the scanner writes: a conforming series of 5 files, then three odd ones."""
    from mrqart.synth import write_dicom

    session.mkdir()
    for i in range(1, 6):
        write_dicom(session / f"001_000001_{i:06d}.dcm", SeriesNumber=1, InstanceNumber=i)
    write_dicom(session / "001_000002_000001.dcm", SeriesNumber=2, TR=2000.0)
    write_dicom(session / "001_000003_000001.dcm", SeriesNumber=3, Comments=XSS)
    write_dicom(session / "001_000004_000001.dcm", SeriesNumber=4, SequenceName=XSS)


async def test_end_to_end_with_the_real_service(page: Page, tmp_path: Path) -> None:
    from mrqart.live.service import Config, run_service

    root = tmp_path / "incoming"
    root.mkdir()
    db = tmp_path / "db.sqlite"
    by_number = ("Object.fromEntries([...document.querySelectorAll('.series')].map(e => "
                 "[e.querySelector('.meta').firstChild.textContent.split(' ')[0], "
                 "[e.dataset.status, e.querySelector('.count').textContent]]))")
    with trio.fail_after(TIMEOUT):
        await trio.to_thread.run_sync(learn_template, tmp_path / "archive", db)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(run_service, Config(roots=(root,), db=db, port=0)))
            await open_page(page, f"{url}/station/AWP167046")
            await trio.to_thread.run_sync(scan, root / "20261124_MRQART_test")
            await page.wait_for(f"Object.keys({by_number}).length === 4")
            await page.wait_for(f"{by_number}['#1']?.[1] === '5'")
            problems = await texts(page, ".series .problems li")
            assert await page.evaluate(by_number) == {
                "#1": ["conform", "5"], "#2": ["nonconform", "1"], "#3": ["nonconform", "1"],
                "#4": ["no_template", "1"]}, problems
            assert "TR should be 1300 but is 2000" in problems
            assert f"Comments should be Unaliased MB3/PE4/LB SENSE1 but is {XSS}" in problems
            assert XSS in await texts(page, ".series .seq")
            assert await page.evaluate("document.querySelectorAll('main img').length") == 0
            assert page.dialogs == []
            assert page.errors == []
            nursery.cancel_scope.cancel()
