"""mrqart.ingest.inotify: the pure event parser (table-driven) and the libc calls."""

from __future__ import annotations

import errno
import os
import struct

import pytest

from mrqart.ingest import inotify
from mrqart.ingest.inotify import Event, Flag


def raw(wd: int, mask: int, cookie: int = 0, name: bytes = b"", pad: int = 0) -> bytes:
    """One event as the kernel lays it out: header, name, NUL padding."""
    field = name + b"\0" * pad if name or pad else b""
    return struct.pack("iIII", wd, mask, cookie, len(field)) + field


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", []),
        (raw(1, Flag.CLOSE_WRITE, name=b"a.dcm", pad=11), [Event(1, Flag.CLOSE_WRITE, 0, "a.dcm")]),
        # IN_IGNORED and IN_Q_OVERFLOW carry no name (len = 0)
        (raw(3, Flag.IGNORED), [Event(3, Flag.IGNORED, 0, "")]),
        (raw(-1, Flag.Q_OVERFLOW), [Event(-1, Flag.Q_OVERFLOW, 0, "")]),
        # several events in one buffer, each padded to a multiple of 16 bytes
        (
            raw(1, Flag.CREATE, name=b"001_000017_000066.dcm", pad=11)
            + raw(1, Flag.MOVED_FROM, 42, b"x.part", pad=10)
            + raw(2, Flag.MOVED_TO | Flag.ISDIR, 42, b"session", pad=9)
            + raw(1, Flag.CLOSE_WRITE, name=b"MR.1.2", pad=2),
            [
                Event(1, Flag.CREATE, 0, "001_000017_000066.dcm"),
                Event(1, Flag.MOVED_FROM, 42, "x.part"),
                Event(2, Flag.MOVED_TO | Flag.ISDIR, 42, "session"),
                Event(1, Flag.CLOSE_WRITE, 0, "MR.1.2"),
            ],
        ),
        # a name that is not UTF-8 survives as surrogates, so the path round-trips
        (raw(1, Flag.CLOSE_WRITE, name=b"caf\xe9.dcm", pad=7), [Event(1, Flag.CLOSE_WRITE, 0, "caf\udce9.dcm")]),
    ],
)
def test_parse_events(data: bytes, expected: list[Event]) -> None:
    assert inotify.parse_events(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        raw(1, Flag.CREATE, name=b"abc", pad=1)[:10],  # header cut short
        raw(1, Flag.CREATE, name=b"abc", pad=13)[:-4],  # name cut short
    ],
)
def test_parse_events_rejects_truncated_buffers(data: bytes) -> None:
    with pytest.raises(ValueError, match="truncated"):
        inotify.parse_events(data)


@pytest.mark.parametrize(
    ("mask", "flags"),
    [
        (0, []),
        (Flag.CREATE | Flag.ISDIR, [Flag.CREATE, Flag.ISDIR]),
        (Flag.CLOSE_WRITE, [Flag.CLOSE_WRITE]),
    ],
)
def test_flag_from_mask(mask: int, flags: list[Flag]) -> None:
    assert Flag.from_mask(mask) == flags


def test_libc_calls_watch_and_report_events(tmp_path) -> None:
    fd = inotify.init()
    try:
        wd = inotify.add_watch(fd, tmp_path, Flag.CLOSE_WRITE)
        assert inotify.add_watch(fd, str(tmp_path), Flag.CLOSE_WRITE) == wd  # same inode
        (tmp_path / "a.dcm").write_bytes(b"x")
        assert inotify.parse_events(os.read(fd, inotify.READ_SIZE)) == [
            Event(wd, Flag.CLOSE_WRITE, 0, "a.dcm")
        ]
        inotify.rm_watch(fd, wd)
        assert inotify.parse_events(os.read(fd, inotify.READ_SIZE)) == [Event(wd, Flag.IGNORED, 0, "")]
        with pytest.raises(BlockingIOError):  # IN_NONBLOCK by default
            os.read(fd, inotify.READ_SIZE)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda fd, tmp: inotify.add_watch(fd, tmp / "missing", Flag.CREATE), errno.ENOENT),
        (lambda fd, tmp: inotify.rm_watch(fd, 12345), errno.EINVAL),
        (lambda fd, tmp: inotify.add_watch(-1, tmp, Flag.CREATE), errno.EBADF),
    ],
)
def test_failed_calls_raise_oserror_with_errno(tmp_path, call, code: int) -> None:
    fd = inotify.init()
    try:
        with pytest.raises(OSError) as info:
            call(fd, tmp_path)
        assert info.value.errno == code
    finally:
        os.close(fd)


def test_add_watch_error_names_the_path(tmp_path) -> None:
    fd = inotify.init()
    try:
        with pytest.raises(FileNotFoundError) as info:
            inotify.add_watch(fd, tmp_path / "missing", Flag.CREATE)
        assert info.value.filename == str(tmp_path / "missing")
    finally:
        os.close(fd)
