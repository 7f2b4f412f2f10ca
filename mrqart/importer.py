"""``mrqart import``: learn the templates from archived DICOM directories.

Pure (no trio). The archive is walked once; its files are grouped into series
without reading them when the scanner's file names tell the series
(``001_<series>_<image>.dcm``), else by the header's SeriesUID. One header per
echo of each series is read in a process pool (header parsing is CPU-bound,
so threads would share one core), and each series is recorded with
source "import". Re-running adds nothing: the store upserts by (session,
series number), the session being the header's StudyUID as in live use, so a
series seen live is not recorded twice either.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mrqart.headers import NULL, Unreadable, frames_of, read_header
from mrqart.store import Store

# The scanner's export names: <any>_<series number>_<image counter>.dcm
SCANNER_NAME = re.compile(r"^\d+_(\d+)_(\d+)\.dcm$", re.IGNORECASE)

# Series handed to a worker at a time: large enough to amortise the pickling
# round trip (~0.1 ms), small enough that the progress bar moves.
_CHUNK = 32

# Reading stops looking for more echoes after this many files of one series:
# scanners write at most a dozen echoes.
_MAX_ECHOES = 16


@dataclass(frozen=True)
class SeriesFiles:
    """The files of one series, found by name, in image-counter order."""

    directory: str
    series_number: int
    files: tuple[str, ...]


@dataclass(frozen=True)
class SeriesRead:
    """What the worker read of one series: a header per echo (first echo first).

    ``n_images`` is what the live service counts: frames, so an enhanced multi-frame
    file (Siemens XA, Philips) counts as its frames and the learnt protocol's expected
    counts match the live ones.
    """

    headers: tuple[dict[str, Any], ...]
    unreadable: tuple[Unreadable, ...]
    n_files: int
    n_images: int


@dataclass(frozen=True)
class ImportReport:
    """The outcome of one import."""

    n_files: int
    added: int
    skipped: int
    unreadable: tuple[Unreadable, ...] = field(default=())
    seconds: float = 0.0


def walk(paths: Iterable[str | os.PathLike[str]]) -> Iterator[str]:
    """Every regular file under ``paths`` (files are yielded as given), hidden
    entries (``.name``) skipped, each directory in name order."""
    for path in paths:
        path = os.fspath(path)
        if not os.path.isdir(path):
            yield path
            continue
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from walk([entry.path])
            elif entry.is_file():
                yield entry.path


def group(files: Iterable[str]) -> tuple[list[SeriesFiles], list[str]]:
    """Split files into series named by the scanner's file names, and the rest."""
    named: dict[tuple[str, int], list[tuple[int, str]]] = defaultdict(list)
    loose: list[str] = []
    for path in files:
        directory, name = os.path.split(path)
        if m := SCANNER_NAME.match(name):
            named[directory, int(m[1])].append((int(m[2]), path))
        else:
            loose.append(path)
    series = [
        SeriesFiles(d, n, tuple(p for _, p in sorted(items)))
        for (d, n), items in sorted(named.items())
    ]
    return series, loose


def _echo(header: dict[str, Any]) -> Any:
    return header.get("EchoNumber", NULL)


def read_series(files: Sequence[str]) -> SeriesRead:
    """Read one header per echo of a series whose files are in image order.

    Reads the first readable file, then the following ones while each shows a
    new echo number (echoes interleaved: e1 e2 e3 e1 ...), then the last file;
    if that shows an echo not yet seen, the echoes come in blocks, and the first
    file of each block is read. Single-echo series cost three reads at most.
    """
    headers: dict[Any, dict[str, Any]] = {}
    unreadable: list[Unreadable] = []
    done: set[int] = set()

    def read(i: int) -> dict[str, Any] | None:
        done.add(i)
        h = read_header(files[i])
        if isinstance(h, Unreadable):
            unreadable.append(h)
            return None
        headers.setdefault(_echo(h), h)
        return h

    first = next((i for i in range(len(files)) if read(i) is not None), None)
    if first is not None and NULL not in headers:
        # The file carries (0018,0086) EchoNumber: look for the other echoes.
        i = first + 1
        while i < len(files) and len(headers) < _MAX_ECHOES:
            before = len(headers)
            if read(i) is not None and len(headers) == before:
                break  # an echo came round again: all interleaved echoes seen
            i += 1
        last = len(files) - 1
        if last not in done and (h := read(last)) is not None:
            n_echoes = _echo(h)
            if isinstance(n_echoes, int) and n_echoes > len(headers):
                for k in range(1, n_echoes):
                    j = k * len(files) // n_echoes
                    if j not in done:
                        read(j)
    # The files of one series hold alike numbers of frames (one volume, or one slice, each).
    frames = frames_of(next(iter(headers.values()))) if headers else 1
    return SeriesRead(_by_echo(headers.values()), tuple(unreadable), len(files), len(files) * frames)


