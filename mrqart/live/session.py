"""Per-station session state: is this file a new series, or another file of one we know?

Pure: no trio, no I/O. The session task (``service.py``) asks :meth:`SessionState.route`
what a file needs, reads a header only when told to, and feeds the answers back. The
web routes read the JSON views; everything runs on the one trio thread, so a view is
never seen half-updated.

A series is keyed by (StudyInstanceUID, SeriesNumber). The scanner names files
``001_<series>_<image>.dcm`` inside one directory per session, so once the first
header of a directory has told us its StudyUID, the name alone says which series a
file belongs to and no further header is read for that series. Other names (GE's
``i100220.MRDC.146``, Philips' ``IM_0027``, XA exports) need a header read per file;
after the first, the series is found by its SeriesInstanceUID. Counts are frames: an
enhanced multi-frame file (Siemens XA, Philips) counts as its number of frames.
"""

from __future__ import annotations

import os.path
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mrqart.headers import frames_of

# 001_000017_000066.dcm: <acquisition>_<series>_<image>; some exports add no extension.
SCANNER_NAME = re.compile(r"^\d+_(\d+)_(\d+)(?:\.\w+)?$")

#: Series kept per station; older ones are forgotten (the store still has them).
MAX_SERIES_PER_STATION = 200
#: Session directories remembered (directory -> StudyUID); enough for weeks of sessions.
MAX_DIRS = 1000
#: SeriesInstanceUIDs remembered (uid -> series key): more than the stations' series.
MAX_SERIES_UIDS = 10_000


def series_from_name(path: str) -> int | None:
    """The series number a scanner file name carries, or None when the name does not tell."""
    m = SCANNER_NAME.match(os.path.basename(path))
    return int(m.group(1)) if m else None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def series_key(study_uid: str, series_number: Any) -> str:
    """The string that names a series on the wire and in the state."""
    return f"{study_uid}:{series_number}"


@dataclass(frozen=True, slots=True)
class Known:
    """The file belongs to a series we know: no header read needed."""

    key: str


@dataclass(frozen=True, slots=True)
class NeedHeader:
    """The name does not tell us the series (or it is new): read the header."""


class FileSet:
    """The distinct files of one series, kept small for weeks of uptime: a scanner-named
    file (``001_<series>_<image>``) is one bit at its image number, any other name is
    kept as a string. 1,000 images cost 125 bytes instead of ~100 KB of names."""

    __slots__ = ("_bits", "_count", "_names")
    #: Image numbers past this are kept as names (no megabyte bitmap for an odd number).
    MAX_IMAGE = 1 << 20

    def __init__(self) -> None:
        self._bits = bytearray()
        self._names: set[str] = set()
        self._count = 0

    def add(self, name: str, frames: int = 1) -> bool:
        """Add a file name holding `frames` images; False if it was there already."""
        m = SCANNER_NAME.match(name)
        if m and (image := int(m.group(2))) < self.MAX_IMAGE:
            byte, bit = divmod(image, 8)
            if byte >= len(self._bits):
                self._bits.extend(bytes(byte + 1 - len(self._bits)))
            if self._bits[byte] >> bit & 1:
                return False
            self._bits[byte] |= 1 << bit
        elif name in self._names:
            return False
        else:
            self._names.add(name)
        self._count += max(1, frames)
        return True

    def __len__(self) -> int:
        return self._count


@dataclass(slots=True)
class Series:
    key: str
    station: str
    session: str
    series_number: Any
    sequence_name: str
    result: dict[str, Any]  # the CheckResult
    first_seen: float
    files: FileSet = field(default_factory=lambda: FileSet())
    restored_count: int = 0  # count from the store before a restart; counts never go back
    last_seen: float = 0.0

    @property
    def n_files(self) -> int:
        return max(len(self.files), self.restored_count)

    def view(self) -> dict[str, Any]:
        return {
            "series": self.key,
            "station": self.station,
            "session": self.session,
            "series_number": self.series_number,
            "sequence_name": self.sequence_name,
            "n_files": self.n_files,
            "status": self.result.get("status"),
            "content": self.result,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
        }


