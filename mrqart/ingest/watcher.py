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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import trio

from mrqart.ingest import inotify
from mrqart.ingest.inotify import Event, Flag

log = logging.getLogger(__name__)

# What each directory watch asks for. IN_CREATE is needed for new sub-directories and
# for complete files that arrive without a write (a hard link, O_TMPFILE + linkat);
# IN_ATTRIB for a file written unreadable and then chmod-ed; IN_DELETE/IN_MOVED_FROM let
# the dedupe index forget files that go away; IN_MOVE_SELF tells a root moved away;
# IN_ONLYDIR refuses to watch a file that replaced a dir. (The walk never enters a
# symlinked directory; IN_DONT_FOLLOW would refuse a root given as a symlink.)
WATCH_MASK = (
    Flag.CLOSE_WRITE | Flag.MOVED_TO | Flag.MOVED_FROM | Flag.CREATE | Flag.DELETE
    | Flag.ATTRIB | Flag.MOVE_SELF | Flag.ONLYDIR
)

# Names taken as DICOM without looking inside: Siemens "MR.<uid>", "*.dcm", "*.IMA",
# GE exports ("i100220.MRDC.146"), Philips exports ("IM_0027"). Any other name that is
# not junk is DICOM if its file has the 128-byte preamble and "DICM" (see looks_like_dicom).
DEFAULT_PATTERN = ("MR.*", "*.dcm", "*.ima", "*.dicom", "*.MRDC.*", "IM_*")

# Junk that is skipped without a log line or a look inside: macOS resource forks ("._*")
# and .DS_Store (both hidden names), Windows' Thumbs.db, temporary names written before a
# rename (".part", ".tmp", "~" and rsync's ".name.XXXXXX", hidden too), and DICOMDIR
# (an index of the files, not an image).
_JUNK = re.compile(r"\..*|thumbs\.db|.*\.part|.*\.tmp|.*~|dicomdir", re.IGNORECASE)

# Errors about one path that the watcher skips with one log line: it vanished, a symlink
# loop, a name past PATH_MAX, no permission, a stale handle on a network share.
_PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG,
                          errno.EACCES, errno.EPERM, errno.ESTALE})
# Out of a resource (descriptors, inotify watches, memory): the directory is retried
# every RETRY_S and counted as unwatched in the statistics until it works.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOMEM})
RETRY_S = 5.0
# How often a watched root that disappeared (deleted, a share unmounted) is looked for.
ROOT_POLL_S = 1.0
# Files delivered while unreadable, remembered so that a chmod (IN_ATTRIB) delivers them again.
_UNREADABLE_CAP = 10_000
# Bytes a file must start with to be DICOM: a 128-byte preamble, then "DICM".
_PREAMBLE = 128
_MAGIC = b"DICM"

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
    names remembered (bounded by DEDUPE_CAP); pending: scanned files held back to settle;
    unwatched: directories not watched for lack of a resource (retried every RETRY_S);
    skipped: paths skipped for good (symlink loop, name too long, no permission);
    not_watching: {root: ISO time since when} for roots that are gone (looked for every
    ROOT_POLL_S); last_error: the latest of those problems, for a person to read."""

    delivered: int
    watches: int
    overflows: int
    rescans: int
    dedupe_size: int
    pending: int
    unwatched: int = 0
    skipped: int = 0
    not_watching: dict[str, str] = field(default_factory=dict)
    last_error: str | None = None


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
        """Whether the name alone says DICOM (others are noted once at debug level)."""
        verdict = self.classify(name)
        if verdict is None:
            self.note(name)
        return bool(verdict)

    def classify(self, name: str) -> bool | None:
        """True: a DICOM name; False: junk; None: look inside the file (looks_like_dicom)."""
        if _JUNK.fullmatch(name):
            return False
        if self._pattern.fullmatch(name):
            return True
        return None

    def wants(self, path: str) -> bool:
        """Whether the file at ``path`` is DICOM, by name or by content. Blocking (a read
        of 132 bytes for a name the pattern does not know): call from a worker thread."""
        verdict = self.classify(os.path.basename(path))
        if verdict is None:
            verdict = looks_like_dicom(path)
            if not verdict:
                self.note(os.path.basename(path))
        return verdict

    def note(self, name: str) -> None:
        if len(self._noted) < _NOTE_CAP and name not in self._noted:
            self._noted.add(name)
            log.debug("ignoring %r: not a DICOM-like name", name)


def looks_like_dicom(path: str) -> bool:
    """Whether ``path`` is a regular file that starts with the DICOM preamble and magic.

    Never blocks on a FIFO or device (O_NONBLOCK, then fstat) and never follows a symlink
    (O_NOFOLLOW). A file we may not read counts as DICOM: it is reported as unreadable,
    and delivered again once a chmod makes it readable.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            return True
        if err.errno in _PATH_ERRNOS or err.errno in _RESOURCE_ERRNOS:
            return False
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.pread(fd, _PREAMBLE + len(_MAGIC), 0)
    except OSError as err:
        if err.errno in (errno.EIO, errno.ESTALE):
            return False
        raise
    finally:
        os.close(fd)
    return head[_PREAMBLE:] == _MAGIC


