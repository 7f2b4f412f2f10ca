"""/reports and /projects/<project> on the real service, in headless Chromium.

The store holds the month of tests/reportkit. The plots are matplotlib SVG inlined in
the page; each point links to its day's report, so the red points' links name the days
of the sessions that differed.

Screenshots for the README: ``MRQART_SCREENSHOT_DIR=docs python -m pytest
tests/test_report_pages.py``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
from cdp import Page, open_chromium
from reportkit import KIDS, PROJECT, build_month
from test_page import chromium  # noqa: F401  (the fixture: skip or fail without Chromium)

from mrqart.config import Config
from mrqart.live.service import run_service
from mrqart.report.render import project_url
from mrqart.store import Store

pytestmark = pytest.mark.browser
TIMEOUT = 60
RED = "rgb(214, 39, 40)"  # plots.RED
SHOTS = os.environ.get("MRQART_SCREENSHOT_DIR")


@pytest.fixture
async def service(tmp_path: Path, nursery: trio.Nursery) -> str:
    db = tmp_path / "mrqart.sqlite"
    with Store(db) as store:
        build_month(store)
    root = tmp_path / "incoming"
    root.mkdir()
    return await nursery.start(partial(run_service, Config(roots=(root,), db=db, port=0)))


@pytest.fixture
async def page(chromium: None) -> AsyncIterator[Page]:  # noqa: F811
    async with open_chromium(width=1100, height=900) as p:
        yield p


# The days linked from the points of one kind in the SVG groups matplotlib wrote.
LINKED_DAYS = """(kind, param) => [...document.querySelectorAll(`g[id="${kind}-${param}"] a`)]
    .map(a => (a.getAttribute('xlink:href') || a.getAttribute('href')).split('day=')[1])"""
# Every resource the page loaded (favicon.ico perhaps, nothing else): its URL.
RESOURCES = "performance.getEntriesByType('resource').map(e => e.name)"
# Every address the document names (links, and the SVG's own references).
ADDRESSES = """[...document.querySelectorAll('[src], [href], a')].map(e =>
    e.getAttribute('src') || e.getAttribute('href') || e.getAttribute('xlink:href') || '')"""


async def only_from(page: Page, service: str) -> None:
    """Nothing the page loaded came from anywhere but the service, and the document names
    no other origin (its links are paths on the service, or ids inside the SVG)."""
    loaded = await page.evaluate(RESOURCES)
    assert all(url.startswith(service + "/") for url in loaded), loaded
    addresses = await page.evaluate(ADDRESSES)
    assert addresses and all(a.startswith(("/", "#")) for a in addresses), addresses


async def call(page: Page, fn: str, *args: str) -> object:
    return await page.evaluate(f"({fn})(...{json.dumps(args)})")


async def test_reports_page(service: str, page: Page) -> None:
    with trio.fail_after(TIMEOUT):
        await page.navigate(f"{service}/reports?day=2026-11-30", timeout=30)
        assert await page.evaluate("document.title") == (
            "mrqart 2026-11-30: 2 of 8 series differ, 1 incomplete, 1 missing, 1 without template")
        rows = await page.evaluate(
            "[...document.querySelectorAll('tr.differ')].map(r => r.textContent)")
        assert rows == ["3rest09:03300TR: expected 1300, got 2000 (+700), 4 scan days in a row",
                        "2T1w11:02192FA: expected 9, got 12 (+3)"]
        # plots of the series that differed, red where they differed, in red
        assert await call(page, LINKED_DAYS, "differ", "TR") == [
            "2026-11-25", "2026-11-26", "2026-11-27", "2026-11-30"]
        assert await call(page, LINKED_DAYS, "differ", "FA") == ["2026-11-30"]
        assert "2026-11-30" in await call(page, LINKED_DAYS, "conform", "TR")
        fills = await page.evaluate(
            "[...document.querySelectorAll('g[id^=\"differ-\"] use')]"
            ".map(u => getComputedStyle(u).fill)")
        assert len(fills) == 5 and set(fills) == {RED}
        # the project link names the project, slash and all
        href = await page.evaluate(
            f"[...document.querySelectorAll('h2 a')].find(a => a.textContent === {json.dumps(KIDS)})"
            ".getAttribute('href')")
        assert href == project_url(KIDS) == "/projects/Kids%2FStudy%202"
        await only_from(page, service)  # CSS and SVG inline
        assert page.errors == []
        if SHOTS:
            await page.screenshot(Path(SHOTS) / "report.png")


async def test_project_page(service: str, page: Page) -> None:
    with trio.fail_after(TIMEOUT):
        await page.navigate(f"{service}{project_url(PROJECT)}?since=2026-11-01", timeout=30)
        assert await page.evaluate("document.querySelector('h1').textContent") == PROJECT
        assert await page.evaluate(
            "[...document.querySelectorAll('h2')].map(h => h.textContent)") == [
            "T1w", "rest", "dwi", "fmap_new"]
        assert await call(page, LINKED_DAYS, "differ", "TR") == [
            "2026-11-25", "2026-11-26", "2026-11-27", "2026-11-30"]
        conforming = await call(page, LINKED_DAYS, "conform", "TR")
        assert len(conforming) == 18  # 22 rest series, 4 differed
        # the accepted dwi series is ringed, and no dwi point is red
        assert await page.evaluate("document.querySelectorAll('g[id=\"accepted-TE\"] path, "
                                   "g[id=\"accepted-TE\"] use').length") == 1
        assert await call(page, LINKED_DAYS, "differ", "TE") == []
        assert await page.evaluate("document.querySelectorAll('g#weeks path').length") >= 5
        await only_from(page, service)
        assert page.errors == []
        if SHOTS:
            await page.screenshot(Path(SHOTS) / "project.png")
        await page.navigate(f"{service}{project_url(KIDS)}", timeout=30)
        assert await page.evaluate("document.querySelector('h1').textContent") == KIDS


def status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"]


async def test_bad_days_are_refused(service: str) -> None:
    with trio.fail_after(TIMEOUT):
        for path, expected in (
            ("/reports?day=2026-11-30", 200), ("/reports?day=30.11.2026", 400),
            ("/reports?since=2999-01-01", 400), (f"{project_url(PROJECT)}?since=nope", 400),
            ("/projects/nobody", 200),
        ):
            code, kind = await trio.to_thread.run_sync(status, service + path)
            assert code == expected, path
            if code == 200:
                assert kind == "text/html; charset=utf-8"
