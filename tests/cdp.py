"""A small Chrome DevTools Protocol client for driving headless Chromium from trio tests.

``open_chromium()`` starts Debian's ``/usr/bin/chromium`` in its own process group with
a throwaway profile, connects to its one page target over trio-websocket and yields a
:class:`Page`. On exit the whole process group is killed, whatever happened.

Protocol: we send ``{"id", "method", "params"}``; replies carry the same ``id``,
everything else is an event (``{"method", "params"}``). One reader task routes replies
to the waiting caller and records the events tests care about: uncaught exceptions and
``console.error`` calls (``Page.errors``) and JavaScript dialogs (``Page.dialogs``;
they are dismissed at once so an ``alert()`` never hangs the page).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server", "--remote-debugging-port=0",
)
# Screenshots arrive base64-encoded in one message; the library default (1 MiB) is too small.
MAX_MESSAGE = 64 * 1024 * 1024
# Chromium polls are of an external process, not ordering of our own tasks.
POLL_S = 0.05


class CDPError(Exception):
    """Chromium answered a command with an error, or the page's JavaScript threw."""


class Page:
    """One page target: commands, JavaScript evaluation and the events tests inspect."""

    def __init__(self, ws: WebSocketConnection, nursery: trio.Nursery) -> None:
        self._ws = ws
        self._nursery = nursery
        self._next_id = 0
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.dialogs: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one CDP command and return its ``result``; raises CDPError on an error reply."""
        self._next_id += 1
        msg_id = self._next_id
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[msg_id] = send
        try:
            await self._ws.send_message(json.dumps({"id": msg_id, "method": method, "params": params}))
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise CDPError(f"{method}: the connection to Chromium closed") from None
        finally:
            del self._waiting[msg_id]
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def _read(self) -> None:
        """Route replies to their callers and record events, until the connection closes."""
        try:
            while True:
                msg = json.loads(await self._ws.get_message())
                if "id" in msg:
                    if (waiter := self._waiting.get(msg["id"])) is not None:
                        waiter.send_nowait(msg)
                else:
                    self._on_event(msg["method"], msg.get("params", {}))
        except ConnectionClosed:
            # Chromium went away: wake every caller still waiting for a reply.
            for waiter in self._waiting.values():
                waiter.close()

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(params)
            self._nursery.start_soon(self._dismiss)

    async def _dismiss(self) -> None:
        # A dialog blocks the page's JavaScript until answered: answer at once.
        await self.send("Page.handleJavaScriptDialog", accept=False)

    async def navigate(self, url: str, *, timeout: float = 10) -> None:
        """Load ``url`` and return once the document has finished loading."""
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CDPError(f"navigate {url}: {result['errorText']}")
        await self.wait_for("document.readyState === 'complete'", timeout=timeout)

    async def evaluate(self, js: str) -> Any:
        """The JSON value of the expression ``js`` (promises awaited); CDPError if it throws."""
        result = await self.send(
            "Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description") or details["text"])
        return result["result"].get("value")

    async def wait_for(self, js: str, *, timeout: float = 10) -> Any:
        """Poll ``js`` until it is truthy and return its value; trio.TooSlowError names it."""
        with trio.move_on_after(timeout):
            while not (value := await self.evaluate(js)):
                await trio.sleep(POLL_S)
            return value
        raise trio.TooSlowError(f"page condition still false after {timeout} s: {js}")

    async def screenshot(self, path: str | os.PathLike[str]) -> None:
        """Write a PNG of the viewport to ``path``."""
        result = await self.send("Page.captureScreenshot", format="png")
        await trio.Path(path).write_bytes(base64.b64decode(result["data"]))


def _page_ws_url(port: int) -> str:
    """The webSocketDebuggerUrl of the browser's first page target (blocking HTTP)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
        targets = json.load(r)
    return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")


async def _devtools_port(profile: Path, proc: trio.Process) -> int:
    """The port Chromium chose, from the DevToolsActivePort file it writes when listening."""
    port_file = trio.Path(profile / "DevToolsActivePort")
    while True:
        if proc.returncode is not None:
            raise CDPError(f"{CHROMIUM} exited with status {proc.returncode} before listening")
        # The file is written in one go but may be caught half-written: wait for its newline.
        if await port_file.exists() and "\n" in (text := await port_file.read_text()):
            return int(text.splitlines()[0])
        await trio.sleep(POLL_S)


@asynccontextmanager
async def open_chromium(
    *, width: int = 1280, height: int = 800, start_timeout: float = 20
) -> AsyncIterator[Page]:
    """Run headless Chromium with a ``width`` x ``height`` viewport; yield its page.

    Chromium and all its helper processes are killed on exit (they share the process
    group we give it), and the temporary profile is removed.
    """
    with tempfile.TemporaryDirectory(prefix="mrqart-chromium-") as profile:
        proc = await trio.lowlevel.open_process(
            [CHROMIUM, *FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            with trio.fail_after(start_timeout):
                port = await _devtools_port(Path(profile), proc)
                url = await trio.to_thread.run_sync(_page_ws_url, port)
            # The reader ends by itself when the WebSocket closes, before the nursery exits.
            async with (
                trio.open_nursery() as nursery,
                open_websocket_url(url, max_message_size=MAX_MESSAGE) as ws,
            ):
                page = Page(ws, nursery)
                nursery.start_soon(page._read)
                for domain in ("Page", "Runtime"):
                    await page.send(f"{domain}.enable")
                await page.send(
                    "Emulation.setDeviceMetricsOverride",
                    width=width, height=height, deviceScaleFactor=1, mobile=False,
                )
                yield page
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            with trio.CancelScope(shield=True):
                await proc.wait()
