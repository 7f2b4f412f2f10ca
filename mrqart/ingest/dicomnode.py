"""A DICOM node (C-STORE SCP): images sent over the network become files in the
receive directory that the watcher follows, so the rest of the pipeline (session
task, store, restart catch-up, archive) treats them exactly like the share's.

    scanner ─C-STORE─► association thread (pynetdicom) ─trio.from_thread─► DicomNode._keep
        (trio: wait for room in the pipeline, then a worker thread writes the file
         atomically) ─status─► scanner

Layout: ``<receive dir>/<StudyInstanceUID>/001_<series>_<instance>.dcm``, the scanner
export's names (``mrqart.live.session.series_from_name`` reads the series from them);
an instance without numbers is ``MR.<SOPInstanceUID>``. A file appears only by
``rename`` of a fully written, fsynced hidden temp file (``.<name>.<random>.part``,
which the watcher skips), so no reader ever sees half of one, even after kill -9;
temp files left by a killed process are removed at the next start.

Threads: pynetdicom runs each association in its own thread. The C-STORE handler
reaches trio only through ``trio.from_thread.run`` with the token captured when the
node started; it blocks (and the scanner with it) until the file is written or known
not to be: backpressure, never a drop. A file that cannot be written gets a failure
status (0xA700 disk full or shutting down, 0xC000 otherwise), never success, and the
scanner sends it again.

Who may send: ``allow`` entries (see :func:`parse_allow`); without any, only a node
bound to loopback accepts everyone. Others are rejected at association time
(A-ASSOCIATE-RJ, "calling AE title not recognised").
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import trio
from pydicom.filereader import read_dataset
from pynetdicom import AE, evt
from pynetdicom import sop_class as sop

log = logging.getLogger(__name__)

#: Status codes of a C-STORE response (PS3.4 Annex B.2.3).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # disk full, or the node is shutting down: retry later
STATUS_CANNOT_STORE = 0xC000  # any other write error (read-only, a file in the way)

#: The MR storage SOP classes (PS3.4 B.5) and Verification (C-ECHO).
MR_STORAGE = (
    sop.MRImageStorage,
    sop.EnhancedMRImageStorage,
    sop.EnhancedMRColorImageStorage,
    sop.LegacyConvertedEnhancedMRImageStorage,
    sop.MRSpectroscopyStorage,
)
#: Transfer syntaxes whose data set is little endian and not deflated, i.e. those
#: mrqart.headers reads (pixel compression does not matter: headers come first).
#: Big endian and deflated are left out on purpose: an SCU must also offer implicit
#: VR little endian, so it falls back to an encoding we can read.
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",  # implicit VR little endian (the default every SCU offers)
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.4.70",  # JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.5",  # RLE lossless
)
#: Files written at once (worker threads); a handful of parallel associations.
WRITERS = 4
#: How long a shutdown lets running associations finish before aborting them.
DRAIN_SECONDS = 5.0
#: How long the first file of a new study directory waits for the watcher's watch on it
#: (a few ms), and how often it looks. Without the wait the watcher finds the file by
#: scanning the new directory and holds it back a second (watcher.SETTLE_S) in case it
#: is still being written; with it, the file's rename is an event and goes out at once.
WATCH_WAIT_SECONDS = 1.0
WATCH_POLL_SECONDS = 0.001

# (0020,000D) StudyInstanceUID / (0008,0018) SOPInstanceUID: digits and dots, 64 at most.
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_LAST_TAG = 0x00200013  # (0020,0013) InstanceNumber: the last element the name needs
_TEMP_SUFFIX = ".part"


# -- who may send ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Allow:
    """One allow-list entry: an AE title, a peer address (or network), or both."""

    ae_title: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    def admits(self, ae_title: str, address: str) -> bool:
        if self.ae_title is not None and self.ae_title != ae_title:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(address) in self.network
            except ValueError:  # not an IP address (a Unix socket): never in a network
                return False
        return True


def parse_allow(items: Iterable[str]) -> tuple[Allow, ...]:
    """``["SCANNER1", "10.0.0.0/24", "SCANNER2@10.1.2.3"]`` -> allow entries.

    An entry is an address or network (``10.0.0.5``, ``10.0.0.0/24``, ``::1``), an AE
    title, or ``AE@ADDRESS`` (both must match). Items may hold several entries
    separated by commas. ValueError for an AE title longer than 16 characters and for
    ``AE@`` followed by anything but an IP address or network.
    """
    entries = []
    for item in items:
        for text in filter(None, (t.strip() for t in item.split(","))):
            ae, at, address = text.rpartition("@")
            if not at:
                ae, address = "", text
            network = _network(address)
            if network is None and at:
                raise ValueError(f"--dicom-allow {text!r}: {address!r} is not an IP address "
                                 "or network (host names are not looked up)")
            if network is None:  # not an address: an AE title
                ae = text
            if len(ae) > 16:
                raise ValueError(f"--dicom-allow {text!r}: an AE title has at most 16 characters")
            entries.append(Allow(ae or None, network))
    return tuple(entries)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- one received instance -> one file -------------------------------------------
@dataclass(frozen=True, slots=True)
class Instance:
    """Where one received instance goes (``study``/``name``) and its bytes (Part 10)."""

    study: str
    name: str
    data: bytes


def file_name(series: Any, instance: Any, sop_uid: Any) -> str:
    """The scanner export's name for an instance: ``001_<series>_<instance>.dcm``;
    ``MR.<SOPInstanceUID>`` when the numbers are missing or not numbers."""
    try:
        s, i = int(series), int(instance)
    except (TypeError, ValueError):
        s = i = -1
    if s >= 0 and i >= 0:
        return f"001_{s:06d}_{i:06d}.dcm"
    uid = str(sop_uid or "")
    return f"MR.{uid}" if _is_uid(uid) else f"MR.unknown-{secrets.token_hex(8)}"


def study_dir(study_uid: Any) -> str:
    """The sub-directory for a study: its UID, or ``unknown-study`` if it has none."""
    uid = str(study_uid or "")
    return uid if _is_uid(uid) else "unknown-study"


def _is_uid(text: str) -> bool:
    return len(text) <= 64 and _UID.fullmatch(text) is not None


def identify(dataset: BytesIO, implicit_vr: bool, sop_uid: str) -> tuple[str, str]:
    """(study directory, file name) from the first elements of an encoded data set.

    Reads only up to (0020,0013) InstanceNumber; never raises for odd values (an
    unreadable or missing one gives the fallback names).
    """
    dataset.seek(0)
    ds = read_dataset(dataset, implicit_vr, True, stop_when=lambda tag, vr, n: tag > _LAST_TAG)
    values = []
    for keyword in ("StudyInstanceUID", "SeriesNumber", "InstanceNumber"):
        try:
            values.append(ds.get(keyword))
        except (ValueError, TypeError, KeyError):  # a malformed value: pydicom's conversion
            values.append(None)
    return study_dir(values[0]), file_name(values[1], values[2], sop_uid)


def write_atomically(receive_dir: Path, instance: Instance) -> Path:
    """Write ``instance`` as ``receive_dir/study/name``: a temp file in the same
    directory, fsync, rename, fsync of the directory. Blocking; raises OSError.

    A file already there (the scanner sent the instance again) is replaced whole.
    """
    directory = receive_dir / instance.study
    directory.mkdir(exist_ok=True)  # FileExistsError if a file stands in the way
    final = directory / instance.name
    temp = directory / f".{instance.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(instance.data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temp, final)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself must survive a power cut before the scanner hears "stored".
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return final


def remove_stale_temps(receive_dir: Path) -> int:
    """Delete the temp files a killed process left (they never become files). Blocking."""
    removed = 0
    for directory in (receive_dir, *(p for p in receive_dir.iterdir() if p.is_dir())):
        for path in directory.glob(f".*{_TEMP_SUFFIX}"):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


# -- the node -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DicomNodeStatistics:
    """associations: accepted so far; refused: rejected by the allow-list; active: open
    now; stored: instances written; failed: instances answered with a failure status;
    waiting: C-STOREs waiting for room in the pipeline now."""

    associations: int
    refused: int
    active: int
    stored: int
    failed: int
    waiting: int


@dataclass(slots=True)
class _Association:
    calling_ae: str
    peer: str
    started: float
    stored: int = 0
    failed: int = 0
    refused: bool = False


@dataclass
class DicomNode:
    """A Storage SCP for MR images writing into ``receive_dir`` (created if missing).

    ``room``, when given, is awaited before each write and returns once the pipeline
    can take another file (backpressure: the C-STORE, and the scanner, wait).
    ``watched(directory)``, when given, tells whether the watcher follows a directory
    yet: a new study directory is made first and its first file waits for the watch.
    ``port`` 0 picks a free port; ``run`` reports the bound one.
    """

    receive_dir: Path
    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "MRQART"
    allow: tuple[Allow, ...] = ()
    room: Callable[[], Awaitable[None]] | None = None
    watched: Callable[[Path], bool] | None = None
    watch_wait: float = WATCH_WAIT_SECONDS
    drain_seconds: float = DRAIN_SECONDS
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.allow and not is_loopback(self.host):
            raise ValueError(
                f"the DICOM node listens on {self.host}, not only on loopback: name the "
                "scanners that may send with --dicom-allow (AE titles and/or addresses)"
            )
        self._token: trio.lowlevel.TrioToken | None = None
        self._writers = trio.CapacityLimiter(WRITERS)
        self._associations: dict[int, _Association] = {}
        self._inflight: set[trio.CancelScope] = set()
        self._closing = False
        self._write_failing = False
        self._n_associations = self._refused = self._stored = self._failed = self._waiting = 0

    def statistics(self) -> DicomNodeStatistics:
        with self._lock:
            return DicomNodeStatistics(
                associations=self._n_associations, refused=self._refused,
                active=len(self._associations), stored=self._stored, failed=self._failed,
                waiting=self._waiting,
            )

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ``task_status.started(port)`` once listening.

        Owns the pynetdicom server and its threads. On cancellation (SIGTERM) it stops
        accepting at once, lets running associations finish for up to
        ``drain_seconds``, then aborts the rest; a C-STORE still waiting is answered
        0xA700 (the scanner sends it again later).
        """
        self._token = trio.lowlevel.current_trio_token()
        await trio.to_thread.run_sync(lambda: self.receive_dir.mkdir(parents=True, exist_ok=True))
        if stale := await trio.to_thread.run_sync(remove_stale_temps, self.receive_dir):
            log.info("removed %d partial files left by an earlier run", stale)
        server = await trio.to_thread.run_sync(self._start_server)
        port = server.server_address[1]
        log.info("DICOM node %r listening on %s port %d, writing into %s",
                 self.ae_title, self.host, port, self.receive_dir)
        try:
            task_status.started(port)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self._drain(server)

    def _start_server(self) -> Any:
        ae = AE(ae_title=self.ae_title)
        for uid in MR_STORAGE:
            ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(sop.Verification)
        # pynetdicom logs every request at INFO; ours is one line per association.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        return ae.start_server(
            (self.host, self.port), block=False,
            evt_handlers=[
                (evt.EVT_REQUESTED, self._on_requested),
                (evt.EVT_C_STORE, self._on_store),
                (evt.EVT_CONN_CLOSE, self._on_close),
            ],
        )

    async def _drain(self, server: Any) -> None:
        self._closing = True
        await trio.to_thread.run_sync(server.shutdown)  # no new associations from here on
        deadline = time.monotonic() + self.drain_seconds

        def join(threads: list[threading.Thread]) -> None:
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))

        # The worker waits on threads that may call back into trio: trio keeps running.
        running = server.active_associations
        log.info("DICOM node closed its port; waiting for %d running associations", len(running))
        await trio.to_thread.run_sync(join, running)
        late = [a for a in running if a.is_alive()]
        if late:
            log.warning("shutdown: aborting %d associations still running after %.0f s",
                        len(late), self.drain_seconds)
            for scope in list(self._inflight):
                scope.cancel()
            for assoc in late:
                assoc.abort(block=False)
            deadline = time.monotonic() + 1.0
            await trio.to_thread.run_sync(join, late)

    # -- pynetdicom handlers: these run in association threads ------------------------
    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        peer = assoc.requestor.address
        record = _Association(calling, peer, time.monotonic())
        admitted = not self.allow or any(a.admits(calling, peer) for a in self.allow)
        with self._lock:
            self._associations[id(assoc)] = record
            if admitted:
                self._n_associations += 1
            else:
                self._refused += 1
                record.refused = True
        if not admitted:
            # A-ASSOCIATE-RJ: rejected permanent, by the service user, calling AE not recognised
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            assoc.kill()  # waits until the DUL has sent the reject, as pynetdicom's own do

    def _on_store(self, event: Any) -> int:
        request = event.request
        try:
            study, name = identify(request.DataSet, event.context.transfer_syntax.is_implicit_VR,
                                   request.AffectedSOPInstanceUID)
        except (EOFError, ValueError, OSError) as error:  # a data set pydicom cannot walk
            log.warning("C-STORE: data set not parsed (%s); kept under a fallback name", error)
            study, name = study_dir(None), file_name(None, None, request.AffectedSOPInstanceUID)
        instance = Instance(study, name, event.encoded_dataset())
        try:
            status = trio.from_thread.run(self._keep, instance, trio_token=self._token)
        except trio.RunFinishedError:  # the process is ending
            status = STATUS_OUT_OF_RESOURCES
        with self._lock:
            record = self._associations.get(id(event.assoc))
            if status == STATUS_SUCCESS:
                self._stored += 1
                if record:
                    record.stored += 1
            else:
                self._failed += 1
                if record:
                    record.failed += 1
        return status

    def _on_close(self, event: Any) -> None:
        with self._lock:
            record = self._associations.pop(id(event.assoc), None)
        if record is None:
            return  # logged already (a connection reports its close more than once)
        seconds = time.monotonic() - record.started
        if record.refused:
            log.warning("refused association from AE %r at %s (not in --dicom-allow)",
                        record.calling_ae, record.peer)
        else:
            log.info("association from AE %r at %s: %d instances stored, %d failed, %.1f s",
                     record.calling_ae, record.peer, record.stored, record.failed, seconds)

    # -- the trio side ----------------------------------------------------------------
    async def _keep(self, instance: Instance) -> int:
        """Wait for room in the pipeline, then write the file; the C-STORE status.

        Runs in trio (called from an association thread). Cancelled only by a
        shutdown that ran out of time: 0xA700, the scanner retries.
        """
        status = STATUS_OUT_OF_RESOURCES
        with trio.CancelScope() as scope:
            self._inflight.add(scope)
            try:
                if self.room is not None:
                    with self._lock:
                        self._waiting += 1
                    try:
                        await self.room()
                    finally:
                        with self._lock:
                            self._waiting -= 1
                directory = self.receive_dir / instance.study
                if self.watched is not None and not self.watched(directory):
                    await self._until_watched(directory)
                await trio.to_thread.run_sync(
                    write_atomically, self.receive_dir, instance, limiter=self._writers
                )
                status = STATUS_SUCCESS
            except OSError as error:
                status = self._write_failed(error)
            finally:
                self._inflight.discard(scope)
        if status == STATUS_SUCCESS and self._write_failing:
            log.warning("DICOM node: writing into %s works again", self.receive_dir)
            self._write_failing = False
        return status

    async def _until_watched(self, directory: Path) -> None:
        """Make ``directory`` and wait (``watch_wait`` seconds at most) for its watch."""
        assert self.watched is not None
        await trio.to_thread.run_sync(lambda: directory.mkdir(exist_ok=True),
                                      limiter=self._writers)
        with trio.move_on_after(self.watch_wait):
            while not self.watched(directory):
                await trio.sleep(WATCH_POLL_SECONDS)

    def _write_failed(self, error: OSError) -> int:
        if not self._write_failing:
            log.error("DICOM node cannot write into %s, answering failure until it can: %s",
                      self.receive_dir, error)
            self._write_failing = True
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return STATUS_OUT_OF_RESOURCES
        return STATUS_CANNOT_STORE
