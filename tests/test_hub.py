"""The hub's fan-out and its drop policy."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from mrqart.live.hub import Hub, Message, coalesce, receive_batches


def test_message_wire_shape() -> None:
    assert json.loads(Message("AWP1", "update", 3, series="1.2:4").text) == {
        "station": "AWP1", "type": "update", "content": 3, "series": "1.2:4",
    }
    assert "series" not in json.loads(Message(None, "unreadable", {"path": "x"}).text)


async def test_every_subscriber_gets_every_message() -> None:
    hub = Hub()
    got: dict[int, list[str]] = {0: [], 1: []}

    async def browser(i: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with hub.subscribe() as rx:
            task_status.started()
            async for message in rx:
                got[i].append(message.content)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for i in got:
                await nursery.start(browser, i)
            for n in range(3):
                hub.publish(Message("S", "update", n))
            hub.close_all()
    assert got == {0: [0, 1, 2], 1: [0, 1, 2]}
    assert hub.statistics().subscribers == 0


async def test_a_browser_that_stops_reading_is_dropped_not_waited_for() -> None:
    hub = Hub(buffer=4)
    fast: list[int] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def slow(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                async with hub.subscribe() as rx:
                    task_status.started()
                    await trio.sleep_forever()  # never reads
                    del rx

            async def quick(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                async with hub.subscribe() as rx:
                    task_status.started()
                    async for message in rx:
                        fast.append(message.content)

            await nursery.start(slow)
            await nursery.start(quick)
            for n in range(20):
                hub.publish(Message("S", "update", n))
                await trio.testing.wait_all_tasks_blocked()
            assert hub.statistics().dropped_subscribers == 1
            assert hub.statistics().subscribers == 1
            hub.close_all()
            nursery.cancel_scope.cancel()
    assert fast == list(range(20))


def m(type_: str, series: str | None = None, content: object = None) -> Message:
    return Message("S", type_, content, series=series)


@pytest.mark.parametrize(
    ("batch", "kept"),
    [
        ([], []),
        ([m("update", "a", 1)], [0]),
        # the last count of each series, where it stood
        ([m("update", "a", 1), m("update", "b", 1), m("update", "a", 2)], [1, 2]),
        # other messages keep their place and are never folded
        ([m("new", "a"), m("update", "a", 2), m("unreadable"), m("unreadable"),
          m("update", "a", 3)], [0, 2, 3, 4]),
    ],
)
def test_coalesce_keeps_the_last_count_per_series(batch: list[Message], kept: list[int]) -> None:
    assert coalesce(batch) == [batch[i] for i in kept]


async def test_receive_batches_takes_what_is_waiting() -> None:
    send, receive = trio.open_memory_channel[int](10)
    for i in range(5):
        send.send_nowait(i)
    send.close()
    with trio.fail_after(5):
        batches = [b async for b in receive_batches(receive, limit=3)]
    assert batches == [[0, 1, 2], [3, 4]]
