"""HTTP and WebSocket routes of the console (Quart-Trio). Routes only: they read the
session state's JSON views and relay hub messages; they decide nothing.

    GET /                        the console page
    GET /station/<station>       the page, opened on one station
    GET /static/<path>           page assets (Quart's static route refuses traversal)
    GET /state                   {station: {"station", "content": CheckResult}}
    GET /api/stations            [{"station", "n_series", "last_seen"}]
    GET /api/stations/<station>/series   that station's series, newest first
    GET /healthz                 pipeline statistics
    WS  /ws                      the hub's messages, one JSON text each
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from quart import abort, jsonify, websocket
from quart_trio import QuartTrio

from mrqart.hub import Hub
from mrqart.session import SessionState

#: The repository's page; a deployment may point MRQART_STATIC elsewhere.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
#: Station names are the scanner's (0008,1010) StationName: short, printable.
STATION_ID = re.compile(r"^[\w.\- ]{1,64}$")
#: Browsers send nothing we need; bigger frames than this are refused by hypercorn.
MAX_WS_MESSAGE = 64 * 1024


def create_app(
    state: SessionState,
    hub: Hub,
    *,
    static_dir: Path = STATIC_DIR,
    health: Callable[[], dict[str, Any]] = dict,
) -> QuartTrio:
    """The console app over a session state and a hub (both owned by the pipeline)."""
    app = QuartTrio(__name__, static_folder=str(static_dir), static_url_path="/static")
    # "/static//etc/passwd" answers 404, not a 308 redirect that merges the slashes.
    app.url_map.merge_slashes = False

    def station_or_404(station: str) -> str:
        if not STATION_ID.match(station):
            abort(400, "malformed station id")
        return station

    @app.get("/")
    async def index() -> Any:
        return await app.send_static_file("index.html")

    @app.get("/station/<station>")
    async def station_page(station: str) -> Any:
        station_or_404(station)
        return await app.send_static_file("index.html")

    @app.get("/state")
    async def state_route() -> Any:
        return jsonify(state.latest())

    @app.get("/api/stations")
    async def stations() -> Any:
        return jsonify(state.stations())

    @app.get("/api/stations/<station>/series")
    async def series(station: str) -> Any:
        found = state.series_of(station_or_404(station))
        if found is None:
            abort(404, "unknown station")
        return jsonify(found)

    @app.get("/healthz")
    async def healthz() -> Any:
        return jsonify(health())

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.accept()
        async with hub.subscribe() as messages, trio.open_nursery() as nursery:
            # Drain what the browser sends (nothing is expected) so its frames never pile up.
            nursery.start_soon(_discard_incoming)
            async for text in messages:
                await websocket.send(text)
            nursery.cancel_scope.cancel()
        # The hub ended this subscription (shutdown, or this browser fell behind).
        await websocket.close(1000)

    return app


async def _discard_incoming() -> None:
    while True:
        await websocket.receive()
