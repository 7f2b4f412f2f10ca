"""Root directories -> a stream of `FileReady`, one per DICOM-like file written below them.

A file is ready when the kernel reports IN_CLOSE_WRITE (written in place) or
IN_MOVED_TO (temp file renamed into place); IN_CREATE only matters for directories.
Every directory below a root gets a watch as it appears and is scanned right after,
so files written before the watch existed are not lost; the scan and the events
overlap, and `DeliveredIndex` makes sure each (path, size, mtime) goes out once.
On IN_Q_OVERFLOW the watcher walks every root again (like Watchman's recrawl).

The watcher reads events through an `EventSource`: `InotifySource` is the kernel,
`MemoryEventSource` is the fake that tests (and other helpers' tests) drive with
`emit(path, mask)`.

Errors: `WatchError` for a root that is not a directory and for running out of
inotify watches or instances (naming the /proc/sys/fs/inotify limit to raise);
everything else propagates.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import math
import os
import re
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from mrqart.ingest import inotify
from mrqart.ingest.inotify import Event, Flag

log = logging.getLogger(__name__)

# What each directory watch asks for. IN_CREATE is needed for new sub-directories
# (it costs one extra event per file); IN_DELETE/IN_MOVED_FROM let the dedupe index
# forget files that go away; IN_ONLYDIR refuses to watch a file that replaced a dir.
WATCH_MASK = (
    Flag.CLOSE_WRITE | Flag.MOVED_TO | Flag.MOVED_FROM | Flag.CREATE | Flag.DELETE | Flag.ONLYDIR
)

# DICOM-like names, as in the original mrqart: Siemens "MR.<uid>", exports "*.dcm", "*.IMA".
DEFAULT_PATTERN = ("MR.*", "*.dcm", "*.ima")

# Junk that is skipped without a log line: macOS resource forks ("._*") and .DS_Store
# (both hidden names), Windows' Thumbs.db, and temporary names written before a rename.
_JUNK = re.compile(r"\..*|thumbs\.db|.*\.part|.*\.tmp", re.IGNORECASE)

# Dedupe memory cap, in files: five sessions of 10,000. Past it, the least recently
# active directory's names are replaced by one mtime floor (see DeliveredIndex).
DEDUPE_CAP = 50_000

# A scan cannot tell a finished file from one still being written. A scanned file
# whose mtime is this recent is held back: if it is still being written, its
# IN_CLOSE_WRITE (the watch already exists) delivers it; otherwise it is delivered
# when a second look after this delay finds it unchanged.
SETTLE_S = 1.0

# Distinct unexpected names logged at debug level; past it they are skipped silently.
_NOTE_CAP = 1024


class WatchError(Exception):
    """The watcher cannot do its job: a root is not a directory, or no watch is left."""


@dataclass(frozen=True, slots=True)
class FileReady:
    """A file that was completely written. `seen` is time.monotonic() when the watcher
    learned of it (read the event, or finished the scan that found it)."""

    path: str
    size: int
    mtime_ns: int
    seen: float


@dataclass(frozen=True, slots=True)
class WatcherStatistics:
    """delivered: FileReady sent so far; watches: directories watched now;
    overflows: IN_Q_OVERFLOW seen; rescans: full walks they caused; dedupe_size: file
    names remembered (bounded by DEDUPE_CAP); pending: scanned files held back to settle."""

    delivered: int
    watches: int
    overflows: int
    rescans: int
    dedupe_size: int
    pending: int


class EventSource(Protocol):
    """Where the watcher gets inotify events from. add_watch may be called from a
    worker thread (during a directory walk), one call at a time."""

    def add_watch(self, path: str) -> int: ...

    def rm_watch(self, wd: int) -> None: ...

    async def read_events(self) -> list[Event]:
        """Wait for at least one event and return every event queued; [] means the
        source has ended."""
        ...

    async def aclose(self) -> None: ...


class InotifySource:
    """The kernel's inotify queue for one descriptor, read in batches of up to
    `inotify.READ_SIZE` bytes (the shape of trio's FdStream.receive_some)."""

    def __init__(self, mask: int = WATCH_MASK) -> None:
        self._fd = inotify.init()
        self._mask = mask

    def add_watch(self, path: str) -> int:
        return inotify.add_watch(self._fd, path, self._mask)

    def rm_watch(self, wd: int) -> None:
        inotify.rm_watch(self._fd, wd)

    async def read_events(self) -> list[Event]:
        await trio.lowlevel.checkpoint()
        while True:
            try:
                data = os.read(self._fd, inotify.READ_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
            else:
                return inotify.parse_events(data)

    async def aclose(self) -> None:
        if self._fd >= 0:
            trio.lowlevel.notify_closing(self._fd)
            os.close(self._fd)
            self._fd = -1
        await trio.lowlevel.checkpoint()


_SELF_EVENTS = Flag.IGNORED | Flag.DELETE_SELF | Flag.MOVE_SELF | Flag.UNMOUNT


class MemoryEventSource:
    """A fake inotify for tests: watches are a dict, events go through a bounded
    memory channel the size of the kernel queue.

    `emit(path, mask)` queues the event the kernel would report for `path` (for a
    directory's own events - IN_IGNORED, IN_DELETE_SELF - pass the directory). As in
    the kernel, a full queue drops events and reports one IN_Q_OVERFLOW; watching a
    missing path raises ENOENT, and more than `max_watches` watches raises ENOSPC;
    rm_watch queues IN_IGNORED. `finish()` ends the stream once it is drained.

    `await wait_idle()` returns once the reader has handled every event emitted so
    far and waits for more: a test's sync point that, unlike
    trio.testing.wait_all_tasks_blocked, also waits out the watcher's worker-thread
    directory walks.
    """

    def __init__(self, *, queue_size: int = 16384, max_watches: int | None = None) -> None:
        self._send, self._receive = trio.open_memory_channel[Event](queue_size)
        self._wds: dict[str, int] = {}
        self._next_wd = 1
        self._overflowed = False
        self._idle = trio.Event()  # set while the reader waits on an empty queue
        self.max_watches = max_watches

    def add_watch(self, path: str) -> int:
        path = os.fspath(path)
        if not os.path.isdir(path):
            code = errno.ENOTDIR if os.path.exists(path) else errno.ENOENT
            raise OSError(code, os.strerror(code), path)
        if path in self._wds:
            return self._wds[path]
        if self.max_watches is not None and len(self._wds) >= self.max_watches:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        self._wds[path] = wd = self._next_wd
        self._next_wd += 1
        return wd

    def rm_watch(self, wd: int) -> None:
        for path, known in self._wds.items():
            if known == wd:
                self.emit(path, Flag.IGNORED)
                return
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    def watched(self) -> list[str]:
        """The paths that currently have a watch."""
        return list(self._wds)

    def emit(self, path: str | os.PathLike[str], mask: int, *, cookie: int = 0) -> bool:
        """Queue the event for `path`; False when no watch would see it."""
        path = os.fspath(path)
        if mask & Flag.Q_OVERFLOW:
            self._queue(Event(-1, Flag.Q_OVERFLOW, 0, ""))
            return True
        if mask & _SELF_EVENTS:
            wd = self._wds.pop(path, None) if mask & Flag.IGNORED else self._wds.get(path)
            name = ""
        else:
            wd = self._wds.get(os.path.dirname(path))
            name = os.path.basename(path)
        if wd is None:
            return False
        self._queue(Event(wd, mask, cookie, name))
        return True

    def _queue(self, event: Event) -> None:
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self._overflowed = True

    def finish(self) -> None:
        """End the stream: read_events returns [] once the queue is drained."""
        self._send.close()

    async def read_events(self) -> list[Event]:
        events = []
        if not self._overflowed:
            if self._receive.statistics().current_buffer_used == 0:
                self._idle.set()
            try:
                events.append(await self._receive.receive())
            except trio.EndOfChannel:
                return []
        while True:
            try:
                events.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        if self._overflowed:
            self._overflowed = False
            events.append(Event(-1, Flag.Q_OVERFLOW, 0, ""))
        return events

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def aclose(self) -> None:
        self._send.close()
        await self._receive.aclose()


class DeliveredIndex:
    """Which files went out, per directory, in bounded memory.

    A file is (directory, name, size, mtime_ns); the same name with another size or
    mtime is a new file (rewritten). Memory: a deleted or moved-away directory is
    forgotten whole (`forget`), a deleted file is dropped (`discard`), and past `cap`
    names the least recently active directory's names are replaced by a floor, the
    newest mtime among them: a later *scan* treats anything not newer as delivered.
    The same floor marks the files present at start that were not caught up
    (`seal`). Events never consult the floor: an event means the file was just written.
    """

    def __init__(self, cap: int = DEDUPE_CAP) -> None:
        self._dirs: OrderedDict[str, dict[str, tuple[int, int]]] = OrderedDict()
        self._floor: dict[str, int] = {}
        self._cap = cap
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def is_new(self, dirpath: str, name: str, size: int, mtime_ns: int, *, scanned: bool) -> bool:
        if scanned and mtime_ns <= self._floor.get(dirpath, -1):
            return False
        names = self._dirs.get(dirpath)
        return names is None or names.get(name) != (size, mtime_ns)

    def add(self, dirpath: str, name: str, size: int, mtime_ns: int, *, scanned: bool) -> bool:
        """Record the file; False if it was already delivered."""
        if not self.is_new(dirpath, name, size, mtime_ns, scanned=scanned):
            return False
        names = self._dirs.get(dirpath)
        if names is None:
            names = self._dirs[dirpath] = {}
        else:
            self._dirs.move_to_end(dirpath)
        self._size += name not in names
        names[name] = (size, mtime_ns)
        while self._size > self._cap and len(self._dirs) > 1:
            old, old_names = self._dirs.popitem(last=False)
            self._size -= len(old_names)
            self.seal(old, max(mtime for _, mtime in old_names.values()))
        return True

    def seal(self, dirpath: str, mtime_ns: int) -> None:
        """Scans of `dirpath` treat files with mtime <= mtime_ns as delivered."""
        self._floor[dirpath] = max(mtime_ns, self._floor.get(dirpath, -1))

    def discard(self, dirpath: str, name: str) -> None:
        names = self._dirs.get(dirpath)
        if names is not None and names.pop(name, None) is not None:
            self._size -= 1

    def forget(self, dirpath: str) -> None:
        self._size -= len(self._dirs.pop(dirpath, ()))
        self._floor.pop(dirpath, None)


class NameFilter:
    """Decides which file names are DICOM-like. `pattern` is a regex (str or compiled)
    or a sequence of globs; both match the whole name, case-insensitively for str/globs."""

    def __init__(self, pattern: str | re.Pattern[str] | Sequence[str] | None = None) -> None:
        if pattern is None:
            pattern = DEFAULT_PATTERN
        if isinstance(pattern, str):
            pattern = re.compile(pattern, re.IGNORECASE)
        elif not isinstance(pattern, re.Pattern):
            pattern = re.compile("|".join(fnmatch.translate(g) for g in pattern), re.IGNORECASE)
        self._pattern = pattern
        self._noted: set[str] = set()

    def __call__(self, name: str) -> bool:
        if _JUNK.fullmatch(name):
            return False
        if self._pattern.fullmatch(name):
            return True
        if len(self._noted) < _NOTE_CAP and name not in self._noted:
            self._noted.add(name)
            log.debug("ignoring %r: not a DICOM-like name", name)
        return False


# (directory, its watch descriptor, [(name, size, mtime_ns) of wanted files])
_Listing = tuple[str, int, list[tuple[str, int, int]]]


def _walk(top: str, add_watch: Callable[[str], int], wanted: Callable[[str], bool]) -> list[_Listing]:
    """Watch `top` and every directory below it, each before listing it, so a file
    written during the walk is either listed or reported by an event. Blocking.

    Directories that vanish or cannot be read are skipped; other errors (ENOSPC)
    propagate. Symlinked directories are not followed (no loops).
    """
    listings: list[_Listing] = []
    stack = [top]
    while stack:
        dirpath = stack.pop()
        try:
            wd = add_watch(dirpath)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed between being listed and being watched
        except PermissionError as err:
            log.warning("cannot watch %s: %s", dirpath, err.strerror)
            continue
        files = []
        try:
            with os.scandir(dirpath) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif wanted(entry.name):
                            st = entry.stat()
                            if stat.S_ISREG(st.st_mode):
                                files.append((entry.name, st.st_size, st.st_mtime_ns))
                    except FileNotFoundError:
                        continue  # deleted while we listed
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            pass  # the watch's IN_IGNORED (or nothing) follows
        listings.append((dirpath, wd, files))
    return listings


def _check_root(root: str | os.PathLike[str]) -> str:
    path = os.path.abspath(root)
    if not os.path.isdir(path):
        what = "does not exist" if not os.path.exists(path) else "is not a directory"
        raise WatchError(f"cannot watch {path}: it {what}")
    return path


def _limit_error(path: str) -> WatchError:
    return WatchError(
        f"cannot watch {path}: out of inotify watches (ENOSPC); raise the per-user limit "
        "in /proc/sys/fs/inotify/max_user_watches (sysctl fs.inotify.max_user_watches)"
    )


def _open_inotify() -> InotifySource:
    try:
        return InotifySource()
    except OSError as err:
        if err.errno == errno.EMFILE:
            raise WatchError(
                "cannot open an inotify instance (EMFILE); raise the per-user limit in "
                "/proc/sys/fs/inotify/max_user_instances"
            ) from err
        raise


@dataclass(slots=True)
class _Pending:
    dirpath: str
    name: str
    size: int
    mtime_ns: int
    due: float


class Watcher:
    """Delivers a FileReady for every DICOM-like file written below `roots`.

    `catch_up(dirpath)` decides, for each directory present at start, whether its
    existing files are delivered (default: none are). `pattern`: see NameFilter.
    `settle`: seconds a freshly scanned file is held back (see SETTLE_S); 0 delivers
    scanned files at once. Raises WatchError now if a root is not a directory.
    """

    def __init__(
        self,
        roots: Iterable[str | os.PathLike[str]],
        *,
        source: EventSource | None = None,
        pattern: str | re.Pattern[str] | Sequence[str] | None = None,
        catch_up: Callable[[str], bool] | None = None,
        settle: float = SETTLE_S,
    ) -> None:
        self._roots = [_check_root(root) for root in roots]
        if not self._roots:
            raise WatchError("no directory to watch")
        self._source = source
        self._wanted = NameFilter(pattern)
        self._catch_up = catch_up
        self._settle = settle
        self._index = DeliveredIndex()
        self._wd_path: dict[int, str] = {}
        self._path_wd: dict[str, int] = {}
        self._pending: dict[str, _Pending] = {}
        self._delivered = self._overflows = self._rescans = 0

    def statistics(self) -> WatcherStatistics:
        return WatcherStatistics(
            delivered=self._delivered,
            watches=len(self._wd_path),
            overflows=self._overflows,
            rescans=self._rescans,
            dedupe_size=len(self._index),
            pending=len(self._pending),
        )

    async def run(
        self,
        send: trio.MemorySendChannel[FileReady],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch until cancelled (or until the event source ends); owns and closes
        `send` and the event source (an InotifySource unless one was given). Runs once.

        Calls task_status.started() once every directory present at start is
        watched; caught-up files are sent after that. Backpressure: blocking sends,
        so a slow consumer leaves events in the kernel queue, and if that overflows
        the rescan finds what was dropped.
        """
        async with send:
            for root in self._roots:
                _check_root(root)  # it may have gone since __init__
            if self._source is None:
                self._source = _open_inotify()
            source = self._source
            try:
                start: list[FileReady] = []
                for root in self._roots:
                    start += await self._watch_tree(root, at_start=True)
                task_status.started()
                await self._send(send, start)
                await self._follow(source, send)
            finally:
                with trio.CancelScope(shield=True):
                    await source.aclose()

    async def _follow(self, source: EventSource, send: trio.MemorySendChannel[FileReady]) -> None:
        while True:
            events = None
            with trio.move_on_at(self._next_due()):
                events = await source.read_events()
            if events == []:
                return
            ready, new_dirs, overflow = self._handle(events or [])
            ready += self._recheck_pending()
            await self._send(send, ready)
            for dirpath in new_dirs:
                await self._send(send, await self._watch_tree(dirpath))
            if overflow:
                self._overflows += 1
                log.warning("inotify queue overflowed: rescanning every watched directory")
                await self._rescan(send)

    async def _rescan(self, send: trio.MemorySendChannel[FileReady]) -> None:
        self._rescans += 1
        for root in self._roots:
            await self._send(send, await self._watch_tree(root))

    def _handle(self, events: list[Event]) -> tuple[list[FileReady], list[str], bool]:
        """Apply one batch of events: (ready files, new directories to walk, overflow?)."""
        seen = time.monotonic()
        ready: list[FileReady] = []
        new_dirs: list[str] = []
        overflow = False
        for event in events:
            mask = event.mask
            if mask & Flag.Q_OVERFLOW:
                overflow = True
                continue
            if mask & Flag.IGNORED:
                self._drop_watch(event.wd)
                continue
            dirpath = self._wd_path.get(event.wd)
            if dirpath is None:
                continue  # queued before its watch was dropped
            if mask & Flag.ISDIR:
                if mask & (Flag.CREATE | Flag.MOVED_TO):
                    new_dirs.append(os.path.join(dirpath, event.name))
                elif mask & Flag.MOVED_FROM:
                    self._unwatch_tree(os.path.join(dirpath, event.name))
            elif mask & (Flag.CLOSE_WRITE | Flag.MOVED_TO):
                if self._wanted(event.name) and (file := self._stat_ready(dirpath, event.name, seen)):
                    ready.append(file)
            elif mask & (Flag.DELETE | Flag.MOVED_FROM):
                self._index.discard(dirpath, event.name)
                self._pending.pop(os.path.join(dirpath, event.name), None)
            # IN_CREATE of a file: not ready yet, its IN_CLOSE_WRITE follows
        return ready, new_dirs, overflow

    def _stat_ready(self, dirpath: str, name: str, seen: float) -> FileReady | None:
        """The FileReady for a file an event reported, unless it is gone or was sent."""
        path = os.path.join(dirpath, name)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if self._pending:
            self._pending.pop(path, None)  # an event supersedes the scan that held it back
        if not self._index.add(dirpath, name, st.st_size, st.st_mtime_ns, scanned=False):
            return None
        return FileReady(path, st.st_size, st.st_mtime_ns, seen)

    async def _watch_tree(self, top: str, *, at_start: bool = False) -> list[FileReady]:
        """Watch `top` and everything below it; the files found that are due now."""
        try:
            listings = await trio.to_thread.run_sync(
                _walk, top, self._source.add_watch, self._wanted
            )
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise _limit_error(err.filename or top) from err
            raise
        seen = time.monotonic()
        now_ns = time.time_ns()
        ready = []
        for dirpath, wd, files in listings:
            self._map_watch(dirpath, wd)
            if at_start and not (self._catch_up and self._catch_up(dirpath)):
                if files:
                    self._index.seal(dirpath, max(mtime for _, _, mtime in files))
                continue
            for name, size, mtime_ns in files:
                if file := self._scanned(dirpath, name, size, mtime_ns, seen, now_ns):
                    ready.append(file)
        return ready

    def _scanned(
        self, dirpath: str, name: str, size: int, mtime_ns: int, seen: float, now_ns: int
    ) -> FileReady | None:
        """Deliver a file a scan found, or hold it back if it may still be being written."""
        if not self._index.is_new(dirpath, name, size, mtime_ns, scanned=True):
            return None
        path = os.path.join(dirpath, name)
        if now_ns - mtime_ns < self._settle * 1e9:
            self._pending.pop(path, None)  # re-insert at the end: dict order is due order
            self._pending[path] = _Pending(dirpath, name, size, mtime_ns, trio.current_time() + self._settle)
            return None
        self._pending.pop(path, None)
        self._index.add(dirpath, name, size, mtime_ns, scanned=True)
        return FileReady(path, size, mtime_ns, seen)

    def _next_due(self) -> float:
        return next(iter(self._pending.values())).due if self._pending else math.inf

    def _recheck_pending(self) -> list[FileReady]:
        """Deliver held-back files that have not changed since they were last seen."""
        now = trio.current_time()
        seen = time.monotonic()
        ready = []
        while self._pending:
            path, held = next(iter(self._pending.items()))
            if held.due > now:
                break
            del self._pending[path]
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if (st.st_size, st.st_mtime_ns) != (held.size, held.mtime_ns):
                # still changing: look again later (its IN_CLOSE_WRITE may come first)
                held.size, held.mtime_ns, held.due = st.st_size, st.st_mtime_ns, now + self._settle
                self._pending[path] = held
            elif self._index.add(held.dirpath, held.name, held.size, held.mtime_ns, scanned=True):
                ready.append(FileReady(path, held.size, held.mtime_ns, seen))
        return ready

    def _map_watch(self, dirpath: str, wd: int) -> None:
        old = self._wd_path.get(wd)
        if old is not None and old != dirpath and self._path_wd.get(old) == wd:
            del self._path_wd[old]  # the same directory, renamed while events were lost
        self._wd_path[wd] = dirpath
        self._path_wd[dirpath] = wd

    def _drop_watch(self, wd: int) -> None:
        """IN_IGNORED: the directory was deleted, moved away or unwatched."""
        dirpath = self._wd_path.pop(wd, None)
        if dirpath is None or self._path_wd.get(dirpath) != wd:
            return
        del self._path_wd[dirpath]
        self._index.forget(dirpath)
        for path in [p for p, held in self._pending.items() if held.dirpath == dirpath]:
            del self._pending[path]
        if dirpath in self._roots:
            log.warning("watched root %s is gone; no more files will come from it", dirpath)

    def _unwatch_tree(self, top: str) -> None:
        """A directory moved away: remove its watches (each then reports IN_IGNORED)."""
        prefix = top + os.sep
        for dirpath, wd in list(self._path_wd.items()):
            if dirpath == top or dirpath.startswith(prefix):
                try:
                    self._source.rm_watch(wd)
                except OSError as err:
                    if err.errno != errno.EINVAL:  # EINVAL: the kernel already dropped it
                        raise

    async def _send(self, send: trio.MemorySendChannel[FileReady], files: list[FileReady]) -> None:
        for file in files:
            try:
                send.send_nowait(file)  # no checkpoint per file: the read already had one
            except trio.WouldBlock:
                await send.send(file)
            self._delivered += 1
