"""The session checklist and alerts on the console page, in real headless Chromium.

The first tests drive the page from a scripted fake server (test_page.FakeServer plus
the checklist, acknowledgement and pin routes, which record what the page sends). The
last runs the real service: a session that skips a series and stops one short.

``MRQART_SCREENSHOT=static/screenshot.png pytest tests/test_page_checklist.py -k screenshot``
refreshes the README's screenshot (the checklist beside the series).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from cdp import Page, open_chromium
from quart import abort, jsonify, request
from quart_trio import QuartTrio
from test_page import (  # noqa: F401 (chromium: the fixture that skips without Chromium)
    TEMPLATE,
    TIMEOUT,
    XSS,
    FakeServer,
    check_result,
    chromium,
    open_page,
    seed_realistic,
    serve_app,
    texts,
)

from mrqart.synth import DEFAULT_FIELDS, PROTOCOL, write_session
from tests.test_service import station_series

pytestmark = pytest.mark.browser

STATION = "MRC35343"
SESSION = "1.2.3"
AT = "2026-11-24T14:31:07+00:00"


def key(number: int) -> str:
    return f"{SESSION}:{number}"


def item(name: str, expected: int | None, state: str, n_files: int = 0,
         number: int | None = None) -> dict[str, Any]:
    """A checklist item in the contract's shape."""
    return {"sequence_name": name, "expected_files": expected, "state": state,
            "n_files": n_files, "series": None if number is None else key(number),
            "series_number": number}


def alert(kind: str, text: str, number: int | None = None) -> dict[str, Any]:
    """An AlertJSON, not acknowledged."""
    return {"id": f"{key(number) if number else SESSION}:{kind}", "kind": kind,
            "session": SESSION, "series": None if number is None else key(number),
            "text": text, "ack": None}


def view(items: list[dict[str, Any]], alerts: list[dict[str, Any]], *, project: str = "BrainStudy",
         finished: bool = False) -> dict[str, Any]:
    return {"session": SESSION, "project": project, "pinned": False, "finished": finished,
            "items": items, "alerts": alerts}


@dataclass
class ChecklistServer(FakeServer):
    """FakeServer plus the session-compliance routes; records every POST/DELETE body."""

    checklists: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def app(self) -> QuartTrio:
        app = super().app()

        @app.get("/api/stations/<station>/checklist")
        async def checklist(station: str) -> Any:
            if station not in self.checklists:
                abort(404)
            return jsonify(self.checklists[station])

        @app.post("/api/alerts/<alert_id>/ack")
        async def ack(alert_id: str) -> Any:
            body = await request.get_json()
            self.requests.append(("POST", request.path, body))
            known = {a["id"] for v in self.checklists.values() for a in v["alerts"]}
            if alert_id not in known:
                abort(404)
            reason = str(body.get("reason", "")).strip()
            if not 1 <= len(reason) <= 200:
                abort(400)
            done = {"id": alert_id, "reason": reason, "at": AT}
            self.send({"station": STATION, "type": "ack", "content": done})  # as the service does
            return jsonify(done)

        @app.route("/api/projects/<project>/protocol", methods=["POST", "DELETE"])
        async def protocol(project: str) -> Any:
            body = await request.get_json(silent=True)
            self.requests.append((request.method, request.path, body))
            return jsonify({"project": project, "pinned": True, "expected": [
                {"sequence_name": "localizer", "n_files": 3}]})

        return app


@pytest.fixture
async def browser(request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    request.getfixturevalue("chromium")
    async with open_chromium() as p:
        yield p


@pytest.fixture
async def server(nursery: trio.Nursery) -> ChecklistServer:
    fake = ChecklistServer()
    fake.url = await serve_app(nursery, fake.app())
    return fake


def morning(server: ChecklistServer) -> None:
    """Three series of a session in progress: T1 stopped short, rest is running."""
    for number, name in [(1, "localizer"), (2, "t1_mprage"), (3, "rest"), (4, XSS)]:
        server.add(STATION, key(number), check_result(
            {**TEMPLATE, "SequenceName": name}, SequenceName=name, SeriesNumber=number))
    server.checklists[STATION] = view(
        [item("localizer", 3, "done", 3, 1), item("t1_mprage", 192, "incomplete", 120, 2),
         item("fmap", 72, "pending"), item("rest", 300, "running", 180, 3),
         item(XSS, None, "unexpected", 1, 4)],
        [alert("incomplete", "t1_mprage series 2 incomplete: 120 of 192", 2)],
    )


ITEMS = ("[...document.querySelectorAll('#checklist-items .item')].map(e => "
         "[e.dataset.state, e.querySelector('.name').textContent, "
         "e.querySelector('.state').textContent, e.querySelector('.progress').hidden ? '' : "
         "e.querySelector('.of').textContent])")
ALERTS = ("[...document.querySelectorAll('.alert')].map(e => "
          "[e.dataset.kind, e.dataset.acked, e.querySelector('.text').textContent, "
          "e.querySelector('.ack-note').textContent])")


async def press_enter(page: Page) -> None:
    for kind in ("keyDown", "keyUp"):
        await page.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                        windowsVirtualKeyCode=13, text="\r")


