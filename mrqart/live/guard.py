"""What one client may take from the server, and idle connections that must close.

- ``ClientLimits``: WebSocket connections per client address and in total; past
  either, a new one is refused with a plain HTTP 429 and a reason.
- ``close_idle_connections``: ASGI middleware that lets hypercorn close idle
  keep-alive and ``Connection: close`` sockets (see its docstring).
- ``parse_json_body``: a request body (already capped at MAX_BODY) to JSON, or a
  reason why not: deep nesting, bytes that are not UTF-8 (latin-1, UTF-16).

The fd budget (README, "Deployment"): each connection costs one descriptor; WebSockets
are capped here at WS_TOTAL, and an idle HTTP connection lives at most hypercorn's
keep_alive_timeout.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import trio
from flask.json.provider import DefaultJSONProvider

#: WebSockets from one address: a console has a tab or two open, but many consoles may
#: share one address behind NAT or a proxy; half the total, so one address cannot take all.
WS_PER_CLIENT = 128
#: WebSockets in all: every message is sent to each, and each holds a descriptor.
WS_TOTAL = 256
#: Request bodies (an acknowledgement's reason, a session id): refused past this size
#: before they are read.
MAX_BODY = 8 * 1024

_ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                    Awaitable[None]]


class ClientLimits:
    """Counts open WebSockets per client address; ``refusal`` says why a new one is not
    admitted (None: admitted), ``hold`` counts one while it is open."""

    def __init__(self, per_client: int = WS_PER_CLIENT, total: int = WS_TOTAL) -> None:
        self.per_client, self.total = per_client, total
        self._open: Counter[str] = Counter()
        self.refused = 0

    def refusal(self, client: str) -> str | None:
        reason = None
        if self._open[client] >= self.per_client:
            reason = f"too many connections from {client} (at most {self.per_client})"
        elif self._open.total() >= self.total:
            reason = f"too many connections (at most {self.total})"
        self.refused += reason is not None
        return reason

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        self._open[client] += 1
        try:
            yield
        finally:
            self._open[client] -= 1
            if not self._open[client]:
                del self._open[client]

    def statistics(self) -> dict[str, int]:
        return {"websockets": self._open.total(), "clients": len(self._open),
                "refused": self.refused}


def close_idle_connections(app: _ASGIApp) -> _ASGIApp:
    """Shield the last ``http.response.body`` send from cancellation.

    Hypercorn (0.17, 0.18) does its keep-alive bookkeeping inside that send: it ends the
    stream, which tells the app ``http.disconnect``, then either re-arms the idle timer
    (keep-alive) or closes the socket (``Connection: close``). quart-trio (0.12) cancels
    its request nursery as soon as it sees that ``http.disconnect``, i.e. in the middle of
    the same send, so neither happens and the socket stays open forever. Shielded, the
    send completes (hypercorn shields its socket writes already, so nothing new can block).
    """

    async def guarded(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_shielded(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        return await app(scope, receive, send_shielded)

    return guarded


class BoundedJSON(DefaultJSONProvider):
    """The app's JSON: a body nested too deeply for the parser is malformed (a 400 from
    ``request.get_json``), not a RecursionError (a 500 with a traceback)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError as error:
            raise ValueError("the JSON is nested too deeply") from error


def parse_json_body(data: bytes) -> tuple[Any, str | None]:
    """(the JSON value, None), or (None, why the body is not UTF-8 JSON)."""
    try:
        return json.loads(data.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "the body is not UTF-8"
    except RecursionError:
        return None, "the JSON is nested too deeply"
    except ValueError as error:
        return None, f"malformed JSON: {error}"
