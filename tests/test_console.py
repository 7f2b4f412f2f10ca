"""The console catches the operator's eye (issue 17), in real headless Chromium.

End to end with the real service and the synthetic scanner: a session with two wrong
series raises the role="alert" banner naming each series and its difference, marks the
checklist lines, counts "2 differ" and flashes the tab title; acknowledging from the
banner (with a reason) takes each alarm down and marks its line. Against the scripted
fake server: the wall view at 1920x1080 (one colour, type of at least 32 px, no controls
but acknowledge), the sound switch, sessions as sessions, and markup in every field the
new elements show.

``MRQART_SCREENSHOTS=static pytest tests/test_console.py -k screenshots`` refreshes the
README's screenshots (static/screenshot-alarm.png and static/screenshot-wall.png).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import test_page_checklist
import trio
from cdp import Page, open_chromium
from make_alarm_wav import TARGET, alarm_wav
from test_page import TEMPLATE, TIMEOUT, XSS, check_result, chromium, open_page, texts  # noqa: F401
from test_page_checklist import (
    SESSION,
    STATION,
    USUAL,
    ChecklistServer,
    alert,
    item,
    key,
    learn_history,
    press_enter,
    view,
)

from mrqart.synth import DEFAULT_FIELDS, write_session

pytestmark = pytest.mark.browser
# The fixtures of the checklist tests: a page in Chromium, the scripted server.
browser = test_page_checklist.browser
server = test_page_checklist.server

BANNER = ("[...document.querySelectorAll('#alarm .alert')].map(e => "
          "[e.dataset.kind, e.querySelector('.text').textContent])")
LINES = ("Object.fromEntries([...document.querySelectorAll('#checklist-items .item')].map(e => "
         "[e.querySelector('.name').textContent.split(' ')[0], "
         "[e.dataset.verdict, e.querySelector('.item-verdict').textContent]]))")


@pytest.fixture
async def wall_browser(request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    request.getfixturevalue("chromium")
    async with open_chromium(width=1920, height=1080) as p:
        yield p


async def acknowledge(page: Page, alert_js: str, reason: str) -> None:
    """Acknowledge the alert element ``alert_js`` as the operator does: the button, the
    reason typed, Enter."""
    await page.evaluate(f"{alert_js}.querySelector('.ack-open').click()")
    await page.wait_for("document.activeElement.className === 'ack-reason'")
    await page.send("Input.insertText", text=reason)
    await press_enter(page)


def in_banner(text: str) -> str:
    return ("[...document.querySelectorAll('#alarm .alert')].find(e => "
            f"e.querySelector('.text').textContent.startsWith({text!r}))")

# Records what the page's Content-Security-Policy refuses from now on.
WATCH_CSP = ("window.cspViolations = []; document.addEventListener('securitypolicyviolation', "
             "e => window.cspViolations.push(e.violatedDirective))")
# Every resource the page loaded that is not from its own origin.
OUTSIDE = ("performance.getEntriesByType('resource').map(e => e.name)"
           ".filter(u => !u.startsWith(location.origin + '/'))")

# -- end to end ---------------------------------------------------------------------------


async def test_two_wrong_series_alarm_until_acknowledged(browser: Page, tmp_path: Path) -> None:
    from mrqart.live.service import Config, run_service
    from mrqart.store import Store

    root = tmp_path / "incoming"
    root.mkdir()
    db = tmp_path / "db.sqlite"
    wrong = {"t1_mprage": {"FA": 12.0}, "rest": {"TR": 2000.0}}
    with trio.fail_after(TIMEOUT * 2):
        await trio.to_thread.run_sync(learn_history, tmp_path / "archive", db)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(run_service, Config(roots=(root,), db=db, port=0)))
            # Every page from now on records what its Content-Security-Policy refuses.
            await browser.send("Page.addScriptToEvaluateOnNewDocument", source=WATCH_CSP)
            await open_page(browser, f"{url}/station/{DEFAULT_FIELDS['Station']}")
            assert await browser.evaluate("document.getElementById('alarm').hidden") is True
            await trio.to_thread.run_sync(
                partial(write_session, root, protocol=USUAL, wrong=wrong))
            # Newest first; files found by a directory scan settle before they count, so
            # either series may reach the service first, and a series may look short
            # ("incomplete") until its late files come and withdraw that alert.
            both = json.dumps([["nonconform", "rest series 3: TR 2000, expected 1300"],
                               ["nonconform", "t1_mprage series 2: FA 12, expected 9"]],
                              separators=(",", ":"))
            await browser.wait_for(f"JSON.stringify({BANNER}.sort()) === {both!r}")
            assert await browser.evaluate("document.getElementById('alarm').getAttribute('role')") == "alert"
            await browser.wait_for(f"Object.values({LINES}).filter(v => v[0]).length === 4")
            assert await browser.evaluate(LINES) == {
                "localizer": ["conform", "conforms"],
                "t1_mprage": ["differs", "FA 12, expected 9"],
                "rest": ["differs", "TR 2000, expected 1300"],
                "dwi_mb3_b1000": ["conform", "conforms"]}
            assert await texts(browser, "#checklist-summary") == ["4 of 4 acquired, 2 differ"]
            # The tab title flashes the newest difference (every other second).
            newest = (await browser.evaluate(BANNER))[0][1].split()[0]
            title = {"rest": "✗ rest: TR", "t1_mprage": "✗ t1_mprage: FA"}
            await browser.wait_for(f"document.title === {title[newest]!r}", timeout=5)

            # Acknowledge rest from the banner: a reason is required, as elsewhere.
            rest = in_banner("rest")
            await browser.evaluate(f"{rest}.querySelector('.ack-open').click()")
            await press_enter(browser)
            await browser.wait_for(f"{rest}.querySelector('.ack-error').textContent.startsWith('Say why')")
            await browser.send("Input.insertText", text="TR changed for this participant")
            await press_enter(browser)
            await browser.wait_for(f"{BANNER}.length === 1")
            assert (await browser.evaluate(LINES))["rest"] == [
                "acknowledged", "acknowledged: TR changed for this participant"]
            assert await texts(browser, "#checklist-summary") == [
                "4 of 4 acquired, 2 differ (1 acknowledged)"]
            # Moved under the header, muted, with its reason.
            assert (await texts(browser, "#alert-list .ack-note"))[0].endswith(
                ": TR changed for this participant")
            await browser.wait_for("document.title === '✗ t1_mprage: FA'", timeout=5)

            await acknowledge(browser, in_banner("t1_mprage"), "flip angle on purpose")
            await browser.wait_for("document.getElementById('alarm').hidden")
            assert await browser.evaluate("document.body.dataset.alarm") == "0"
            assert not (await browser.evaluate("document.title")).startswith("✗ t1_mprage")
            assert await texts(browser, "#checklist-summary") == [
                "4 of 4 acquired, 2 differ (2 acknowledged)"]
            # The acknowledgements are kept with the series history.
            study = await browser.evaluate("document.querySelector('.session').dataset.session")
            with Store(db) as store:
                acks = await trio.to_thread.run_sync(store.acks, study)
            assert sorted((a["kind"], a["series"].rsplit(":", 1)[1], a["reason"])
                          for a in acks.values()) == [
                ("nonconform", "2", "flip angle on purpose"),
                ("nonconform", "3", "TR changed for this participant")]
            assert await browser.evaluate("window.cspViolations") == []
            # A second page opened now shows the same: no alarm, both lines acknowledged.
            await open_page(browser, f"{url}/station/{DEFAULT_FIELDS['Station']}")
            assert await browser.evaluate("document.getElementById('alarm').hidden") is True
            assert [v for v, _ in (await browser.evaluate(LINES)).values()] == [
                "conform", "acknowledged", "acknowledged", "conform"]
            # The wall, served by the service: still acquiring, nothing open: amber.
            await open_page(browser, f"{url}/station/{DEFAULT_FIELDS['Station']}?view=wall")
            assert await browser.evaluate("document.getElementById('wall-state').dataset.state") == "running"
            # Under the service's Content-Security-Policy nothing was refused, and nothing
            # came from anywhere but the service.
            assert await browser.evaluate("window.cspViolations") == []
            assert await browser.evaluate(OUTSIDE) == []
            # (The policy is on and the watch works: an inline style attribute is refused.)
            await browser.evaluate("document.body.setAttribute('style', 'color: red')")
            await browser.wait_for("window.cspViolations.length === 1")
            assert browser.errors == []
            nursery.cancel_scope.cancel()


# -- the wall ---------------------------------------------------------------------------------

TODAY = f"{dt.date.today():%Y%m%d}"
SEVEN = ["AAHScout_32ch", "t1_mprage_sag", "gre_field_mapping", "gre_field_mapping",
         "ep2d_bold_rest", "ep2d_bold_task", "dwi_mb3_b1000"]


def wall_session(server: ChecklistServer, *, tr: float = 2000.0) -> None:
    """Seven series acquired, rest (series 5) with TR ``tr``: a session still running."""
    for n, name in enumerate(SEVEN, 1):
        values = {"TR": tr} if name == "ep2d_bold_rest" else {}
        server.add(STATION, key(n), check_result({**TEMPLATE, "SequenceName": name},
                                                 SequenceName=name, SeriesNumber=n,
                                                 AcqDate=TODAY, AcqTime=f"0930{n:02d}", **values),
                   n_files=100)
    items = [item(name, 100, "done", 100, n) for n, name in enumerate(SEVEN, 1)]
    items[-1]["state"] = "running"
    alerts = [alert("nonconform", f"ep2d_bold_rest series 5: TR {tr:g}, expected 1300", 5)]
    server.checklists[STATION] = view(items, alerts if tr != 1300 else [])


# Every element inside these that shows text, with its computed font size in px.
SIZES = ("[...document.querySelectorAll('#wall-state *, #checklist *, #alarm .text')]"
         ".filter(e => e.offsetParent !== null && [...e.childNodes].some("
         "n => n.nodeType === 3 && n.textContent.trim()))"
         ".map(e => [e.className || e.id, parseFloat(getComputedStyle(e).fontSize)])")
VISIBLE_CONTROLS = ("[...document.querySelectorAll('button, select, input')]"
                    ".filter(e => e.offsetParent !== null).map(e => e.className || e.id)")


async def test_wall_view_one_colour_large_type(server: ChecklistServer, wall_browser: Page) -> None:
    page = wall_browser
    wall_session(server)
    state = "document.getElementById('wall-state').dataset.state"
    colour = "getComputedStyle(document.getElementById('wall-state')).backgroundColor"
    with trio.fail_after(TIMEOUT):
        await open_page(page, f"{server.url}/station/{STATION}?view=wall")
        assert await page.evaluate("document.documentElement.dataset.layout") == "wall"
        assert await page.evaluate(state) == "bad"
        assert await page.evaluate(colour) == "rgb(255, 93, 93)"
        assert await texts(page, "#wall-word") == ["✗ ep2d_bold_rest: TR"]
        sizes = await page.evaluate(SIZES)
        assert len(sizes) > 20, sizes  # the checklist's lines, the state and the alarm
        assert min(size for _, size in sizes) >= 32, sizes
        # The whole checklist is on the one screen, under the state and the alarm.
        bottom = "document.querySelector('#checklist-items .item:last-child').getBoundingClientRect().bottom"
        assert await page.evaluate(bottom) <= 1080
        assert await page.evaluate("document.querySelector('.series-column').offsetParent") is None
        assert await page.evaluate(VISIBLE_CONTROLS) == ["ack-open"]  # acknowledge only
        # Acknowledged: no difference left open, still running: amber.
        await acknowledge(page, "document.querySelector('#alarm .alert')", "rest at TR 2000 on purpose")
        await page.wait_for(f"{state} === 'running'")
        assert await page.evaluate(colour) == "rgb(255, 176, 32)"
        assert await page.evaluate("document.getElementById('alarm').hidden") is True
        # The session ends with nothing open: green.
        server.send({"station": STATION, "type": "checklist",
                     "content": {**server.checklists[STATION], "finished": True}})
        await page.wait_for(f"{state} === 'ok'")
        assert await page.evaluate(colour) == "rgb(47, 191, 113)"
        # A new session: the wall shows it only, running, whatever the old one had.
        server.send({"station": STATION, "type": "checklist", "content": {
            **view([item("AAHScout_32ch", 3, "running", 1, 1)], []), "session": "4.5.6"}})
        await page.wait_for(f"{state} === 'running'")
        assert await texts(page, "#checklist-items .name") == ["AAHScout_32ch  #1"]
        assert page.errors == []


# -- the console ---------------------------------------------------------------------------


async def test_sound_switch_is_remembered_and_rings_on_a_new_alarm(
    server: ChecklistServer, browser: Page
) -> None:
    wall_session(server, tr=1300)
    switch = "document.getElementById('sound-switch')"
    with trio.fail_after(TIMEOUT):
        await open_page(browser, f"{server.url}/station/{STATION}")
        assert await browser.evaluate(f"{switch}.checked") is False  # off by default
        # A real click (a user gesture: browsers play sound only after one).
        box = await browser.evaluate(f"(r => [r.x + r.width / 2, r.y + r.height / 2])"
                                     f"({switch}.getBoundingClientRect())")
        for kind in ("mousePressed", "mouseReleased"):
            await browser.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                               button="left", clickCount=1)
        await browser.wait_for(f"{switch}.checked")
        assert await browser.evaluate("localStorage.getItem('mrqart.sound')") == "on"
        short = alert("incomplete", "ep2d_bold_rest series 5 incomplete: 80 of 100", 5)
        server.send({"station": STATION, "type": "alert", "content": short})
        await browser.wait_for("document.body.dataset.announced === '1'")
        sound = "document.getElementById('alarm-sound')"
        await browser.wait_for(f"{sound}.played.length > 0 && {sound}.duration > 0.5")
        src = await browser.evaluate(f"{sound}.currentSrc")
        assert src == f"{server.url}/static/alarm.wav"
        # Remembered: a reload keeps the switch on; the alarm already open does not ring again.
        await open_page(browser, f"{server.url}/station/{STATION}")
        assert await browser.evaluate(f"{switch}.checked") is True
        assert await browser.evaluate("document.body.dataset.announced") is None
        assert browser.errors == []


async def test_series_grouped_by_session_current_first(server: ChecklistServer, browser: Page) -> None:
    # Yesterday's participant, then this morning's, on the same station.
    yesterday = dt.date.today() - dt.timedelta(days=1)
    for n in (1, 2):
        server.add(STATION, f"9.9.9:{n}", check_result(
            TEMPLATE, SeriesNumber=n, StudyUID="9.9.9", SubID="sub_yesterday",
            AcqDate=f"{yesterday:%Y%m%d}", AcqTime=f"1615{n:02d}", TR=2000.0 if n == 2 else 1300.0))
    wall_session(server)
    sessions = ("[...document.querySelectorAll('.session')].map(e => [e.dataset.session, "
                "e.dataset.current, e.open, e.querySelectorAll('.series').length, "
                "[...e.querySelector('.session-head').querySelectorAll('span')]"
                ".filter(s => !s.children.length && s.textContent).map(s => s.textContent)])")
    with trio.fail_after(TIMEOUT):
        await open_page(browser, server.url)
        got = await browser.evaluate(sessions)
        assert [s[:4] for s in got] == [[SESSION, "1", True, 7], ["9.9.9", "0", False, 2]]
        assert got[0][4] == ["—", "09:30", STATION, "7 series", "✓ 6", "✗ 1 differ"]
        year = "" if yesterday.year == dt.date.today().year else f" {yesterday.year}"
        assert got[1][4] == ["sub_yesterday", f"{yesterday.day} {yesterday:%b}{year} 16:15",
                             STATION, "2 series", "✓ 1", "✗ 1 differ"]
        # The operator opens yesterday's session: a live series does not close it again.
        await browser.evaluate("document.querySelectorAll('.session')[1].open = true")
        server.send({"station": STATION, "type": "new", "series": key(8),
                     "content": check_result(TEMPLATE, SeriesNumber=8, AcqDate=TODAY)})
        await browser.wait_for("document.querySelectorAll('.session')[0].querySelectorAll('.series').length === 8")
        assert await browser.evaluate("document.querySelectorAll('.session')[1].open") is True
        # Times in the card: "09:30", no seconds; a date only for another day.
        assert (await texts(browser, f"[data-key='{key(8)}'] .meta"))[0].startswith("#8  ·  14:25  ·  ")
        assert browser.errors == []


async def test_markup_in_every_new_field_stays_text(
    server: ChecklistServer, browser: Page, wall_browser: Page
) -> None:
    station = XSS
    content = check_result({**TEMPLATE, "Project": XSS, "SequenceName": XSS}, SeriesNumber=1,
                           SequenceName=XSS, SubID=XSS, Project=XSS, Comments=XSS, Station=station)
    server.add(station, key(1), content)
    differs = {**alert("nonconform", f"{XSS} series 1: Comments {XSS}, expected rest", 1)}
    server.checklists[station] = {**view([item(XSS, 10, "running", 1, 1)], [differs]), "project": XSS}
    for page, url in ((browser, server.url), (wall_browser, f"{server.url}/?view=wall")):
        with trio.fail_after(TIMEOUT):
            await open_page(page, url)
            await page.wait_for("!document.getElementById('alarm').hidden")
            assert await texts(page, "#alarm .text") == [differs["text"]]
            assert await texts(page, "#checklist-items .item-verdict") == [f"Comments {XSS}, expected rest"]
            if page is browser:
                assert await texts(page, ".session-head .subject") == [XSS]
                assert await texts(page, ".session-head .station") == [XSS]
                await page.wait_for(f"document.title === {('✗ ' + XSS + ': Comments')!r}", timeout=5)
            else:
                assert await texts(page, "#wall-word") == [f"✗ {XSS}: Comments"]
                assert await texts(page, "#wall-where") == [f"{XSS}  ·  {XSS}"]
            await acknowledge(page, "document.querySelector('#alarm .alert')", f"<b>{XSS}</b>")
            await page.wait_for("document.getElementById('alarm').hidden")
            assert (await texts(page, "#checklist-items .item-verdict")) == [f"acknowledged: <b>{XSS}</b>"]
            # No element was made from the data: no <img>, no onerror, no <b> but the page's own.
            made = "img, [onerror], b:not(#n-unreadable, .count)"
            assert await page.evaluate(f"document.querySelectorAll({made!r}).length") == 0
            assert page.dialogs == []
            assert page.errors == []
        # The next page starts from an unacknowledged alert again.
        server.checklists[station]["alerts"][0]["ack"] = None


async def test_screenshots(server: ChecklistServer, browser: Page, wall_browser: Page,
                           tmp_path: Path) -> None:
    wall_session(server)
    server.checklists[STATION]["alerts"].append(
        {**alert("incomplete", "t1_mprage_sag series 2 incomplete: 120 of 192", 2),
         "ack": {"reason": "participant moved, repeated later", "at": "2026-11-30T09:36:00+00:00"}})
    shots = {"screenshot-alarm.png": browser, "screenshot-wall.png": wall_browser}
    with trio.fail_after(TIMEOUT):
        await open_page(browser, f"{server.url}/station/{STATION}")
        await open_page(wall_browser, f"{server.url}/station/{STATION}?view=wall")
        for name, page in shots.items():
            await page.screenshot(tmp_path / name)
    for name in shots:
        data = await trio.Path(tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        if target := os.environ.get("MRQART_SCREENSHOTS"):
            await trio.to_thread.run_sync(shutil.copyfile, tmp_path / name, Path(target) / name)


# -- the sound file -------------------------------------------------------------------------------


async def test_alarm_sound_is_the_generated_file_and_is_served() -> None:
    from mrqart.live.hub import Hub
    from mrqart.live.session import SessionState
    from mrqart.live.web import create_app

    committed = await trio.Path(TARGET).read_bytes()
    assert committed == alarm_wav(), "static/alarm.wav: run python tests/make_alarm_wav.py"
    assert len(committed) < 20_000
    client = create_app(SessionState(), Hub()).test_client()
    response = await client.get("/static/alarm.wav")
    assert response.status_code == 200
    assert response.mimetype in ("audio/wav", "audio/x-wav")
    assert await response.get_data() == committed




async def test_desktop_notification_once_allowed(server: ChecklistServer, browser: Page) -> None:
    wall_session(server, tr=1300)
    with trio.fail_after(TIMEOUT):
        await open_page(browser, f"{server.url}/station/{STATION}")
        # Not asked yet: the header offers the button (a browser asks on a click only).
        assert await browser.evaluate("document.getElementById('notify-enable').hidden") is False
        await browser.send("Browser.grantPermissions", permissions=["notifications"],
                           origin=server.url)
        assert await browser.evaluate("Notification.permission") == "granted"
        server.send({"station": STATION, "type": "alert", "content": alert(
            "incomplete", "ep2d_bold_rest series 5 incomplete: 80 of 100", 5)})
        await browser.wait_for("document.body.dataset.notified === '1'")
        assert browser.errors == []


async def test_accepted_series_leaves_the_alarm(server: ChecklistServer, browser: Page) -> None:
    wall_session(server)
    rest = key(5)
    order = "[...document.querySelectorAll('.series')].map(e => e.dataset.key).join()"
    with trio.fail_after(TIMEOUT):
        await open_page(browser, f"{server.url}/station/{STATION}")
        await browser.wait_for("!document.getElementById('alarm').hidden")
        before = await browser.evaluate(order)
        # Accepted as intended on another console: the service sends the new verdict.
        content = dict(server.series[STATION][2]["content"])  # series 5 (newest first)
        assert content["input"]["SeriesNumber"] == 5
        accepted = {**content, "conforms": True, "status": "accepted", "errors": {},
                    "note": "accepted: new protocol version",
                    "accepted": {"reason": "new protocol version", "by": "jo", "at": "x",
                                 "changes": content["errors"]}}
        server.send({"station": STATION, "type": "new", "series": rest, "content": accepted})
        await browser.wait_for("document.getElementById('alarm').hidden")
        assert (await browser.evaluate(LINES))["ep2d_bold_rest"] == [
            "accepted", "accepted: new protocol version"]
        assert await texts(browser, "#checklist-summary") == ["7 of 7 acquired"]
        assert await browser.evaluate(order) == before  # it keeps its place
        assert await texts(browser, f"[data-key='{rest}'] .verdict") == ["✓ ACCEPTED"]
        assert await texts(browser, "#alert-list .ack-note") == ["accepted as intended"]
        assert await browser.evaluate("document.querySelector('#alert-list .ack-open').hidden") is True
        assert browser.errors == []


async def test_a_field_the_scanner_does_not_record_is_not_red(
    server: ChecklistServer, browser: Page
) -> None:
    # headers' not_recorded: this scanner never writes TA; the check does not flag it.
    content = check_result(TEMPLATE, SeriesNumber=1, TA="null", AcqDate=TODAY)
    content["errors"].pop("TA")
    content.update(conforms=True, status="conform")
    content["input"]["not_recorded"] = ["TA"]
    server.add(STATION, key(1), content)
    row = ("[...document.querySelectorAll('.params tr')].filter(r => r.cells[0].textContent === 'TA')"
           ".map(r => [r.className, ...[...r.cells].map(c => c.textContent)])")
    with trio.fail_after(TIMEOUT):
        await open_page(browser, f"{server.url}/station/{STATION}")
        assert await browser.evaluate(row) == [
            ["not-recorded", "TA", "not recorded by this scanner", "TA 06:32"]]
        assert await texts(browser, ".series .problems li") == []
        assert browser.errors == []