class SessionState:
    """All stations' series of the current run, newest last."""

    def __init__(self) -> None:
        self._series: dict[str, Series] = {}
        self._by_station: dict[str, OrderedDict[str, None]] = {}
        self._dirs: OrderedDict[str, str] = OrderedDict()
        self._uids: OrderedDict[str, str] = OrderedDict()  # SeriesInstanceUID -> key
        self._dirty: set[str] = set()

    # -- the per-file decision ------------------------------------------------
    def route(self, path: str) -> Known | NeedHeader:
        """Say whether ``path`` joins a known series (from its name alone) or needs a header."""
        number = series_from_name(path)
        study = self._dirs.get(os.path.dirname(path))
        if number is None or study is None:
            return NeedHeader()
        key = series_key(study, number)
        return Known(key) if key in self._series else NeedHeader()

    def key_for(self, path: str, header: dict[str, Any]) -> str:
        """The series key of a file whose header was read; remembers its directory."""
        study = str(header.get("StudyUID", "null"))
        if study == "null":
            # No StudyUID (rare, non-conformant export): the directory stands for the session.
            study = os.path.dirname(path)
        self._remember_dir(os.path.dirname(path), study)
        number = series_from_name(path)
        uid = header.get("SeriesUID")
        if number is None and isinstance(uid, str) and uid in self._uids:
            return self._uids[uid]  # a file whose name does not tell: its series by UID
        key = series_key(study, header.get("SeriesNumber") if number is None else number)
        if isinstance(uid, str) and uid != "null":
            self._uids[uid] = key
            self._uids.move_to_end(uid)
            while len(self._uids) > MAX_SERIES_UIDS:
                self._uids.popitem(last=False)
        return key

    def knows(self, key: str) -> bool:
        return key in self._series

    def add_series(
        self, key: str, header: dict[str, Any], result: dict[str, Any], path: str, now: float
    ) -> Series:
        """Start a series from its first file's header and verdict."""
        station = str(header.get("Station", "null"))
        session = key.rsplit(":", 1)[0]
        series = Series(
            key=key, station=station, session=session,
            series_number=header.get("SeriesNumber"),
            sequence_name=str(header.get("SequenceName", "null")),
            result=result, first_seen=now, last_seen=now,
        )
        series.files.add(os.path.basename(path), frames_of(header))
        self._insert(series)
        return series

    def add_file(self, key: str, path: str, now: float, frames: int = 1) -> int | None:
        """Count another file (of `frames` images) of a known series; the new count, or
        None for a file seen before."""
        series = self._series[key]
        before = series.n_files
        series.files.add(os.path.basename(path), frames)
        series.last_seen = now
        if series.n_files == before:
            return None
        self._dirty.add(key)
        return series.n_files

    def restore(self, rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
        """Bring back series recorded by an earlier run (oldest first) with their verdicts."""
        for row, result in zip(rows, results, strict=True):
            header = row["header"]
            key = series_key(row["session"], header.get("SeriesNumber"))
            if key in self._series:
                continue
            when = float(row.get("first_seen") or 0.0)
            series = Series(
                key=key, station=str(row["station"]), session=row["session"],
                series_number=header.get("SeriesNumber"),
                sequence_name=str(header.get("SequenceName", "null")),
                result=result, first_seen=when, last_seen=when,
                restored_count=int(row["n_files"]),
            )
            self._insert(series)

    # -- store bookkeeping ----------------------------------------------------
    def take_dirty(self) -> list[Series]:
        """Series whose file count changed since the last call (to write to the store)."""
        dirty = [self._series[k] for k in self._dirty if k in self._series]
        self._dirty.clear()
        return dirty

    def dirty_count(self) -> int:
        """Series waiting to be written to the store."""
        return len(self._dirty)

    def mark_dirty(self, keys: Iterable[str]) -> None:
        """Have these series written again at the next flush (the last write failed)."""
        self._dirty.update(k for k in keys if k in self._series)

    # -- views for the web routes (fresh JSON-native copies) --------------------
    def get(self, key: str) -> Series:
        return self._series[key]

    def stations(self) -> list[dict[str, Any]]:
        out = []
        for station, keys in self._by_station.items():
            newest = self._series[next(reversed(keys))]
            out.append(
                {"station": station, "n_series": len(keys), "last_seen": _iso(newest.last_seen)}
            )
        return out

    def series_of(self, station: str) -> list[dict[str, Any]] | None:
        """The station's series, newest first; None for a station we have never seen."""
        keys = self._by_station.get(station)
        if keys is None:
            return None
        return [self._series[k].view() for k in reversed(keys)]

    def latest(self) -> dict[str, dict[str, Any]]:
        """The original's ``/state``: each station's newest series."""
        return {
            station: {"station": station, "content": self._series[next(reversed(keys))].result}
            for station, keys in self._by_station.items()
        }

    # -- internals --------------------------------------------------------------
    def _insert(self, series: Series) -> None:
        self._series[series.key] = series
        keys = self._by_station.setdefault(series.station, OrderedDict())
        keys[series.key] = None
        while len(keys) > MAX_SERIES_PER_STATION:
            old, _ = keys.popitem(last=False)
            del self._series[old]
            self._dirty.discard(old)

    def _remember_dir(self, directory: str, study: str) -> None:
        self._dirs[directory] = study
        self._dirs.move_to_end(directory)
        while len(self._dirs) > MAX_DIRS:
            self._dirs.popitem(last=False)