async def test_checklist_states_progress_and_updates(server: ChecklistServer, browser: Page) -> None:
    morning(server)
    with trio.fail_after(TIMEOUT):
        await open_page(browser, f"{server.url}/station/{STATION}")
        assert await browser.evaluate(ITEMS) == [
            ["done", "localizer  #1", "done · 3", ""],
            ["incomplete", "t1_mprage  #2", "incomplete", "120 of 192"],
            ["pending", "fmap", "not yet", ""],
            ["running", "rest  #3", "running", "180 of 300"],
            ["unexpected", f"{XSS}  #4", "unexpected · 1", ""],
        ]
        bar = "document.querySelector(\"[data-series='1.2.3:3'] .fill\").style.width"
        assert await browser.evaluate(bar) == "60%"
        assert "BrainStudy" in (await texts(browser, "#checklist-meta"))[0]
        assert await browser.evaluate("document.getElementById('checklist-note').hidden") is True
        # Per-file updates move the running item's count and bar, and the series card's.
        server.send({"station": STATION, "type": "update", "series": key(3), "content": 250})
        await browser.wait_for("document.querySelector(\"[data-series='1.2.3:3'] .of\")"
                            ".textContent === '250 of 300'")
        assert await browser.evaluate(f"parseFloat({bar})") == pytest.approx(100 * 250 / 300, abs=0.01)
        assert await texts(browser, "[data-key='1.2.3:3'] .count") == ["250"]
        # A new checklist (the next series started) replaces the items.
        server.send({"station": STATION, "type": "checklist", "content": view(
            [item("localizer", 3, "done", 3, 1), item("rest", 300, "incomplete", 250, 3),
             item("rest", 300, "repeated", 1, 5)], [])})
        await browser.wait_for("document.querySelectorAll('#checklist-items .item').length === 3")
        assert [s for s, *_ in await browser.evaluate(ITEMS)] == ["done", "incomplete", "repeated"]
        # A project without a learnt protocol says so.
        server.send({"station": STATION, "type": "checklist", "content": view(
            [item("rest", None, "unexpected", 4, 3)], [], project="NewStudy")})
        await browser.wait_for("!document.getElementById('checklist-note').hidden")
        assert (await texts(browser, "#checklist-note"))[0].startswith(
            "No protocol learnt for NewStudy yet")
        assert browser.errors == []


async def test_alerts_acknowledged_from_the_page(server: ChecklistServer, browser: Page) -> None:
    morning(server)
    missing = alert("missing", f"missing: fmap, {XSS}")
    with trio.fail_after(TIMEOUT):
        await open_page(browser, f"{server.url}/station/{STATION}")
        server.checklists[STATION]["alerts"].append(missing)  # the fake now knows its id
        server.send({"station": STATION, "type": "alert", "content": missing})
        await browser.wait_for("document.querySelectorAll('.alert').length === 2")
        assert await browser.evaluate(ALERTS) == [
            ["missing", "0", f"missing: fmap, {XSS}", ""],
            ["incomplete", "0", "t1_mprage series 2 incomplete: 120 of 192", ""],
        ]
        # Acknowledge the incomplete series: the button opens an inline reason field.
        incomplete = "document.querySelector(\"[data-kind='incomplete']\")"
        await browser.evaluate(f"{incomplete}.querySelector('.ack-open').click()")
        assert await browser.evaluate("document.activeElement.className") == "ack-reason"
        await press_enter(browser)  # an empty reason is not sent
        await browser.wait_for(f"{incomplete}.querySelector('.ack-error').textContent"
                            ".startsWith('Say why')")
        await browser.send("Input.insertText", text="participant asked to stop")
        await press_enter(browser)
        await browser.wait_for(f"{incomplete}.dataset.acked === '1'")
        assert server.requests == [("POST", f"/api/alerts/{key(2)}:incomplete/ack",
                                    {"reason": "participant asked to stop"})]
        note = (await texts(browser, "[data-kind='incomplete'] .ack-note"))[0]
        assert note.startswith("acknowledged ") and note.endswith(": participant asked to stop")
        assert await browser.evaluate(f"{incomplete}.querySelector('.ack-open').hidden") is True
        # Another console acknowledged the missing series: this page learns it from /ws.
        server.send({"station": STATION, "type": "ack",
                     "content": {"id": missing["id"], "reason": f"<i>{XSS}</i>", "at": AT}})
        await browser.wait_for("document.querySelector(\"[data-kind='missing']\").dataset.acked === '1'")
        assert (await texts(browser, "[data-kind='missing'] .ack-note"))[0].endswith(f": <i>{XSS}</i>")
        assert await browser.evaluate("document.querySelectorAll('main img, main i').length") == 0
        assert await browser.evaluate("document.querySelector('.ack-reason').maxLength") == 200
        assert browser.dialogs == []
        assert browser.errors == []


