"""mrqart.ingest.watcher: driven by fake inotify events (MemoryEventSource) over real files in
tmp_path, plus a few runs against the real kernel inotify."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from mrqart.ingest import inotify
from mrqart.ingest.inotify import Flag
from mrqart.ingest.watcher import (
    DeliveredIndex,
    FileReady,
    MemoryEventSource,
    NameFilter,
    Watcher,
    WatchError,
)

TIMEOUT = 10


def write(path: Path, data: bytes = b"DICM") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def delivered_until_finished(watcher: Watcher, source: MemoryEventSource, steps) -> list[str]:
    """Run the watcher, apply `steps(source)` once it is started and idle, end the
    stream, and return every delivered path in order (the watcher ends on its own)."""
    send, receive = trio.open_memory_channel[FileReady](10_000)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run, send)
            await source.wait_idle()
            await steps(source)
            source.finish()
            return [file.path async for file in receive]


async def test_close_write_and_moved_to_are_ready_create_is_not(tmp_path: Path) -> None:
    source = MemoryEventSource()
    watcher = Watcher([tmp_path], source=source)

    async def steps(src: MemoryEventSource) -> None:
        a = write(tmp_path / "a.dcm")
        src.emit(a, Flag.CREATE)  # still being written: ignored
        src.emit(a, Flag.CLOSE_WRITE)
        src.emit(a, Flag.CLOSE_WRITE)  # same path, size, mtime: not again
        part = write(tmp_path / "b.dcm.part")
        src.emit(part, Flag.CREATE)
        src.emit(part, Flag.CLOSE_WRITE)  # temporary name: junk
        part.rename(tmp_path / "b.dcm")
        src.emit(part, Flag.MOVED_FROM, cookie=7)
        src.emit(tmp_path / "b.dcm", Flag.MOVED_TO, cookie=7)

    assert await delivered_until_finished(watcher, source, steps) == [
        str(tmp_path / "a.dcm"),
        str(tmp_path / "b.dcm"),
    ]
    assert watcher.statistics().delivered == 2


async def test_rewritten_file_is_delivered_again(tmp_path: Path) -> None:
    source = MemoryEventSource()

    async def steps(src: MemoryEventSource) -> None:
        a = write(tmp_path / "a.dcm", b"short")
        src.emit(a, Flag.CLOSE_WRITE)
        await src.wait_idle()
        write(a, b"longer content")
        src.emit(a, Flag.CLOSE_WRITE)

    paths = await delivered_until_finished(Watcher([tmp_path], source=source), source, steps)
    assert paths == [str(tmp_path / "a.dcm")] * 2


async def test_new_directory_is_watched_and_scanned_once(tmp_path: Path) -> None:
    source = MemoryEventSource()
    watcher = Watcher([tmp_path], source=source, settle=0)
    session = tmp_path / "session"
    expected = {str(write(session / "s1" / f"{i}.dcm")) for i in range(3)}
    expected |= {str(write(session / "MR.1.2.3"))}

    async def steps(src: MemoryEventSource) -> None:
        src.emit(session, Flag.CREATE | Flag.ISDIR)
        await src.wait_idle()  # the walk runs in a worker thread
        assert set(src.watched()) == {str(tmp_path), str(session), str(session / "s1")}
        # the scan already delivered these; their late events must not repeat them
        for path in expected:
            assert src.emit(path, Flag.CLOSE_WRITE)
        late = write(session / "s1" / "late.dcm")
        src.emit(late, Flag.CLOSE_WRITE)
        expected.add(str(late))

    paths = await delivered_until_finished(watcher, source, steps)
    assert sorted(paths) == sorted(expected)
    assert watcher.statistics().watches == 3


async def test_overflow_rescans_and_loses_nothing(tmp_path: Path) -> None:
    source = MemoryEventSource(queue_size=4)
    watcher = Watcher([tmp_path], source=source, settle=0)

    async def steps(src: MemoryEventSource) -> None:
        for i in range(10):  # 10 events into a queue of 4: the kernel would drop 6
            src.emit(write(tmp_path / f"{i}.dcm"), Flag.CLOSE_WRITE)
        src.emit(write(tmp_path / "new" / "x.dcm"), Flag.CREATE | Flag.ISDIR)  # dropped too

    paths = await delivered_until_finished(watcher, source, steps)
    assert sorted(paths) == sorted([str(tmp_path / f"{i}.dcm") for i in range(10)] + [str(tmp_path / "new" / "x.dcm")])
    stats = watcher.statistics()
    assert (stats.overflows, stats.rescans, stats.watches) == (1, 1, 2)


async def test_files_present_at_start_only_with_catch_up(tmp_path: Path) -> None:
    old = write(tmp_path / "old" / "1.dcm")
    todo = write(tmp_path / "todo" / "1.dcm")
    source = MemoryEventSource()
    watcher = Watcher(
        [tmp_path], source=source, settle=0, catch_up=lambda d: d == str(tmp_path / "todo")
    )

    async def steps(src: MemoryEventSource) -> None:
        src.emit(tmp_path, Flag.Q_OVERFLOW)  # the rescan must not send `old` either

    paths = await delivered_until_finished(watcher, source, steps)
    assert paths == [str(todo)] and str(old) not in paths
    assert watcher.statistics().rescans == 1


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("001_000017_000066.dcm", True),
        ("x.DCM", True),
        ("MR.1.3.12.2.1107", True),
        ("mr.1.2", True),
        ("IMG0001.IMA", True),
        ("._001.dcm", False),
        (".DS_Store", False),
        ("Thumbs.db", False),
        (".hidden.dcm", False),
        ("001.dcm.part", False),
        ("001.dcm.tmp", False),
        ("notes.txt", False),
        ("dcm", False),
    ],
)
def test_name_filter_default(name: str, wanted: bool) -> None:
    assert NameFilter()(name) is wanted


@pytest.mark.parametrize(
    ("pattern", "name", "wanted"),
    [
        (["*.raw"], "a.RAW", True),
        (["*.raw"], "a.dcm", False),
        (r"\d+", "00012", True),
        (r"\d+", "00012.part", False),  # junk stays junk whatever the pattern
    ],
)
def test_name_filter_pattern(pattern, name: str, wanted: bool) -> None:
    assert NameFilter(pattern)(name) is wanted


@pytest.mark.parametrize(
    ("name", "content", "wanted"),
    [
        ("i100220.MRDC.146", b"", True),  # GE export: by name
        ("IM_0027", b"", True),  # Philips export: by name
        ("1.3.12.2.1107.5", bytes(128) + b"DICM" + bytes(64), True),  # no extension: by content
        ("1.3.12.2.1107.6", bytes(128) + b"DICX" + bytes(64), False),
        ("README", b"scan notes\n" * 20, False),
        ("short", b"DICM", False),
        ("DICOMDIR", bytes(128) + b"DICM", False),  # an index, not an image
        ("IM_0027.tmp", bytes(128) + b"DICM", False),  # junk whatever its content
        ("x~", bytes(128) + b"DICM", False),
    ],
)
def test_name_or_content_decides(tmp_path: Path, name: str, content: bytes, wanted: bool) -> None:
    (tmp_path / name).write_bytes(content)
    assert NameFilter().wants(str(tmp_path / name)) is wanted


def test_looking_inside_never_blocks_or_follows(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # nobody writes it: an open without O_NONBLOCK would hang
    (tmp_path / "real").write_bytes(bytes(128) + b"DICM")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert [NameFilter().wants(str(tmp_path / n)) for n in ("fifo", "link", "loop", "real")] == [
        False, False, False, True]


def test_unexpected_names_are_logged_once_junk_never(caplog) -> None:
    wanted = NameFilter()
    with caplog.at_level(logging.DEBUG, logger="mrqart.ingest.watcher"):
        for name in ["notes.txt", "notes.txt", ".DS_Store", "Thumbs.db", "a.tmp"]:
            wanted(name)
    assert [r.getMessage() for r in caplog.records] == ["ignoring 'notes.txt': not a DICOM-like name"]


async def test_junk_is_not_delivered(tmp_path: Path) -> None:
    source = MemoryEventSource()

    async def steps(src: MemoryEventSource) -> None:
        for name in ["._a.dcm", ".DS_Store", "Thumbs.db", "a.part", "notes.txt", "a.dcm"]:
            src.emit(write(tmp_path / name), Flag.CLOSE_WRITE)

    paths = await delivered_until_finished(Watcher([tmp_path], source=source), source, steps)
    assert paths == [str(tmp_path / "a.dcm")]


async def test_deleted_and_moved_away_directories_drop_their_watches(tmp_path: Path) -> None:
    gone, moved = tmp_path / "gone", tmp_path / "moved"
    write(gone / "1.dcm")
    write(moved / "sub" / "1.dcm")
    source = MemoryEventSource()
    watcher = Watcher([tmp_path], source=source, settle=0, catch_up=lambda d: True)

    async def steps(src: MemoryEventSource) -> None:
        assert watcher.statistics().watches == 4
        assert watcher.statistics().dedupe_size == 2
        shutil.rmtree(gone)
        src.emit(gone, Flag.DELETE_SELF)
        src.emit(gone, Flag.IGNORED)
        src.emit(gone, Flag.DELETE | Flag.ISDIR)
        moved.rename(tmp_path.parent / f"{tmp_path.name}-away")
        src.emit(moved, Flag.MOVED_FROM | Flag.ISDIR, cookie=3)  # the watcher removes the watches
        await src.wait_idle()
        assert src.watched() == [str(tmp_path)]

    await delivered_until_finished(watcher, source, steps)
    stats = watcher.statistics()
    assert (stats.watches, stats.dedupe_size) == (1, 0)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_bad_root_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    root = tmp_path / kind
    if kind == "file":
        root.write_text("not a directory")
    with pytest.raises(WatchError, match=str(root)):
        Watcher([tmp_path, root])


async def test_out_of_watches_names_the_limit(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    watcher = Watcher([tmp_path], source=MemoryEventSource(max_watches=2))
    send, _ = trio.open_memory_channel[FileReady](1)
    with trio.fail_after(TIMEOUT), pytest.raises(WatchError, match="/proc/sys/fs/inotify/max_user_watches"):
        await watcher.run(send)


async def test_fresh_scanned_file_is_held_until_it_settles(tmp_path: Path) -> None:
    settle = 0.3
    source = MemoryEventSource()
    watcher = Watcher([tmp_path], source=source, settle=settle)
    send, receive = trio.open_memory_channel[FileReady](10)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run, send)
            path = write(tmp_path / "s" / "1.dcm")  # maybe still being written when scanned
            source.emit(tmp_path / "s", Flag.CREATE | Flag.ISDIR)
            await source.wait_idle()
            assert watcher.statistics().pending == 1
            file = await receive.receive()  # unchanged after `settle`: delivered
            assert (file.path, watcher.statistics().pending) == (str(path), 0)
            nursery.cancel_scope.cancel()


async def test_held_back_file_goes_out_once_on_its_close_write(tmp_path: Path) -> None:
    source = MemoryEventSource()
    watcher = Watcher([tmp_path], source=source, settle=TIMEOUT)
    path = tmp_path / "s" / "1.dcm"

    async def steps(src: MemoryEventSource) -> None:
        write(path, b"first half")
        src.emit(tmp_path / "s", Flag.CREATE | Flag.ISDIR)
        await src.wait_idle()
        assert watcher.statistics().pending == 1
        write(path, b"first half, second half")
        src.emit(path, Flag.CLOSE_WRITE)

    assert await delivered_until_finished(watcher, source, steps) == [str(path)]
    assert watcher.statistics().pending == 0


def test_delivered_index_is_bounded_and_keeps_scans_honest() -> None:
    index = DeliveredIndex(cap=2)
    assert index.add("a", "1", 10, 100, scanned=False)
    assert not index.add("a", "1", 10, 100, scanned=True)
    assert index.add("a", "2", 10, 200, scanned=True)
    assert index.add("b", "1", 10, 300, scanned=False)  # over the cap: "a" becomes a floor
    assert len(index) == 1
    assert not index.is_new("a", "2", 10, 200, scanned=True)  # a scan: already delivered
    assert index.is_new("a", "3", 10, 201, scanned=True)  # newer than the floor
    assert index.is_new("a", "2", 10, 200, scanned=False)  # an event: just written again
    index.discard("b", "1")
    index.forget("a")
    assert len(index) == 0 and index.is_new("a", "2", 10, 200, scanned=True)


# --- the real kernel ------------------------------------------------------------------


@asynccontextmanager
async def real_watcher(root: Path, **kwargs):
    watcher = Watcher([root], **kwargs)
    send, receive = trio.open_memory_channel[FileReady](10_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run, send)
        yield watcher, receive
        nursery.cancel_scope.cancel()


async def receive_exactly_once(receive, root: Path, expected: set[str]) -> None:
    """Receive until every expected path came, then until a sentinel written after
    them; fail on any duplicate or unexpected path."""
    got: set[str] = set()
    while got != expected:
        path = (await receive.receive()).path
        assert path in expected and path not in got, path
        got.add(path)
    sentinel = str(write(root / "zz-sentinel.dcm"))
    assert (await receive.receive()).path == sentinel


async def test_real_inotify_nested_burst(tmp_path: Path) -> None:
    depth, per_dir = 200, 5
    expected = set()
    with trio.fail_after(60):
        async with real_watcher(tmp_path, settle=0.2) as (watcher, receive):

            def burst() -> None:
                d = tmp_path
                for i in range(depth):
                    d = d / f"d{i}"
                    d.mkdir()
                    for j in range(per_dir):
                        expected.add(str(write(d / f"{j}.dcm")))

            thread = threading.Thread(target=burst)
            thread.start()
            await trio.to_thread.run_sync(thread.join)
            await receive_exactly_once(receive, tmp_path, expected)
            assert watcher.statistics().watches == depth + 1


async def test_real_inotify_temp_then_rename(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with real_watcher(tmp_path) as (_, receive):
            part = write(tmp_path / "001_000001_000001.dcm.part")
            os.rename(part, tmp_path / "001_000001_000001.dcm")
            await receive_exactly_once(receive, tmp_path, {str(tmp_path / "001_000001_000001.dcm")})


async def test_real_inotify_overflow_loses_nothing(tmp_path: Path) -> None:
    # A consumer that takes nothing blocks the watcher's send, so the kernel queue
    # fills: more files than the events one read takes plus the whole queue holds.
    queue = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if queue > 100_000:
        pytest.skip(f"max_queued_events is {queue}: overflowing it takes too long")
    n = inotify.READ_SIZE // 32 + queue // 2 + 1000  # two events (create, close) per file
    watcher = Watcher([tmp_path])
    send, receive = trio.open_memory_channel[FileReady](0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run, send)
            paths = [str(tmp_path / f"{i:06d}.dcm") for i in range(n)]
            await trio.to_thread.run_sync(lambda: [write(Path(p)) for p in paths])
            await receive_exactly_once(receive, tmp_path, set(paths))
            assert watcher.statistics().overflows >= 1
            nursery.cancel_scope.cancel()
