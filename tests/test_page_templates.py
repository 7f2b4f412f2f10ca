"""The page's "Accept as intended" and template history (static/js/accept.js), in
headless Chromium against the real service."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import trio
from cdp import Page

from mrqart.store import Store
from tests.test_page import TIMEOUT, XSS, chromium, learn_template, open_page, page, scan, texts

__all__ = ["chromium", "page"]  # the fixtures, imported for pytest

CARD = "[...document.querySelectorAll('.series')].find(e => e.dataset.key.endsWith(':2'))"


async def test_accept_as_intended_and_the_history(page: Page, tmp_path: Path) -> None:
    from mrqart.live.service import Config, run_service

    root = tmp_path / "incoming"
    root.mkdir()
    db = tmp_path / "db.sqlite"
    reason = f"new protocol {XSS}"
    with trio.fail_after(TIMEOUT):
        await trio.to_thread.run_sync(learn_template, tmp_path / "archive", db)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(run_service, Config(roots=(root,), db=db, port=0)))
            await open_page(page, f"{url}/station/AWP167046")
            await trio.to_thread.run_sync(scan, root / "20261124_MRQART_test")
            await page.wait_for(f"{CARD}?.dataset.status === 'nonconform'")
            # a green card has a history but nothing to accept
            assert await page.evaluate(
                "document.querySelector('.series[data-status=conform] .accept-open')") is None
            await page.evaluate(f"{CARD}.querySelector('.accept-open').click()")
            # the reason is required; at this console without accounts, so is a name
            await page.evaluate(f"{CARD}.querySelector('.accept-form').requestSubmit()")
            assert "Say why" in await page.evaluate(f"{CARD}.querySelector('.accept-error').textContent")
            await page.evaluate(f"""(() => {{
                const card = {CARD};
                card.querySelector('.accept-reason').value = {json.dumps(reason)};
                card.querySelector('.accept-form').requestSubmit();
            }})()""")
            assert "Say who" in await page.evaluate(f"{CARD}.querySelector('.accept-error').textContent")
            await page.evaluate(f"""(() => {{
                const card = {CARD};
                card.querySelector('.accept-by').value = 'ana';
                card.querySelector('.accept-form').requestSubmit();
            }})()""")
            # the service sends the series again: the card says it was accepted, and why
            await page.wait_for(f"{CARD}?.dataset.status === 'accepted'")
            assert await page.evaluate(f"{CARD}.querySelector('.note').textContent") == (
                f"accepted: {reason}")
            assert await page.evaluate(f"{CARD}.querySelector('.accept-open')") is None
            await page.evaluate(f"{CARD}.querySelector('.history-open').click()")
            await page.wait_for(f"{CARD}.querySelectorAll('.history li').length === 2")
            history = await texts(page, ".series .history li")
            assert "learnt by mrqart: first trusted series" in history[0]
            assert f"accepted by ana: {reason} (series 2)" in history[1]
            assert "TR 2000" in history[1]
            assert await page.evaluate("document.querySelectorAll('main img').length") == 0
            assert page.dialogs == [] and page.errors == []
            nursery.cancel_scope.cancel()
    with Store(db) as store:
        assert store.template("MRQART_test", "rest")["TR"] == 2000.0  # type: ignore[index]