# (directory, its watch descriptor, [(name, size, mtime_ns) of wanted files])
_Listing = tuple[str, int, list[tuple[str, int, int]]]


@dataclass
class _Walked:
    listings: list[_Listing] = field(default_factory=list)
    #: (path, error): a directory that could not be watched or listed, or a file not statted
    failed: list[tuple[str, OSError]] = field(default_factory=list)


def _walk(top: str, add_watch: Callable[[str], int], wanted: Callable[[str], bool]) -> _Walked:
    """Watch `top` and every directory below it, each before listing it, so a file
    written during the walk is either listed or reported by an event. Blocking.

    Iterative (any depth). Symlinks are never followed (no loops, nothing outside the
    tree); only regular files are listed. A path that fails with a path error
    (_PATH_ERRNOS: gone, symlink loop, name past PATH_MAX, no permission) or a resource
    error (_RESOURCE_ERRNOS: out of descriptors or watches) goes into `failed` and the
    walk goes on; `wanted(path)` decides which files count. Other errors propagate.
    """
    walked = _Walked()
    stack = [top]
    while stack:
        dirpath = stack.pop()
        try:
            wd = add_watch(dirpath)
            files = []
            with os.scandir(dirpath) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False) and wanted(entry.path):
                            st = entry.stat(follow_symlinks=False)
                            files.append((entry.name, st.st_size, st.st_mtime_ns))
                    except OSError as err:
                        if err.errno not in _PATH_ERRNOS:
                            raise
                        if err.errno != errno.ENOENT:  # ENOENT: deleted while we listed
                            walked.failed.append((entry.path, err))
        except OSError as err:
            if err.errno not in _PATH_ERRNOS and err.errno not in _RESOURCE_ERRNOS:
                raise
            if err.errno not in (errno.ENOENT, errno.ENOTDIR):  # removed while we walked
                walked.failed.append((dirpath, err))
            continue
        walked.listings.append((dirpath, wd, files))
    return walked


