"""Linux inotify through ctypes over libc: three system calls and a pure event parser.

This module never imports trio. The watcher (mrqart/ingest/watcher.py) waits for the
descriptor to become readable and hands the bytes it reads to `parse_events`.

Every libc call goes through `_call`, which retries on EINTR and turns the C
convention (-1 plus errno) into `OSError(errno, strerror[, path])`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

# Buffer for one os.read(): each event is 16 bytes plus its padded name (about 48
# bytes for a scanner file), so 256 KiB takes ~5,000 events per system call.
READ_SIZE = 256 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.inotify_rm_watch.restype = ctypes.c_int

# struct inotify_event { int wd; uint32_t mask; uint32_t cookie; uint32_t len; char name[]; }
_HEADER = struct.Struct("iIII")


class Flag(IntEnum):
    """inotify event and watch flags, values from <sys/inotify.h>."""

    ACCESS = 0x00000001
    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    CLOSE_NOWRITE = 0x00000010
    OPEN = 0x00000020
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    UNMOUNT = 0x00002000
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    EXCL_UNLINK = 0x04000000
    MASK_ADD = 0x20000000
    ISDIR = 0x40000000
    ONESHOT = 0x80000000

    @classmethod
    def from_mask(cls, mask: int) -> list[Flag]:
        """The flags set in `mask`, in value order (for logs and test messages)."""
        return [flag for flag in cls if mask & flag]


# inotify_init1() flags; same values as O_NONBLOCK and O_CLOEXEC on Linux.
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Event:
    """One inotify event. `name` is "" for events about the watched directory itself
    (IN_IGNORED, IN_DELETE_SELF, ...) and for IN_Q_OVERFLOW (whose wd is -1)."""

    wd: int
    mask: int
    cookie: int
    name: str


def _call(func: Callable[..., int], *args: object, path: str | None = None) -> int:
    """Call a libc function; return its result, or raise OSError(errno) for -1.

    Retries on EINTR, as the call was interrupted before it did anything.
    """
    while True:
        result = func(*args)
        if result != -1:
            return result
        err = ctypes.get_errno()
        if err != errno.EINTR:
            if path is None:
                raise OSError(err, os.strerror(err))
            raise OSError(err, os.strerror(err), path)


def init(flags: int = IN_NONBLOCK | IN_CLOEXEC) -> int:
    """A new inotify file descriptor (non-blocking, close-on-exec by default)."""
    return _call(_libc.inotify_init1, flags)


def add_watch(fd: int, path: str | os.PathLike[str], mask: int) -> int:
    """Watch `path` for the events in `mask`; return its watch descriptor.

    Watching the same inode again returns the same descriptor (the kernel replaces
    the mask). ENOSPC means the per-user watch limit is reached.
    """
    return _call(_libc.inotify_add_watch, fd, os.fsencode(path), mask, path=os.fspath(path))


def rm_watch(fd: int, wd: int) -> None:
    """Remove a watch; the kernel then queues IN_IGNORED for it. EINVAL if already gone."""
    _call(_libc.inotify_rm_watch, fd, wd)


def parse_events(data: bytes) -> list[Event]:
    """Every event in `data` (the bytes of one read of an inotify descriptor), in order.

    Names are NUL-padded by the kernel; the padding is dropped and the name decoded
    with the file system encoding (undecodable bytes survive as surrogates).
    Raises ValueError if `data` does not end on an event boundary.
    """
    events = []
    offset, end = 0, len(data)
    header = _HEADER.size
    while offset < end:
        if offset + header > end:
            raise ValueError(f"truncated inotify event header at byte {offset}")
        wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
        start, offset = offset + header, offset + header + length
        if offset > end:
            raise ValueError(f"truncated inotify event name at byte {start}")
        name = os.fsdecode(data[start:offset].split(b"\0", 1)[0]) if length else ""
        events.append(Event(wd, mask, cookie, name))
    return events
