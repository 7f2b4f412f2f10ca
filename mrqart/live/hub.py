"""Fan-out of pipeline messages to every open browser.

Drop policy: each subscriber gets a bounded channel and the hub ``send_nowait``s to it.
A subscriber whose buffer is full is disconnected (its channel is closed; the browser
reconnects and re-syncs from ``/state``). A slow browser never stalls acquisition.

Coalescing: a page shows only the latest file count of a series, so whoever takes
messages in batches (the session task, each browser's sender) folds the "update"s of a
batch into the last one per series (:func:`coalesce`). Batches are whatever is waiting
when the reader gets its turn (:func:`receive_batches`): one message at low rates, so
no delay is added; more under load, so a busy or slow reader sends fewer frames instead
of falling behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import trio

from mrqart.headers.phi import filter_phi

log = logging.getLogger(__name__)

#: Messages a browser may lag behind before it is dropped: a burst of a few seconds
#: of updates at hundreds of files/s, far more than a live page ever needs to catch up.
SUBSCRIBER_BUFFER = 2048
#: Most items taken in one batch: bounds the delay a batch adds to its first item.
BATCH_LIMIT = 256

T = TypeVar("T")


@dataclass(frozen=True)
class Message:
    """One wire message: ``{"station", "type", "series", "content"}``."""

    station: str | None
    type: str
    content: Any
    series: str | None = None

    @cached_property
    def text(self) -> str:
        """The JSON text, made once however many browsers it goes to."""
        return json.dumps(self._wire(), separators=(",", ":"))

    def text_for(self, phi: str) -> str:
        """The JSON text with patient data filtered for ``phi`` (headers.phi.filter_phi): made
        once per setting however many browsers it goes to."""
        if phi == "show":
            return self.text
        texts = self._filtered
        if phi not in texts:
            texts[phi] = json.dumps(filter_phi(self._wire(), phi), separators=(",", ":"))
        return texts[phi]

    @cached_property
    def _filtered(self) -> dict[str, str]:
        return {}

    def _wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"station": self.station, "type": self.type, "content": self.content}
        if self.series is not None:
            wire["series"] = self.series
        return wire


def coalesce(messages: list[Message]) -> list[Message]:
    """Keep the last "update" of each series, where it stood; everything else in order."""
    last = {m.series: i for i, m in enumerate(messages) if m.type == "update"}
    return [m for i, m in enumerate(messages) if m.type != "update" or last[m.series] == i]


async def receive_batches(
    receive: trio.MemoryReceiveChannel[T], limit: int = BATCH_LIMIT
) -> AsyncIterator[list[T]]:
    """Each item as it comes, with whatever else is already waiting (up to ``limit``)."""
    async for first in receive:
        batch = [first]
        while len(batch) < limit:
            try:
                batch.append(receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        yield batch


@dataclass(frozen=True, slots=True)
class HubStatistics:
    subscribers: int
    sent: int
    dropped_subscribers: int


class Hub:
    """Owns one send channel per subscriber; serialises each message once."""

    def __init__(self, buffer: int = SUBSCRIBER_BUFFER) -> None:
        self._buffer = buffer
        self._subscribers: set[trio.MemorySendChannel[Message]] = set()
        self._sent = 0
        self._dropped = 0

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[trio.MemoryReceiveChannel[Message]]:
        """A channel of messages; it ends when the hub drops this subscriber or stops."""
        send, receive = trio.open_memory_channel[Message](self._buffer)
        self._subscribers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def publish(self, message: Message) -> None:
        """Deliver to every subscriber now, dropping those that are full."""
        for send in list(self._subscribers):
            try:
                send.send_nowait(message)
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

    def _close(self, send: trio.MemorySendChannel[Message]) -> None:
        self._subscribers.discard(send)
        send.close()