def _lstat(path: str) -> os.stat_result | None:
    """lstat, or None for a path that is gone or unusable (see _PATH_ERRNOS)."""
    try:
        return os.lstat(path)
    except OSError as err:
        if err.errno in _PATH_ERRNOS:
            return None
        raise


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


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
    scanned files at once. `on_roots(not_watching)` is called when a root goes or comes
    back (see WatcherStatistics.not_watching). Raises WatchError now if a root is not a
    directory.
    """

    def __init__(
        self,
        roots: Iterable[str | os.PathLike[str]],
        *,
        source: EventSource | None = None,
        pattern: str | re.Pattern[str] | Sequence[str] | None = None,
        catch_up: Callable[[str], bool] | None = None,
        settle: float = SETTLE_S,
        on_roots: Callable[[dict[str, str]], None] | None = None,
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
        # Problems that must not stop the watcher (see WatcherStatistics)
        self._unwatched: dict[str, str] = {}  # directory -> why, retried every RETRY_S
        self._skipped = 0
        self._noted_paths: set[str] = set()  # paths whose skipping was logged (bounded)
        self._lost: dict[str, float] = {}  # root -> time.time() when it went
        self._retry_at = math.inf
        self._started = False
        self._last_error: str | None = None
        self._unreadable: OrderedDict[str, None] = OrderedDict()  # delivered unreadable
        self._on_roots = on_roots

    def is_watched(self, path: str | os.PathLike[str]) -> bool:
        """Whether the directory ``path`` has its watch in place now (the DICOM node
        waits for it before putting the first file into a new directory)."""
        return os.path.abspath(path) in self._path_wd

    def statistics(self) -> WatcherStatistics:
        return WatcherStatistics(
            delivered=self._delivered,
            watches=len(self._wd_path),
            overflows=self._overflows,
            rescans=self._rescans,
            dedupe_size=len(self._index),
            pending=len(self._pending),
            unwatched=len(self._unwatched),
            skipped=self._skipped,
            not_watching={root: _iso(t) for root, t in self._lost.items()},
            last_error=self._last_error,
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
                self._started = True
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
            ready, new_dirs, overflow, look = self._handle(events or [])
            ready += await self._look_inside(look)
            ready += self._recheck_pending()
            await self._send(send, ready)
            for dirpath in new_dirs:
                await self._send(send, await self._watch_tree(dirpath))
            if overflow:
                self._overflows += 1
                log.warning("inotify queue overflowed: rescanning every watched directory")
                await self._rescan(send)
            if trio.current_time() >= self._retry_at:
                await self._retry(send)

    async def _retry(self, send: trio.MemorySendChannel[FileReady]) -> None:
        """Look for roots that went (a share unmounted, a directory deleted) and watch
        them again when they are back; retry directories a lack of resources left unwatched."""
        self._retry_at = math.inf
        for root in list(self._lost):
            if await trio.to_thread.run_sync(os.path.isdir, root):
                del self._lost[root]
                log.warning("watching %r again", root)
                self._roots_changed()
                # like a start: today's directories are caught up, older ones sealed
                await self._send(send, await self._watch_tree(root, at_start=True))
        if self._unwatched:
            retry, self._unwatched = self._unwatched, {}
            for dirpath in retry:
                await self._send(send, await self._watch_tree(dirpath))
            if not self._unwatched:
                log.warning("every directory is watched again")
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        now = trio.current_time()
        if self._lost:
            self._retry_at = min(self._retry_at, now + ROOT_POLL_S)
        if self._unwatched:
            self._retry_at = min(self._retry_at, now + RETRY_S)

    def _failed(self, path: str, err: OSError) -> None:
        """A path the walk could not use: retried later (no resource) or skipped (a bad path)."""
        if err.errno in _RESOURCE_ERRNOS:
            reason = str(_limit_error(path)) if err.errno == errno.ENOSPC else err.strerror
            if not self._unwatched:  # once per episode, not once per directory
                log.error("cannot watch %r: %s; retrying every %.0f s", path, reason, RETRY_S)
            self._unwatched[path] = reason
            self._schedule_retry()
        else:
            self._skipped += 1
            reason = err.strerror
            if len(self._noted_paths) < _NOTE_CAP and path not in self._noted_paths:
                self._noted_paths.add(path)
                log.warning("skipping %r: %s", path, reason)
        self._last_error = f"{path!r}: {reason}"

    async def _rescan(self, send: trio.MemorySendChannel[FileReady]) -> None:
        self._rescans += 1
        for root in self._roots:
            await self._send(send, await self._watch_tree(root))

    def _handle(
        self, events: list[Event]
    ) -> tuple[list[FileReady], list[str], bool, list[tuple[str, str, int]]]:
        """Apply one batch of events: (ready files, new directories to walk, overflow?,
        files whose names do not tell: (directory, name, mask) to look inside)."""
        seen = time.monotonic()
        ready: list[FileReady] = []
        new_dirs: list[str] = []
        look: list[tuple[str, str, int]] = []
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
            if mask & Flag.MOVE_SELF:
                if dirpath in self._roots:  # a root moved away: it is gone from its path
                    self._unwatch_tree(dirpath)
            elif mask & Flag.ISDIR:
                if mask & (Flag.CREATE | Flag.MOVED_TO):
                    new_dirs.append(os.path.join(dirpath, event.name))
                elif mask & Flag.MOVED_FROM:
                    self._unwatch_tree(os.path.join(dirpath, event.name))
            elif mask & (Flag.DELETE | Flag.MOVED_FROM):
                self._index.discard(dirpath, event.name)
                self._pending.pop(os.path.join(dirpath, event.name), None)
                self._unreadable.pop(os.path.join(dirpath, event.name), None)
            elif mask & Flag.ATTRIB and os.path.join(dirpath, event.name) not in self._unreadable:
                continue  # only a chmod of a file delivered unreadable matters
            elif (wanted := self._wanted.classify(event.name)) is None:
                look.append((dirpath, event.name, mask))
            elif wanted and (file := self._on_file_event(dirpath, event.name, mask, seen)):
                ready.append(file)
        return ready, new_dirs, overflow, look

    async def _look_inside(self, look: list[tuple[str, str, int]]) -> list[FileReady]:
        """The files among `look` (names the pattern does not know) that are DICOM."""
        if not look:
            return []
        dicom = await trio.to_thread.run_sync(
            lambda: [item for item in look if self._wanted.wants(os.path.join(*item[:2]))])
        seen = time.monotonic()
        return [f for d, n, mask in dicom if (f := self._on_file_event(d, n, mask, seen))]

    def _on_file_event(self, dirpath: str, name: str, mask: int, seen: float) -> FileReady | None:
        if mask & (Flag.CLOSE_WRITE | Flag.MOVED_TO):
            return self._stat_ready(dirpath, name, seen)
        path = os.path.join(dirpath, name)
        if mask & Flag.ATTRIB:  # chmod of a file delivered while unreadable
            if not os.access(path, os.R_OK):
                return None
            self._unreadable.pop(path, None)  # (a DELETE in the same batch may have dropped it)
            self._index.discard(dirpath, name)
            return self._stat_ready(dirpath, name, seen)
        # IN_CREATE: a file being written gets its IN_CLOSE_WRITE later (which supersedes
        # this); a complete file made by a hard link or O_TMPFILE + linkat gets nothing
        # else, so it is held back like a scanned file and delivered once it settles.
        st = _lstat(path)
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        return self._scanned(dirpath, name, st.st_size, st.st_mtime_ns, seen, time.time_ns())

    def _stat_ready(self, dirpath: str, name: str, seen: float) -> FileReady | None:
        """The FileReady for a file an event reported, unless it is gone or was sent."""
        path = os.path.join(dirpath, name)
        st = _lstat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            return None  # gone, or a symlink (never followed), FIFO, device or socket
        if self._pending:
            self._pending.pop(path, None)  # an event supersedes the scan that held it back
        if not self._index.add(dirpath, name, st.st_size, st.st_mtime_ns, scanned=False):
            return None
        return self._ready(path, st.st_size, st.st_mtime_ns, seen)

    def _ready(self, path: str, size: int, mtime_ns: int, seen: float) -> FileReady:
        """A FileReady; a file we may not read is remembered, for its chmod (IN_ATTRIB)."""
        if not os.access(path, os.R_OK):
            self._unreadable[path] = None
            while len(self._unreadable) > _UNREADABLE_CAP:
                self._unreadable.popitem(last=False)
        return FileReady(path, size, mtime_ns, seen)

    async def _watch_tree(self, top: str, *, at_start: bool = False) -> list[FileReady]:
        """Watch `top` and everything below it; the files found that are due now."""
        walked = await trio.to_thread.run_sync(_walk, top, self._source.add_watch, self._wanted.wants)
        for path, err in walked.failed:
            if err.errno == errno.ENOSPC and not self._started:
                raise _limit_error(path) from err  # at start: a setting to fix now
            self._failed(path, err)
        seen = time.monotonic()
        now_ns = time.time_ns()
        ready = []
        for dirpath, wd, files in walked.listings:
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
        return self._ready(path, size, mtime_ns, seen)

    def _next_due(self) -> float:
        due = next(iter(self._pending.values())).due if self._pending else math.inf
        return min(due, self._retry_at)

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
            st = _lstat(path)
            if st is None:
                continue
            if (st.st_size, st.st_mtime_ns) != (held.size, held.mtime_ns):
                # still changing: look again later (its IN_CLOSE_WRITE may come first)
                held.size, held.mtime_ns, held.due = st.st_size, st.st_mtime_ns, now + self._settle
                self._pending[path] = held
            elif self._index.add(held.dirpath, held.name, held.size, held.mtime_ns, scanned=True):
                ready.append(self._ready(path, held.size, held.mtime_ns, seen))
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
            self._lost[dirpath] = time.time()
            self._last_error = f"not watching {dirpath!r} since {_iso(self._lost[dirpath])}: it is gone"
            log.error("watched root %r is gone; looking for it every %.0f s", dirpath, ROOT_POLL_S)
            self._schedule_retry()
            self._roots_changed()

    def _roots_changed(self) -> None:
        if self._on_roots is not None:
            self._on_roots(self.statistics().not_watching)

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
