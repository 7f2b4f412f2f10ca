"""Access control in real headless Chromium against the real service: a page on another
origin (127.0.0.2) can neither read /ws nor acknowledge, while the console's own page
can; logging in, out, and a session that runs out, in the real page."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from cdp import Page, open_chromium
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart_trio import QuartTrio
from test_page import TIMEOUT, chromium  # noqa: F401 (chromium: skips without Chromium)
from trio_websocket import open_websocket_url

from mrqart.store import Store
from tests.test_access import PASSWORDS, SUBJECT, raise_alert, serving, write_users, ws_url

pytestmark = pytest.mark.browser

#: The attacker's script, run by a page on 127.0.0.2: every way a page in the console's
#: browser could read the live messages or press Acknowledge. Results land in window.got.
ATTACK = """
async function attack(service, alertId) {
  const got = {};
  const ack = `${service}/api/alerts/${encodeURIComponent(alertId)}/ack`;
  const body = JSON.stringify({ reason: "pressed by another page" });
  // cross-site WebSocket hijacking
  got.ws = await new Promise((resolve) => {
    const ws = new WebSocket(service.replace("http", "ws") + "/ws");
    const seen = [];
    ws.onmessage = (e) => seen.push(e.data);
    ws.onopen = () => setTimeout(() => resolve({ opened: true, seen }), 300);
    ws.onclose = (e) => resolve({ opened: false, code: e.code, seen });
  });
  // a no-cors POST with a text/plain body: the browser sends it, we cannot read the answer
  got.noCors = await fetch(ack, { method: "POST", mode: "no-cors", body,
    headers: { "Content-Type": "text/plain" } }).then((r) => r.type, (e) => `error ${e}`);
  // a JSON POST: needs a CORS preflight, which is never granted
  got.cors = await fetch(ack, { method: "POST", body, headers: { "Content-Type": "application/json" } })
    .then((r) => r.status, () => "blocked");
  // reading the API
  got.read = await fetch(`${service}/state`).then((r) => r.text(), () => "blocked");
  // a form POST into a hidden frame
  got.form = await new Promise((resolve) => {
    const frame = document.createElement("iframe");
    frame.name = "sink";
    document.body.append(frame);
    const form = document.createElement("form");
    Object.assign(form, { method: "POST", action: ack, target: "sink", enctype: "text/plain" });
    const field = document.createElement("input");
    Object.assign(field, { name: '{"reason":"form', value: '"}' });
    form.append(field);
    document.body.append(form);
    frame.onload = () => resolve("submitted");
    form.submit();
  });
  return got;
}
"""


def attacker_app() -> QuartTrio:
    app = QuartTrio(__name__)

    @app.get("/")
    async def page() -> tuple[str, int, dict[str, str]]:
        return (f"<!doctype html><title>elsewhere</title><script>{ATTACK}</script>", 200,
                {"Content-Type": "text/html"})

    return app


async def serve_on(nursery: trio.Nursery, app: QuartTrio, host: str) -> str:
    config = HypercornConfig()
    config.bind = [f"{host}:0"]
    config.accesslog = config.errorlog = None
    return (await nursery.start(partial(serve, app, config)))[0]


async def test_a_page_on_another_origin_can_neither_read_nor_acknowledge(
    chromium: None, tmp_path: Path, nursery: trio.Nursery,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mrqart.audit")
    with trio.fail_after(TIMEOUT + 30):
        async with serving(tmp_path) as running:  # the local console: no accounts
            async with open_websocket_url(ws_url(running.url)) as ws:
                alert = await raise_alert(running, ws)
            evil = await serve_on(nursery, attacker_app(), "127.0.0.2")
            async with open_chromium() as page:
                await page.navigate(evil + "/")
                assert urlsplit(await page.evaluate("location.href")).hostname == "127.0.0.2"
                got = await page.evaluate(
                    f"attack({json.dumps(running.url)}, {json.dumps(alert)})")
                assert got["ws"]["opened"] is False and got["ws"]["seen"] == []
                # the no-cors POST and the form were sent (Chromium hides the answers:
                # Cross-Origin-Resource-Policy) and refused; the JSON POST never left
                assert got["cors"] == "blocked" and got["read"] == "blocked"
                assert got["form"] == "submitted"
                refused = [r.getMessage() for r in caplog.records if r.name == "mrqart.audit"]
                assert refused == [f"nobody POST '/api/alerts/{alert}/ack' -> 403"] * 2, got
                store = Store(running.db)
                assert store.acks("1.2.live.0") == {}
                store.close()

                # the control: the console's own page does the same and it counts
                await page.navigate(running.url + "/")
                await page.wait_for("document.body?.dataset.ready === '1'")
                await page.wait_for(f"!!document.querySelector('li.alert[data-id=\"{alert}\"]')")
                status = await page.evaluate(
                    f"fetch('/api/alerts/{alert}/ack', {{method: 'POST', "
                    "headers: {'Content-Type': 'application/json'}, "
                    "body: JSON.stringify({reason: 'participant asked to stop'})}).then(r => r.status)")
                assert status == 200
                await page.wait_for(f"document.querySelector('li.alert[data-id=\"{alert}\"]')"
                                    ".dataset.acked === '1'")
                assert page.errors == []
    store = Store(running.db)
    assert [a["reason"] for a in store.acks("1.2.live.0").values()] == ["participant asked to stop"]
    store.close()


async def log_in(page: Page, url: str, name: str, password: str) -> None:
    """From anywhere on the service: the login page, the form, back to the console."""
    await page.navigate(url + "/")
    await page.wait_for("location.pathname === '/login' && document.body?.dataset.state === 'ready'")
    await page.evaluate(
        f"document.getElementById('login-name').value = {json.dumps(name)};"
        f"document.getElementById('login-password').value = {json.dumps(password)};"
        "document.getElementById('login-form').requestSubmit()")


async def test_login_logout_and_an_expired_session_in_the_real_page(
    chromium: None, tmp_path: Path  # noqa: F811
) -> None:
    users = write_users(tmp_path)
    with trio.fail_after(TIMEOUT + 30):
        async with serving(tmp_path, users=users, session_minutes=4 / 60) as running, \
                open_chromium() as page:
            await log_in(page, running.url, "otto", "not the password")
            await page.wait_for("document.body?.dataset.state === 'failed'")
            assert await page.evaluate(
                "document.getElementById('login-error').textContent") == "Wrong name or password."

            await page.evaluate(
                f"document.getElementById('login-password').value = {json.dumps(PASSWORDS['otto'])};"
                "document.getElementById('login-form').requestSubmit()")
            await page.wait_for("location.pathname === '/' && document.body?.dataset.ready === '1'")
            assert await page.evaluate("document.getElementById('user-name').textContent") == (
                "otto · operator")
            assert await page.evaluate("document.getElementById('auth-mode').hidden") is True
            assert await page.evaluate("document.getElementById('logout').hidden") is False
            # the session cookie is not visible to scripts
            assert "mrqart_session" not in await page.evaluate("document.cookie")
            running.write(0, 1, 1, "fmap")
            await page.wait_for("!!document.querySelector('.series')")

            await page.evaluate("document.getElementById('logout').click()")
            await page.wait_for("location.pathname === '/login'")
            await page.navigate(running.url + "/station/AWP167046")
            assert await page.evaluate("location.pathname + location.search") == (
                "/login?next=/station/AWP167046")

            # a viewer's session runs out while the page is open: back to the login page
            await log_in(page, running.url, "vera", PASSWORDS["vera"])
            await page.wait_for("location.pathname === '/' && document.body?.dataset.ready === '1'")
            assert await page.evaluate("document.body?.dataset.role") == "viewer"
            assert await page.evaluate(
                "getComputedStyle(document.querySelector('.pin')).display") == "none"
            assert SUBJECT not in await page.evaluate("document.body.innerText")
            await page.wait_for("location.pathname === '/login'", timeout=15)
            assert page.errors == []


async def test_no_auth_says_so_in_the_header(chromium: None, tmp_path: Path) -> None:  # noqa: F811
    with trio.fail_after(TIMEOUT):
        async with serving(tmp_path, no_auth=True) as running, open_chromium() as page:
            await page.navigate(running.url + "/")
            await page.wait_for("document.body?.dataset.ready === '1'")
            assert await page.evaluate(
                "[document.getElementById('auth-mode').hidden,"
                " document.getElementById('auth-mode').textContent]") == [
                False, "no authentication"]
            assert await page.evaluate("document.body?.dataset.auth") == "none"