async def test_alerts_and_items_stay_bounded(server: ChecklistServer, browser: Page) -> None:
    with trio.fail_after(TIMEOUT):
        await open_page(browser, server.url)
        for n in range(1, 101):
            server.send({"station": STATION, "type": "alert",
                         "content": alert("incomplete", f"series {n} incomplete", n)})
        server.send({"station": STATION, "type": "checklist", "content": view(
            [item(f"extra{n}", None, "unexpected", 1, n) for n in range(200)], [])})
        await browser.wait_for("document.querySelector('.alert .text')?.textContent"
                               " === 'series 100 incomplete'")
        assert len(await texts(browser, ".alert")) == 30
        assert len(await texts(browser, "#checklist-items .item")) == 80
        assert browser.errors == []


async def test_pin_this_session_with_a_confirm_step(server: ChecklistServer, browser: Page) -> None:
    morning(server)
    with trio.fail_after(TIMEOUT):
        await open_page(browser, f"{server.url}/station/{STATION}")
        await browser.evaluate("document.getElementById('pin-start').click()")
        question = (await texts(browser, "#pin-question"))[0]
        assert question == "Make the 4 series of this session the expected protocol of BrainStudy?"
        assert server.requests == []  # nothing is sent before the confirmation
        await browser.evaluate("document.getElementById('pin-no').click()")
        assert await browser.evaluate("document.getElementById('pin-confirm').hidden") is True
        await browser.evaluate("document.getElementById('pin-start').click()")
        await browser.evaluate("document.getElementById('pin-yes').click()")
        await browser.wait_for("document.getElementById('pin-status').textContent.startsWith('Pinned')")
        assert server.requests == [("POST", "/api/projects/BrainStudy/protocol",
                                    {"from_session": SESSION})]
        # Once pinned (the service sends the new checklist), the pin can be undone.
        assert await browser.evaluate("document.getElementById('unpin').hidden") is True
        server.send({"station": STATION, "type": "checklist",
                     "content": {**server.checklists[STATION], "pinned": True}})
        await browser.wait_for("!document.getElementById('unpin').hidden")
        assert "pinned protocol" in (await texts(browser, "#checklist-meta"))[0]
        await browser.evaluate("document.getElementById('unpin').click()")
        await browser.wait_for("document.getElementById('pin-status').textContent"
                               ".includes('learnt from history again')")
        assert server.requests[-1] == ("DELETE", "/api/projects/BrainStudy/protocol", None)
        assert browser.errors == []


async def test_no_session_no_panel_then_resync(server: ChecklistServer, browser: Page) -> None:
    server.add(STATION, key(1), check_result(TEMPLATE, SeriesNumber=1))
    with trio.fail_after(TIMEOUT):
        await open_page(browser, f"{server.url}/station/{STATION}")
        assert await browser.evaluate("document.getElementById('checklist').hidden") is True
        assert await browser.evaluate("document.getElementById('alerts').hidden") is True
        # While the page was disconnected a session started: the re-sync shows its checklist.
        server.drop()
        morning(server)
        await browser.wait_for("document.body.dataset.syncs === '2'")
        assert await browser.evaluate("document.getElementById('checklist').hidden") is False
        assert len(await texts(browser, "#checklist-items .item")) == 5
        assert len(await texts(browser, ".alert")) == 1
        assert browser.errors == []


async def test_screenshot(server: ChecklistServer, browser: Page, tmp_path: Path) -> None:
    seed_realistic(server)
    names = ["AAHScout_32ch", "t1_mprage_sag", "ep2d_bold_rest", "ep2d_bold_task",
             "gre_field_mapping", "ep2d_bold_task"]
    server.checklists[STATION] = view(
        [item(names[0], 3, "done", 3, 1), item(names[1], 192, "done", 192, 2),
         item(names[2], 300, "incomplete", 186, 3), item(names[3], 300, "done", 300, 4),
         item(names[4], 2, "done", 2, 5), item(names[5], 300, "running", 34, 6),
         item("dwi_mb3_b1000", 102, "pending")],
        [alert("incomplete", "ep2d_bold_rest series 3 incomplete: 186 of 300", 3)])
    shot = tmp_path / "screenshot.png"
    with trio.fail_after(TIMEOUT):
        await open_page(browser, f"{server.url}/station/{STATION}")
        server.send({"station": STATION, "type": "ack", "content": {
            "id": f"{key(3)}:incomplete", "reason": "participant asked for a break", "at": AT}})
        server.send({"station": STATION, "type": "alert", "content": alert(
            "cross_series", "shims changed since fieldmap series 5", 6)})
        await browser.wait_for("document.querySelectorAll('.alert').length === 2")
        await browser.screenshot(shot)
    assert (await trio.Path(shot).read_bytes()).startswith(b"\x89PNG\r\n\x1a\n")
    if target := os.environ.get("MRQART_SCREENSHOT"):
        await trio.to_thread.run_sync(shutil.copyfile, shot, target)


