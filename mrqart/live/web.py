"""HTTP and WebSocket routes of the console (Quart-Trio). Routes only: they read the
session state's JSON views and relay hub messages; they decide nothing.

    GET /                        the console page
    GET /station/<station>       the page, opened on one station
    GET /static/<path>           page assets (Quart's static route refuses traversal)
    GET /state                   {station: {"station", "content": CheckResult}}
    GET /api/stations            [{"station", "n_series", "last_seen"}]; with all_stations,
                                 also every other station in the database (its current
                                 session: "session", "project", "remote": true)
    GET /api/stations/<station>/series   that station's series, newest first
    GET /api/stations/<station>/checklist   the station's current session vs its protocol
    POST /api/alerts/<id>/ack    {"reason"}: acknowledge an alert
    POST /api/projects/<project>/protocol   {"from_session"}: pin; DELETE: unpin
    GET /reports?day=|since=     the daily compliance report (HTML), any day
    GET /projects/<project>?since=   a project's history: plots per series and week
    POST /api/series/<key>/accept   {"reason", "by"}: accept a series as intended
    GET /api/templates/history?project=P&sequence=S   a template's changes, oldest first
    GET /healthz                 pipeline statistics
    WS  /ws                      the hub's messages, one JSON text each
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio
from quart import abort, jsonify, request, websocket
from quart_trio import QuartTrio

from mrqart.config import STATIC_DIR
from mrqart.live import access
from mrqart.live.auth import REPORT_CSP
from mrqart.live.guard import (
    MAX_BODY,
    BoundedJSON,
    ClientLimits,
    close_idle_connections,
    parse_json_body,
)
from mrqart.live.hub import Hub, coalesce, receive_batches
from mrqart.live.session import SessionState

#: Station names are the scanner's (0008,1010) StationName: up to 16 characters by the
#: standard, any printable ones ("Skyra (3T)"); a little room for vendors' liberties.
MAX_STATION = 64
#: Longest name of a file or directory (NAME_MAX): a longer static name is simply absent.
NAME_MAX = 255
#: Browsers send nothing we need; bigger frames than this are refused by hypercorn.
MAX_WS_MESSAGE = 64 * 1024
#: An acknowledgement's reason: a short sentence typed at the console.
MAX_REASON = 200

T = TypeVar("T")


class Console(Protocol):
    """What the session-level routes ask of the pipeline."""

    def checklist(self, station: str) -> dict[str, Any] | None: ...

    async def acknowledge(
        self, alert_id: str, reason: str, by: str | None = None
    ) -> dict[str, Any] | None: ...

    async def pin_protocol(self, project: str, session: str | None,
                           by: str | None = None) -> dict[str, Any] | None: ...

    async def accept_series(self, key: str, reason: str, by: str) -> dict[str, Any] | None: ...

    async def template_history(self, project: str, sequence_name: str) -> list[dict[str, Any]]: ...


class Reports(Protocol):
    """The report pages (HTML), built from the store off the trio thread; ValueError
    for a malformed day."""

    async def report_page(self, day: str | None, since: str | None) -> str: ...

    async def project_page(self, project: str, since: str | None) -> str: ...


def create_app(
    state: SessionState,
    hub: Hub,
    *,
    console: Console | None = None,
    reports: Reports | None = None,
    static_dir: Path = STATIC_DIR,
    health: Callable[[], dict[str, Any]] = dict,
    guard: access.Guard | None = None,
    all_stations: Callable[[], list[dict[str, Any]]] | None = None,
) -> QuartTrio:
    """The console app over a session state and a hub (both owned by the pipeline).
    ``all_stations``: the database's stations as the store task last read them (the
    route never waits on the store).

    ``guard`` checks every request (default: this host's browsers only, no accounts)."""
    app = QuartTrio(__name__, static_folder=str(static_dir), static_url_path="/static")
    if guard is None:
        guard = access.Guard(allowed_hosts=access.default_allowed_hosts("127.0.0.1"))
    access.install(app, guard)
    # "/static//etc/passwd" answers 404, not a 308 redirect that merges the slashes.
    app.url_map.merge_slashes = False
    _add_limits(app)

    def station_or_404(station: str) -> str:
        # any printable name, but no "." or ".." segment: such a path means traversal
        if not (0 < len(station) <= MAX_STATION and station.isprintable()) or any(
                part in (".", "..") for part in station.split("/")):
            abort(400, "malformed station id")
        return station

    @app.get("/")
    async def index() -> Any:
        return await app.send_static_file("index.html")

    # <path:...>: names are data, slashes included (the page %2F-quotes them)
    @app.get("/station/<path:station>")
    async def station_page(station: str) -> Any:
        station_or_404(station)
        return await app.send_static_file("index.html")

    @app.get("/state")
    async def state_route() -> Any:
        return jsonify(state.latest())

    @app.get("/api/stations")
    async def stations() -> Any:
        here = state.stations()
        if all_stations is not None:
            seen = {s["station"] for s in here}
            here += [{**s, "remote": True} for s in all_stations() if s["station"] not in seen]
        return jsonify(here)

    @app.get("/api/stations/<path:station>/series")
    async def series(station: str) -> Any:
        return jsonify(_or_404(state.series_of(station_or_404(station)), "unknown station"))

    if console is not None:
        _add_console_routes(app, console, station_or_404)
    if reports is not None:
        _add_report_routes(app, reports)

    limits = ClientLimits()

    @app.get("/healthz")
    async def healthz() -> Any:
        return jsonify({**health(), "web": limits.statistics()})

    @app.websocket("/ws")
    async def ws() -> Any:
        client = websocket.remote_addr or "unknown"
        if refusal := limits.refusal(client):
            return refusal, 429  # before accept: a plain HTTP answer the browser can show
        with limits.hold(client):
            await websocket.accept()
            phi = access.current_user().phi  # patient data shown to this browser's user
            async with hub.subscribe() as messages, trio.open_nursery() as nursery:
                # Drain what the browser sends (nothing is expected) so its frames never pile up.
                nursery.start_soon(_discard_incoming)
                nursery.start_soon(access.close_when_session_ends, nursery.cancel_scope, guard)
                async for batch in receive_batches(messages):
                    for message in coalesce(batch):
                        await websocket.send(message.text_for(phi))
                nursery.cancel_scope.cancel()
            if access.session_ended():
                await websocket.close(access.CLOSE_SESSION_ENDED, "session ended: log in again")
                return None
            # The hub ended this subscription (shutdown, or this browser fell behind).
            await websocket.close(1000)
        return None

    return app


def _add_console_routes(
    app: QuartTrio, console: Console, station_or_404: Callable[[str], str]
) -> None:
    @app.get("/api/stations/<path:station>/checklist")
    async def checklist(station: str) -> Any:
        view = console.checklist(station_or_404(station))
        return jsonify(_or_404(view, "no session on this station yet"))

    @app.post("/api/alerts/<alert_id>/ack")
    async def acknowledge(alert_id: str) -> Any:
        reason = await _body_text("reason")
        if not reason or len(reason) > MAX_REASON:
            abort(400, f"give a reason of 1 to {MAX_REASON} characters")
        ack = await console.acknowledge(alert_id, reason, by=access.author(None) or "local")
        return jsonify(_or_404(ack, "unknown alert"))

    @app.route("/api/projects/<path:project>/protocol", methods=["POST", "DELETE"])
    async def pin_protocol(project: str) -> Any:
        session = None
        if request.method == "POST":
            session = await _body_text("from_session")
            if not session:
                abort(400, 'give {"from_session": SESSION}')
        protocol = await console.pin_protocol(project, session,
                                              by=access.author(None) or "local")
        return jsonify(_or_404(protocol, "no series recorded for that session"))

    @app.post("/api/series/<key>/accept")
    async def accept_series(key: str) -> Any:
        reason = await _body_text("reason")
        if not reason or len(reason) > MAX_REASON:
            abort(400, f"give a reason of 1 to {MAX_REASON} characters")
        by = await _body_text("by")
        return jsonify(_or_404(await accept_as(key, reason, by), "no such series recorded"))

    @app.get("/api/templates/history")
    async def template_history() -> Any:
        project, sequence = request.args.get("project"), request.args.get("sequence")
        if not project or not sequence:
            abort(400, "give ?project=P&sequence=S")
        return jsonify(await console.template_history(project, sequence))

    async def accept_as(key: str, reason: str, typed: str | None) -> dict[str, Any] | None:
        """Accept as the signed-in user; at a shared console (no accounts, or --no-auth)
        as the name typed on the page (access.author). Who accepted is part of the
        history: a name is required."""
        by = access.author(typed)
        if not by or len(by) > MAX_REASON:
            abort(400, f'give "by": who accepts, 1 to {MAX_REASON} characters')
        return await console.accept_series(key, reason, by)


def _add_report_routes(app: QuartTrio, reports: Reports) -> None:
    async def html(page: Awaitable[str]) -> Any:
        try:
            return await page, 200, {"Content-Type": "text/html; charset=utf-8",
                                     "Content-Security-Policy": REPORT_CSP}
        except ValueError as e:
            abort(400, str(e))

    @app.get("/reports")
    async def report() -> Any:
        return await html(reports.report_page(request.args.get("day"), request.args.get("since")))

    # <path:...>: project names may hold slashes (the page links them %2F-quoted)
    @app.get("/projects/<path:project>")
    async def project(project: str) -> Any:
        return await html(reports.project_page(project, request.args.get("since")))


def _add_limits(app: QuartTrio) -> None:
    """Bodies capped before they are read, idle connections closed (see live.guard), and
    a static name no file system could hold answered 404."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY  # chunked bodies: Quart stops past it
    app.json = BoundedJSON(app)  # request.get_json anywhere: deep nesting is a 400

    @app.errorhandler(UnicodeDecodeError)
    async def not_utf8(error: UnicodeDecodeError) -> Any:
        # quart-trio's get_data(as_text=True) decodes strictly, before any JSON parsing
        return {"error": "the body is not UTF-8"}, 400
    app.asgi_app = close_idle_connections(app.asgi_app)  # type: ignore[method-assign]

    @app.before_request
    async def refuse_big_bodies() -> None:
        if (request.content_length or 0) > MAX_BODY:
            abort(413, f"request bodies are at most {MAX_BODY} bytes")

    send_static = app.view_functions["static"]

    async def static(filename: str) -> Any:
        # os.stat would raise ENAMETOOLONG (a 500) for a name past NAME_MAX
        if any(len(part.encode()) > NAME_MAX for part in filename.split("/")):
            abort(404)
        return await send_static(filename=filename)

    app.view_functions["static"] = static


def _or_404(value: T | None, reason: str) -> T:
    if value is None:
        abort(404, reason)
    return value


async def _body_text(name: str) -> str | None:
    """A string field of the request's JSON body, stripped; None if absent or not text.
    A body that is not UTF-8 JSON is a 400 with the reason (never a traceback)."""
    body, error = parse_json_body(await request.get_data())  # cached: read per field
    if error:
        abort(400, error)
    value = body.get(name) if isinstance(body, dict) else None
    return value.strip() if isinstance(value, str) else None


async def _discard_incoming() -> None:
    while True:
        await websocket.receive()
