"""Fan-out of pipeline messages to every open browser.

Drop policy: each subscriber gets a bounded channel and the hub ``send_nowait``s to it.
A subscriber whose buffer is full is disconnected (its channel is closed; the browser
reconnects and re-syncs from ``/state``). A slow browser never stalls acquisition.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

log = logging.getLogger(__name__)

#: Messages a browser may lag behind before it is dropped: a burst of a few seconds
#: of updates at hundreds of files/s, far more than a live page ever needs to catch up.
SUBSCRIBER_BUFFER = 2048


@dataclass(frozen=True, slots=True)
class Message:
    """One wire message: ``{"station", "type", "series", "content"}``."""

    station: str | None
    type: str
    content: Any
    series: str | None = None

    def to_json(self) -> str:
        wire: dict[str, Any] = {"station": self.station, "type": self.type, "content": self.content}
        if self.series is not None:
            wire["series"] = self.series
        return json.dumps(wire, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class HubStatistics:
    subscribers: int
    sent: int
    dropped_subscribers: int


class Hub:
    """Owns one send channel per subscriber; serialises each message once."""

    def __init__(self, buffer: int = SUBSCRIBER_BUFFER) -> None:
        self._buffer = buffer
        self._subscribers: set[trio.MemorySendChannel[str]] = set()
        self._sent = 0
        self._dropped = 0

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
        """A channel of JSON texts; it ends when the hub drops this subscriber or stops."""
        send, receive = trio.open_memory_channel[str](self._buffer)
        self._subscribers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def publish(self, message: Message) -> None:
        """Deliver to every subscriber now, dropping those that are full."""
        text = message.to_json()
        for send in list(self._subscribers):
            try:
                send.send_nowait(text)
            except trio.WouldBlock:
                log.warning("dropping a browser that fell %d messages behind", self._buffer)
                self._dropped += 1
                self._close(send)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._close(send)
        self._sent += 1

    def close_all(self) -> None:
        """End every subscription (shutdown): browsers get a normal close."""
        for send in list(self._subscribers):
            self._close(send)

    async def run(
        self,
        receive: trio.MemoryReceiveChannel[Message],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Publish every message from the pipeline until ``receive`` closes.

        Owns ``receive``; cancelled with the pipeline's nursery. Never blocks on a browser.
        """
        task_status.started()
        async with receive:
            async for message in receive:
                self.publish(message)
        self.close_all()

    def statistics(self) -> HubStatistics:
        return HubStatistics(len(self._subscribers), self._sent, self._dropped)

    def _close(self, send: trio.MemorySendChannel[str]) -> None:
        self._subscribers.discard(send)
        send.close()