# -- end to end with the real service ---------------------------------------------------

# The live protocol of these tests: single-echo series of the synthetic scanner, few files.
SMALL = {s["name"]: s for s in PROTOCOL if s["name"] in ("localizer", "t1_mprage", "rest", "dwi")}
USUAL = [{**SMALL["localizer"], "n_files": 2}, {**SMALL["t1_mprage"], "n_files": 8},
         {**SMALL["rest"], "n_files": 10}, {**SMALL["dwi"], "n_files": 3}]


def learn_history(archive: Path, db: Path) -> None:
    """Two archived sessions of the usual protocol, imported: the learnt protocol."""
    from mrqart.importer import import_paths
    from mrqart.store import Store

    for day in (20, 21):
        write_session(archive, when=dt.datetime(2026, 11, day, 9), protocol=USUAL)
    with Store(db) as store:
        import_paths([archive], store)


def short_session(root: Path) -> tuple[Path, str]:
    """A session that stops T1 at 5 of 8 files and skips dwi; returns its directory and
    StudyUID."""
    from mrqart.headers import read_header

    skipped = [USUAL[0], {**USUAL[1], "n_files": 5}, USUAL[2]]
    session = write_session(root, when=dt.datetime.now().replace(microsecond=0), protocol=skipped)
    header = read_header(next(session.glob("*.dcm")))
    assert isinstance(header, dict)
    return session, str(header["StudyUID"])


def next_session(root: Path) -> None:
    """The next participant's first series: it ends the short session."""
    write_session(root, protocol=USUAL[:1], subject="MRQART_test_sub02")


async def test_end_to_end_skipped_and_short_series(browser: Page, tmp_path: Path) -> None:
    from mrqart.live.service import Config, run_service
    from mrqart.store import Store

    root = tmp_path / "incoming"
    root.mkdir()
    db = tmp_path / "db.sqlite"
    alert_texts = "[...document.querySelectorAll('.alert .text')].map(e => e.textContent)"
    with trio.fail_after(TIMEOUT * 2):
        await trio.to_thread.run_sync(learn_history, tmp_path / "archive", db)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(run_service, Config(roots=(root,), db=db, port=0)))
            await open_page(browser, f"{url}/station/{DEFAULT_FIELDS['Station']}")
            session, study = await trio.to_thread.run_sync(short_session, root)
            # Sessions are minutes apart: the next one starts once this one is all in
            # (a burst written within milliseconds would reach the service partly held
            # back by the watcher's settle delay for files found by a directory scan).
            n_written = len(list(session.iterdir()))
            while sum(s["n_files"] for s in await station_series(url, DEFAULT_FIELDS["Station"])
                      if s["session"] == study) < n_written:
                await trio.sleep(0.05)  # polling the service, not ordering our own steps
            await trio.to_thread.run_sync(next_session, root)
            await browser.wait_for(f"{alert_texts}.some(t => t.includes('incomplete: 5 of 8'))")
            await browser.wait_for(f"{alert_texts}.some(t => t.startsWith('missing: ') "
                                "&& t.includes('dwi_mb3_b1000'))")
            assert not any("t1_mprage" in t for t in await browser.evaluate(
                f"{alert_texts}.filter(t => t.startsWith('missing'))"))
            # Acknowledge the short T1 through the browser.
            short = ("[...document.querySelectorAll('.alert')].find(e => "
                     "e.querySelector('.text').textContent.includes('incomplete: 5 of 8'))")
            await browser.evaluate(f"{short}.querySelector('.ack-open').click()")
            await browser.send("Input.insertText", text="participant asked to stop")
            await press_enter(browser)
            await browser.wait_for(f"{short}.dataset.acked === '1'")
            with Store(db) as store:
                acks = list(store.acks(study).values())
            assert [(a["kind"], a["reason"]) for a in acks] == [
                ("incomplete", "participant asked to stop")]
            assert browser.errors == []
            nursery.cancel_scope.cancel()