def _order(value: Any) -> tuple[bool, Any]:
    """Sort key putting ints in order and "null" after them."""
    return (not isinstance(value, int), value if isinstance(value, int) else str(value))


def _by_echo(headers: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """One header per echo number, the lowest InstanceNumber of each, first echo first."""
    echoes: dict[Any, dict[str, Any]] = {}
    for h in sorted(headers, key=lambda h: _order(h.get("InstanceNumber"))):
        echoes.setdefault(_echo(h), h)
    return tuple(echoes[e] for e in sorted(echoes, key=_order))


def _ignore_sigint() -> None:
    # Ctrl-C is the main process's to handle: it stops submitting, lets the
    # running chunks finish, and keeps what it committed (a re-run resumes).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _read_chunk(chunk: Sequence[Sequence[str]]) -> list[SeriesRead]:
    return [read_series(files) for files in chunk]


def _read_loose(paths: Sequence[str]) -> list[dict[str, Any] | Unreadable]:
    return [read_header(p) for p in paths]


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _group_loose(
    items: Iterable[tuple[str, dict[str, Any] | Unreadable]],
) -> tuple[list[tuple[str, SeriesRead]], list[Unreadable]]:
    """Series of files without scanner names, grouped by the header's SeriesUID,
    each with the directory of its first file. Keeps one header per echo, not
    every header: an archive of loose files can hold millions."""
    found: dict[str, tuple[str, tuple[dict[str, Any], ...], int, int]] = {}
    unreadable = []
    for path, h in items:
        if isinstance(h, Unreadable):
            unreadable.append(h)
            continue
        uid = h.get("SeriesUID", NULL)
        key = uid if uid != NULL else path
        directory, headers, n, images = found.get(key, (os.path.dirname(path), (), 0, 0))
        found[key] = (directory, _by_echo((*headers, h)), n + 1, images + frames_of(h))
    series = [(d, SeriesRead(headers, (), n, images)) for d, headers, n, images in found.values()]
    return series, unreadable


def _record(store: Store, read: SeriesRead, directory: str) -> bool | None:
    """Record one series; True if new, False if already there, None if unreadable."""
    if not read.headers:
        return None
    header = read.headers[0]
    study = header.get("StudyUID", NULL)
    tes = [h["TE"] for h in read.headers if isinstance(h.get("TE"), (int, float))]
    return store.record_series(
        header, n_files=read.n_images, source="import",
        session=directory if study == NULL else None,
        echo_times=tes if len(read.headers) > 1 else (),
    )


def import_paths(
    paths: Iterable[str | os.PathLike[str]],
    store: Store,
    *,
    executor: Executor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import every DICOM series under ``paths`` into ``store``.

    ``executor`` reads the headers (default: a process pool with one worker per
    core). ``progress(done_files, total_files)`` is called as series complete.
    Files that cannot be read are reported, never raised; sqlite errors propagate.
    """
    start = time.perf_counter()
    series, loose = group(walk(paths))
    total = sum(len(s.files) for s in series) + len(loose)
    own = executor is None
    pool = ProcessPoolExecutor(os.cpu_count(), initializer=_ignore_sigint) if own else executor
    added = skipped = done = 0
    unreadable: list[Unreadable] = []

    def tally(outcome: bool | None) -> None:
        nonlocal added, skipped
        if outcome is True:
            added += 1
        elif outcome is False:
            skipped += 1

    try:
        chunks = _chunks(series, _CHUNK)
        results = pool.map(_read_chunk, [[s.files for s in c] for c in chunks])
        loose_chunks = _chunks(loose, _CHUNK * 4)
        loose_results = pool.map(_read_loose, loose_chunks)
        for chunk, reads in zip(chunks, results):
            with store.batch():  # one commit per chunk, short enough for the live service
                for s, read in zip(chunk, reads):
                    unreadable.extend(read.unreadable)
                    tally(_record(store, read, s.directory))
                    done += read.n_files
            if progress:
                progress(done, total)
        loose_series, loose_bad = _group_loose(
            zip(loose, itertools.chain.from_iterable(loose_results))
        )
        unreadable.extend(loose_bad)
        for part in _chunks(loose_series, _CHUNK):
            with store.batch():
                for directory, read in part:
                    tally(_record(store, read, directory))
        if progress and loose:
            progress(total, total)
    finally:
        if own:
            pool.shutdown(cancel_futures=True)
    return ImportReport(total, added, skipped, tuple(unreadable), time.perf_counter() - start)
