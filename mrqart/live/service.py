"""The pipeline and the root nursery.

    watcher ─FileReady─► session task ─Message─► hub ─► browsers (/ws)
                              │
                              └─► store (worker thread, one at a time)

:class:`Pipeline` is written once and started by both entry points: :func:`run_service`
(``python -m mrqart DIR``: one nursery supervises the pipeline and hypercorn on one port)
and :func:`app_from_env` (``hypercorn --worker-class trio 'mrqart.live.service:app_from_env()'``:
the app's lifespan starts the pipeline in the app's nursery). If any task fails, its
nursery cancels the rest and the error propagates.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart_trio import QuartTrio

from mrqart.config import Config, default_db, default_outbox, prepare_db
from mrqart.headers import Unreadable, frames_of, read_header
from mrqart.ingest.watcher import FileReady, Watcher
from mrqart.live import shared
from mrqart.live.access import Guard
from mrqart.live.auth import exposure_error
from mrqart.live.hub import Hub, Message, coalesce, receive_batches
from mrqart.live.session import Known, Series, SessionState
from mrqart.live.templates import TEMPLATE_REFRESH_S, TemplateCache, key_of
from mrqart.live.web import MAX_WS_MESSAGE, create_app
from mrqart.report import Period, load_exclusions, pages
from mrqart.rules.check import DEFAULT_RULES, check, load_rules
from mrqart.rules.compliance import Compliance
from mrqart.rules.protocol import FINISHED_AFTER_MINUTES, Alert, Protocol
from mrqart.rules.templates import accepted_result, announce_software_change, software_change, votes
from mrqart.store import (
    PROTOCOLS,
    TEMPLATES,
    database_errors,
    is_postgres,
    open_store,
)
from mrqart.store import BaseStore as Store
from mrqart.store.outbox import Outbox, OutboxFull

if TYPE_CHECKING:
    from mrqart.ingest.dicomnode import DicomNode

log = logging.getLogger("mrqart")
T = TypeVar("T")

#: Files the watcher may get ahead of the session task. Small on purpose: the kernel
#: queue absorbs bursts and an overflow triggers a rescan, so nothing is lost by blocking.
FILE_BUFFER = 256
#: Messages the session task may get ahead of the hub; the hub never blocks, so this
#: only smooths scheduling.
MESSAGE_BUFFER = 256
#: Most files of a new series whose headers are read to learn its echo times. A
#: multi-echo series interleaves its echoes (image 1 echo 1, image 2 echo 2, ...), so
#: the probe ends as soon as an echo number comes round again: one extra read for a
#: single-echo series.
ECHO_PROBE_FILES = 8
#: Files of a new series read before a repeated echo ends the probe: a burst reordered by
#: the watcher can deliver echo 1 twice before echo 2 (two extra reads per single-echo
#: series, once per series).
ECHO_PROBE_MIN_FILES = 3
#: Longest the live path waits for a store read (once per station x sequence: the
#: software of its last series); past it the verdict goes out without that note.
STORE_PATIENCE = 0.25
#: Series probed at once; older probes are dropped (a series that ended after one file).
MAX_ECHO_PROBES = 64
#: How often a C-STORE waiting for room looks again at the session task's backlog.
ROOM_POLL_SECONDS = 0.005


def _made_today(directory: str) -> bool:
    """Catch-up policy: a session directory modified today may hold files we missed."""
    try:
        return date.fromtimestamp(os.stat(directory).st_mtime) == date.today()
    except FileNotFoundError:
        return False


@dataclass
class Pipeline:
    """Watcher, session task, hub and store of one process, wired together.

    The web routes read ``state`` and subscribe to ``hub``; ``run`` owns the rest.
    """

    config: Config
    source: Any = None  # an inotify event source; None for the real kernel one
    open_store: Callable[[Path | str], Store] = open_store  # tests pass a failing store here
    state: SessionState = field(default_factory=SessionState)
    hub: Hub = field(default_factory=Hub)

    def __post_init__(self) -> None:
        self.rules = load_rules(self.config.rules) if self.config.rules else DEFAULT_RULES
        self.watcher = Watcher(
            [str(r) for r in self.config.watch_roots], source=self.source,
            pattern=self.config.pattern,
            catch_up=_made_today if self.config.catch_up else None,
            on_roots=self._roots_changed,
        )
        self.store: Store | None = None
        self._sqlite = trio.CapacityLimiter(1)  # sqlite: one writer, one thread at a time
        self._readers = trio.CapacityLimiter(1)  # the session task reads one header at a time
        self._report_limiter = trio.CapacityLimiter(1)  # report pages: one at a time
        self.reach = shared.Reachability()
        # A remote (PostgreSQL) store: the live path never writes to it; the flush task
        # keeps its writes in the outbox on local disk first (see run, _flush).
        self.outbox: Outbox | None = None
        self._pending: dict[str, tuple[str, str, dict[str, Any]]] = {}  # acknowledgements
        self._projects: set[str] = set()  # of the sessions followed, for pinned protocols
        self.db_stations: list[dict[str, Any]] = []  # every station in it (--all-stations)
        self.compliance = Compliance(self.config.finish_minutes)
        self._echo_probe: dict[str, dict[Any, Any]] = {}  # series key -> {EchoNumber: TE}
        # The live path never waits on the store: verdicts use this cache, and new series
        # (with their echo times) are written by the flush task, woken by _record.
        self.templates = TemplateCache()
        self._echo_times: dict[str, list[float]] = {}  # series key -> echo times to record
        self._wake_flush = trio.Event()
        self._learnt: set[tuple[str, str]] = set()  # templates new series may have changed
        self._writing = 0  # series in the store's hands now
        self.files_seen = 0
        self.unreadable = 0
        self.changes_heard = 0  # change notifications from other processes
        self._files_in: trio.MemoryReceiveChannel[FileReady] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. Started once the watches are in place and today's state is back.

        Owns the store (closed on exit) and both channels; backpressure is blocking
        sends from the watcher down, the hub never blocks on a browser.
        """
        # nibabel (~0.3 s to import) reads old CSA1 headers; import it now, not on the
        # first file from such a scanner.
        await trio.to_thread.run_sync(importlib.import_module, "nibabel.nicom.csareader")
        remote = is_postgres(str(self.config.db))
        if remote:  # its server may be away: the store connects in the background
            self.open_store = partial(self.open_store, wait=False)
            self.outbox = await trio.to_thread.run_sync(Outbox, self.config.outbox or default_outbox(
                self.config.db, self.config.roots))
        self.store = await trio.to_thread.run_sync(
            self.open_store, self.config.db, limiter=self._sqlite
        )
        try:
            if remote:
                await self._flush()  # what an earlier run could not write, first
            await self._load_templates()
            await self._restore_today()
            files_send, files_receive = trio.open_memory_channel[FileReady](FILE_BUFFER)
            messages_send, messages_receive = trio.open_memory_channel[Message](MESSAGE_BUFFER)
            self._files_in = files_receive
            async with trio.open_nursery() as nursery:
                await nursery.start(self.hub.run, messages_receive, name="hub")
                nursery.start_soon(self._session_task, files_receive, messages_send, name="session")
                nursery.start_soon(self._flush_task, name="flush")
                nursery.start_soon(self._quiet_task, messages_send.clone(), name="quiet")
                if remote:
                    nursery.start_soon(shared.follow_changes, self.store.changes,
                                       self._on_change, name="changes")
                if self.config.all_stations:
                    nursery.start_soon(shared.follow_stations, self.store, self._sqlite,
                                       partial(setattr, self, "db_stations"), name="stations")
                await nursery.start(self.watcher.run, files_send, name="watcher")
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self._flush()
                await trio.to_thread.run_sync(self.store.close, limiter=self._sqlite)
                if self.outbox is not None:
                    await trio.to_thread.run_sync(self.outbox.close)

    async def wait_for_room(self) -> None:
        """Return once the session task is not behind: its file channel is less than
        half full. The DICOM node's backpressure: a C-STORE (and the scanner) waits here
        rather than piling files into the kernel queue."""
        while (self._files_in is not None
               and self._files_in.statistics().current_buffer_used >= FILE_BUFFER // 2):
            await trio.sleep(ROOM_POLL_SECONDS)

    def _roots_changed(self, not_watching: dict[str, str]) -> None:
        """Tell every page which watched roots are gone, and since when."""
        self.hub.publish(Message(None, "watch", {"not_watching": not_watching}))

    def _database_changed(self) -> None:
        """Tell every page that the database stopped answering (and since when), or
        answers again: verdicts go on from the template cache either way."""
        self.hub.publish(Message(None, "database", self.reach.view()))

    def health(self) -> dict[str, Any]:
        return {
            "files_seen": self.files_seen,
            "unreadable": self.unreadable,
            "store_ok": self.reach.since is None,
            "store_pending": self.state.dirty_count() + self._writing,
            "changes_heard": self.changes_heard,
            "database": {**self.reach.view(), "pending": self._outbox_size()},
            "hub": asdict(self.hub.statistics()),
            "watcher": asdict(self.watcher.statistics()),
        }

    # -- the session task -------------------------------------------------------
    async def _session_task(
        self,
        files: trio.MemoryReceiveChannel[FileReady],
        messages: trio.MemorySendChannel[Message],
    ) -> None:
        """Turn each ready file into "new", "update", checklist and alert messages, in
        arrival order.

        Owns both channel ends; ends when the watcher closes its end or on cancellation.
        Reads a header only for a file the name cannot place (the first of a series).
        Files are taken in batches of what is waiting and each batch's counts are folded
        into one "update" per series (see hub.coalesce): no delay at low rates, far
        fewer messages in a burst.
        """
        async with files, messages:
            async for batch in receive_batches(files):
                out: list[Message] = []
                send_now = partial(_send_coalesced, messages, out)
                for ready in batch:
                    self.files_seen += 1
                    out += await self._on_file(ready.path, send_now, out)
                await send_now()

    async def _on_file(
        self, path: str, send_now: Callable[[], Awaitable[None]], out: list[Message]
    ) -> list[Message]:
        route = self.state.route(path)
        if isinstance(route, Known):
            if route.key in self._echo_probe:
                await self._probe_echo(route.key, path)
            return self._count(route.key, path)
        header = await trio.to_thread.run_sync(read_header, path, limiter=self._readers)
        if isinstance(header, Unreadable):
            self.unreadable += 1
            # %r: a name is data (a newline in it cannot forge a log line)
            log.warning("unreadable file %r: %r", header.path, header.reason)
            return [Message(None, "unreadable", {"path": header.path, "reason": header.reason})]
        key = self.state.key_for(path, header)
        if self.state.knows(key):
            return self._count(key, path, frames_of(header))
        result = check(header, self.templates.get(header), self.rules, live=True)
        if change := software_change(await self._previous_software(header),
                                     header.get("SoftwareVersions")):
            result = announce_software_change(result, change)
        series = self.state.add_series(key, header, result, path, time.time())
        # An enhanced multi-echo file carries all its echo times (header EchoTimes).
        times = header.get("EchoTimes") if isinstance(header.get("EchoTimes"), list) else []
        if len(times) > 1:
            self._echo_times[key] = times
        self.templates.learn(header, self._echo_times.get(key, ()))
        self._learnt.add(key_of(header))
        self._record(key)
        self._echo_probe[key] = {header.get("EchoNumber"): header.get("TE")}
        while len(self._echo_probe) > MAX_ECHO_PROBES:  # series that ended after one file
            del self._echo_probe[next(iter(self._echo_probe))]
        out.append(Message(series.station, "new", result, series=key))
        if self.compliance.session_of(series.station) != series.session:
            await send_now()  # a new session asks the store for its protocol: verdict first
        # a software upgrade is announced on the card, not alarmed field by field
        return await self._on_new_series(
            series.station, series.session, key, header,
            None if result["status"] == "software_changed" else result["errors"])

    async def _previous_software(self, header: dict[str, Any]) -> Any:
        """The software of the last series of this sequence on this station (a change is
        announced with the verdict): from memory, which every new series updates; the
        first time, from the store, waiting at most STORE_PATIENCE (a slow or locked
        store costs the note, never the verdict's time)."""
        known, previous = self.templates.previous_software(header)
        if not known:
            with trio.move_on_after(STORE_PATIENCE):
                previous = await self._store_call(lambda s: s.previous_software(header),
                                                  abandon=True)
        self.templates.saw_software(header)
        return previous

    def _record(self, key: str) -> None:
        """Have the flush task write this series now (the live path does not wait for it)."""
        self.state.mark_dirty([key])
        self._wake_flush.set()

    async def _probe_echo(self, key: str, path: str) -> None:
        """Learn a new series' echo times from its next files; once all are seen, record
        them so that the history holds the multi-echo parameter set."""
        echoes = self._echo_probe[key]
        header = await trio.to_thread.run_sync(read_header, path, limiter=self._readers)
        number = header.get("EchoNumber") if isinstance(header, dict) else None
        if number is not None and number not in echoes:
            echoes[number] = header.get("TE")
            if len(echoes) < ECHO_PROBE_FILES:
                return
        elif (_echo_gap(echoes) or self.state.get(key).n_files < ECHO_PROBE_MIN_FILES) \
                and self.state.get(key).n_files < 2 * ECHO_PROBE_FILES:
            # an echo is still on its way: the watcher may reorder a burst, so a repeated
            # echo among the first few files does not yet mean all echoes were seen
            return
        del self._echo_probe[key]
        times = [t for t in echoes.values() if isinstance(t, float)]
        if len(times) > 1:
            self._echo_times[key] = times
            self._record(key)

    def _count(self, key: str, path: str, frames: int = 1) -> list[Message]:
        n = self.state.add_file(key, path, time.time(), frames)
        if n is None:
            return []
        station = self.state.get(key).station
        messages = [Message(station, "update", n, series=key)]
        updated, resolved = self.compliance.on_count(station, key, n, trio.current_time())
        messages += [Message(station, "alert", self.compliance.alert_json(a)) for a in updated]
        messages += [Message(station, "resolved", {"id": a.id}) for a in resolved]
        if resolved:
            messages.append(Message(station, "checklist", self.compliance.view(station)))
        return messages

    # -- session-level compliance -------------------------------------------------
    async def _on_new_series(
        self, station: str, session: str, key: str, header: dict[str, Any],
        errors: dict[str, Any],
    ) -> list[Message]:
        """Place a new series on its station's checklist (a new session first learns its
        project's protocol); the alerts raised and the checklist to show.

        Session timing runs on trio's clock (quiet sessions are found by a sleeping
        task, and tests drive it with an autojump clock); the page shows wall time."""
        now = trio.current_time()
        alerts = []
        if self.compliance.session_of(station) != session:
            await self._flush()  # the last session's final counts teach the protocol
            project = str(header.get("Project"))
            self._projects.add(project)
            protocol = await self._store_call(
                lambda s: s.protocol(project, exclude=session), default=Protocol(project, ())
            )
            acks = await self._store_call(lambda s: s.acks(session), default={})
            alerts += self.compliance.start_session(station, session, protocol, now, acks)
        alerts += self.compliance.on_series(station, key, header, now, errors)
        return self._compliance_messages(station, alerts)

    def _compliance_messages(self, station: str, alerts: list[Alert]) -> list[Message]:
        for alert in alerts:
            log.warning("station %r: %r", station, alert.text)
        return [*(Message(station, "alert", self.compliance.alert_json(a)) for a in alerts),
                Message(station, "checklist", self.compliance.view(station))]

    async def _quiet_task(self, messages: trio.MemorySendChannel[Message]) -> None:
        """Finish sessions that went quiet; cancelled with the pipeline. Owns its clone
        of the message channel."""
        async with messages:
            while True:
                await trio.sleep(min(30.0, self.compliance.finish_minutes * 60 / 4))
                for station, alerts in self.compliance.finish_quiet(trio.current_time()).items():
                    for message in self._compliance_messages(station, alerts):
                        await messages.send(message)

    def checklist(self, station: str) -> dict[str, Any] | None:
        return self.compliance.view(station)

    async def acknowledge(self, alert_id: str, reason: str, by: str | None = None
                          ) -> dict[str, Any] | None:
        """Record an operator's (``by``) acknowledgement and show it on every page; None
        for an unknown alert. The store keeps it with the series history."""
        found = self.compliance.alert(alert_id)
        if found is None:
            return None
        station, alert = found
        at = datetime.now().astimezone().isoformat(timespec="seconds")
        if self.outbox is not None:  # written by the flush task, kept on disk until then
            self._pending[f"ack {alert_id}"] = (f"ack {alert_id}", "acknowledge", {
                "alert": alert.to_json(), "reason": reason, "at": at, "by": by})
        else:
            await self._store_call(lambda s: s.acknowledge(alert.to_json(), reason, at, by),
                                   write=True)
        self.compliance.acknowledge(alert_id, reason, at, by)
        ack = {"id": alert_id, "reason": reason, "at": at, "by": by}
        self.hub.publish(Message(station, "ack", ack))
        return ack

    async def pin_protocol(self, project: str, session: str | None,
                           by: str | None = None) -> dict[str, Any] | None:
        """Pin a session's series as the project's protocol (None: unpin), by ``by``; the
        stations now acquiring that project show the new checklist. None if the session
        is unknown."""
        assert self.store is not None

        def pin(store: Store) -> Protocol | None:
            if session is None:
                store.unpin_protocol(project)
            else:
                series = store.session_series(session)
                if not series:
                    return None
                store.pin_protocol(project, [{"sequence_name": name, "n_files": n}
                                             for name, n in series], by=by)
            return store.protocol(project)

        await self._flush()  # the session's latest file counts go into the pin
        # errors propagate: the operator asked for this write and must see it fail
        protocol = await trio.to_thread.run_sync(pin, self.store, limiter=self._sqlite)
        if protocol is None:
            return None
        for station in self.compliance.stations_of(project):
            self.compliance.set_protocol(station, protocol)
            self.hub.publish(Message(station, "checklist", self.compliance.view(station)))
        return protocol.to_json()

    async def accept_series(self, key: str, reason: str, by: str) -> dict[str, Any] | None:
        """Accept a series as intended (``by``: the person; the web route or the sign-in
        decides who): its parameter set becomes its template, later series compare
        against it, and every page shows its verdict as "accepted: <reason>" (a "new"
        message replacing the series) and the change (an "accepted" message). None when
        no such series is recorded. The store's error propagates: the person must see it."""
        session, _, number = key.rpartition(":")
        if not number.lstrip("-").isdigit():
            return None
        await self._flush()  # a series whose first record failed is written now
        assert self.store is not None
        try:
            change = await trio.to_thread.run_sync(
                partial(self.store.accept, session, int(number), reason=reason, by=by),
                limiter=self._sqlite)
        except LookupError:
            return None
        await self._load_templates()  # the accepted set is the template now
        station = change["station"]
        if self.state.knows(key):
            series = self.state.get(key)
            series.result = accepted_result(series.result, reason=reason, by=by,
                                            at=change["at"])
            station = series.station
            self.hub.publish(Message(station, "new", series.result, series=key))
        log.info("station %s: series %s accepted by %r: %r", station, key, by, reason)
        self.hub.publish(Message(station, "accepted", {"series": key, **change}))
        return change

    async def template_history(self, project: str, sequence_name: str) -> list[dict[str, Any]]:
        """Every change of a template, oldest first (``Store.history``); [] while the
        database fails."""
        return await self._store_call(lambda s: s.history(project, sequence_name)) or []

    # -- the store ----------------------------------------------------------------
    async def _restore_today(self) -> None:
        """Bring back today's series (verdicts and counts) recorded by an earlier run."""
        today = date.today().strftime("%Y%m%d")
        rows = await self._store_call(lambda s: s.series_on(today), default=[])
        results = [check(row["header"], self.templates.get(row["header"]), self.rules, live=True)
                   for row in rows]
        self.state.restore(rows, results)
        if rows:
            log.info("restored %d series recorded today", len(rows))

    async def _load_templates(self) -> None:
        """Load the template cache from the store. A remote store's templates are kept
        in the outbox too, and loaded from there when it does not answer (a service
        restarted during an outage still gives verdicts)."""
        templates = await self._store_call(lambda s: s.templates())
        if self.outbox is not None:
            if templates is not None:
                await trio.to_thread.run_sync(self.outbox.keep, "templates", templates)
            elif not len(self.templates):
                templates = await trio.to_thread.run_sync(self.outbox.kept, "templates")
        if templates is not None:
            self.templates.load(templates)

    async def _reload(self, keys: set[tuple[str, str]]) -> None:
        """Ask the store again for the templates that the series just written may have changed."""
        fresh = await self._store_call(lambda s: {k: s.template(*k) for k in keys})
        if fresh is None:
            self._learnt |= keys  # the store failed: ask again after the next flush
        else:
            self.templates.update(fresh)

    async def _flush_task(self) -> None:
        """The store task: write new series at once and changed file counts every
        ``flush_seconds``, then reload the template cache when a series may have changed
        it (and every TEMPLATE_REFRESH_S for other processes' writes). Cancelled with
        the pipeline; the live path only marks series dirty and wakes it."""
        loaded = trio.current_time()
        while True:
            with trio.move_on_after(self.config.flush_seconds):
                await self._wake_flush.wait()
            self._wake_flush = trio.Event()
            learnt, self._learnt = self._learnt, set()  # series learnt later are not written yet
            if not await self._flush():
                self._learnt |= learnt
            elif trio.current_time() - loaded > TEMPLATE_REFRESH_S:
                await self._reload(learnt)
                await self._load_templates()
                loaded = trio.current_time()
            elif learnt:
                await self._reload(learnt)

    async def _flush(self) -> bool:
        """Write the series marked dirty; False if the store failed (they stay dirty)."""
        if self.outbox is not None:
            return await self._flush_remote()
        dirty = self.state.take_dirty()
        if not dirty or self.store is None:
            return True

        echoes = {s.key: self._echo_times[s.key] for s in dirty if s.key in self._echo_times}

        def write(store: Store) -> bool:
            with store.batch():  # one commit for the lot
                for series in dirty:
                    _record(store, series, n_files=series.n_files,
                            echo_times=echoes.get(series.key, ()))
            return True

        self._writing = len(dirty)
        try:
            written = await self._store_call(write, write=True)
        finally:
            self._writing = 0
        if written is None:
            self.state.mark_dirty(s.key for s in dirty)  # retried at the next flush
            return False
        for key, times in echoes.items():
            if self._echo_times.get(key) is times:
                del self._echo_times[key]
        return True

    async def _flush_remote(self) -> bool:
        """A remote store's writes: the dirty series (with their echo times) and the
        acknowledgements go into the outbox on local disk, then the outbox is replayed
        into the store in order; False if the store failed. While the database is away
        they wait there, across a restart too."""
        assert self.outbox is not None
        dirty = self.state.take_dirty()
        echoes = {s.key: self._echo_times[s.key] for s in dirty if s.key in self._echo_times}
        entries = [*self._pending.values(), *(
            _series_entry(s, n_files=s.n_files,
                          **({"echo_times": echoes[s.key]} if s.key in echoes else {}))
            for s in dirty)]
        self._pending.clear()
        if entries:
            try:
                await trio.to_thread.run_sync(self.outbox.put, entries)
            except OutboxFull as error:  # the state still holds the series; counts go on
                log.error("%s: these writes stay in memory only", error)
        for key, times in echoes.items():  # on disk now
            if self._echo_times.get(key) is times:
                del self._echo_times[key]
        if self.store is None:
            return False
        return await self._store_call(self.outbox.drain, write=True) is not None

    def _outbox_size(self) -> int | None:
        return None if self.outbox is None else len(self.outbox)

    async def _on_change(self, what: set[str]) -> None:
        """Another process changed the templates or pinned protocols: keep the new
        templates; the stations following a project whose protocol changed show it."""
        if TEMPLATES in what:
            await self._load_templates()
        if PROTOCOLS in what:
            for project in sorted(self._projects):
                stations = self.compliance.stations_of(project)
                if not stations:
                    continue
                protocol = await self._store_call(lambda s, p=project: s.protocol(p))
                for station in stations if protocol is not None else ():
                    self.compliance.set_protocol(station, protocol)
                    self.hub.publish(Message(station, "checklist", self.compliance.view(station)))
        self.changes_heard += 1  # handled

    async def _store_call(
        self, fn: Callable[..., T], *args: Any, default: T | None = None, write: bool = False,
        abandon: bool = False,
    ) -> T | None:
        """Run ``fn(store, *args)`` in the sqlite thread.

        A failing store (read-only file, full disk) must not stop verdicts: the error is
        logged once when it starts and once when a *write* succeeds again (a read-only
        database still answers reads), and ``default`` stands in. ``abandon``: a caller
        that stops waiting (cancelled) leaves the call to finish in its thread.
        """
        assert self.store is not None
        try:
            value = await trio.to_thread.run_sync(fn, self.store, *args, limiter=self._sqlite,
                                                  abandon_on_cancel=abandon)
        except (*database_errors(), OSError) as error:
            if self.reach.failed():
                log.error("database %s failing, verdicts go on without it: %s", self.store.path,
                          error)
                self._database_changed()
            return default
        if write and self.reach.answered():
            log.warning("database %s writable again", self.store.path)
            self._database_changed()
        return value


    # -- the report pages (mrqart.report) ----------------------------------------------

    async def report_page(self, day: str | None, since: str | None) -> str:
        """The /reports page of a day (default yesterday) or since a day; ValueError for
        a malformed date."""
        period = Period.parse(day, since)
        return await self._report_call(pages.report_page, period)

    async def project_page(self, project: str, since: str | None) -> str:
        period = pages.project_period(since)
        return await self._report_call(pages.project_page, project, period)

    async def _report_call(self, page: Callable[..., str], *args: Any) -> str:
        """Build a page in a worker thread (one at a time) on a connection of its own, so
        the live path's store calls never wait for a report (sqlite in WAL mode lets a
        reader run beside the writer); an in-memory store is shared instead."""
        rules, config = self.rules, self.config

        def build(store: Store) -> str:
            exclusions = load_exclusions(config.rules)
            return page(store, *args, rules=rules, exclusions=exclusions)

        if str(config.db) == ":memory:":
            assert self.store is not None
            return await trio.to_thread.run_sync(build, self.store, limiter=self._sqlite)

        def build_own() -> str:
            with open_store(config.db) as store:
                return build(store)

        return await trio.to_thread.run_sync(build_own, limiter=self._report_limiter)


async def _send_coalesced(messages: trio.MemorySendChannel[Message], out: list[Message]) -> None:
    """Send what the session task has so far (counts folded, see hub.coalesce) and clear it."""
    for message in coalesce(out):
        await messages.send(message)
    out.clear()


def _echo_gap(echoes: dict[Any, Any]) -> bool:
    """Whether the echo numbers seen (1, 2, ...) miss one below the highest."""
    numbers = [n for n in echoes if type(n) is int]
    return bool(numbers) and len(numbers) < max(numbers)


def _record(store: Store, series: Series, **counts: Any) -> bool:
    """Record a live series with its trust (rules.templates.votes: did its verdict conform)."""
    return store.record_series(**_series_entry(series, **counts)[2])


def _series_entry(series: Series, **counts: Any) -> tuple[str, str, dict[str, Any]]:
    """A live series' record_series call as an outbox entry (key, method, kwargs)."""
    return (f"series {series.key}", "record_series", {
        "header": series.result["input"], "source": "live", "session": series.session,
        "trusted": votes("live", series.result), **counts})


def _build_app(pipeline: Pipeline) -> QuartTrio:
    """Raises auth.UsersFileError if the users file cannot be used."""
    config = pipeline.config
    return create_app(
        pipeline.state, pipeline.hub, console=pipeline, reports=pipeline,
        static_dir=config.static_dir, health=pipeline.health, guard=Guard.from_config(config),
        all_stations=(lambda: pipeline.db_stations) if config.all_stations else None,
    )


def dicom_node(config: Config, pipeline: Pipeline) -> DicomNode | None:
    """The C-STORE node feeding ``pipeline`` through its receive directory, when
    ``config.dicom_port`` is set. ValueError for a bad allow-list, or none off loopback."""
    if config.dicom_port is None:
        return None
    from mrqart.ingest.dicomnode import DicomNode, parse_allow  # pynetdicom: only if used

    return DicomNode(
        config.receive_dir, host=config.host, port=config.dicom_port, ae_title=config.ae_title,
        allow=parse_allow(config.dicom_allow), room=pipeline.wait_for_room,
        watched=pipeline.watcher.is_watched,
    )


def hypercorn_config(config: Config) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"{config.host}:{config.port}"]
    hc.graceful_timeout = 1.0  # SIGTERM: browsers get their close within a second
    hc.websocket_max_message_size = MAX_WS_MESSAGE
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")  # into our log, once
    if config.certfile is not None:  # HTTPS and WSS on the same port
        hc.certfile, hc.keyfile = str(config.certfile), str(config.keyfile or config.certfile)
    return hc


async def run_service(
    config: Config,
    *,
    stop: trio.Event | None = None,
    source: Any = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the pipeline and the web server on one port until ``stop`` is set.

    ``task_status.started(url)`` gives the bound URL (port 0 works). On ``stop`` every
    browser gets a normal close, hypercorn drains, then the pipeline is cancelled
    (flushing file counts to the store). A failing task cancels everything and raises.
    """
    if refusal := exposure_error(config.host, users=config.users,
                                 trust_proxy=config.trust_proxy, no_auth=config.no_auth):
        raise ValueError(refusal)
    if stop is None:
        stop = trio.Event()
    pipeline = Pipeline(config, source=source)
    node = dicom_node(config, pipeline)
    app = _build_app(pipeline)

    async def shutdown_trigger() -> None:
        await stop.wait()
        pipeline.hub.close_all()

    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run, name="pipeline")
        async with trio.open_nursery() as ingest:  # the node drains before the pipeline stops
            if node is not None:
                await ingest.start(node.run, name="dicomnode")
            async with trio.open_nursery() as web:
                binds = await web.start(
                    partial(serve, app, hypercorn_config(config), shutdown_trigger=shutdown_trigger),
                    name="web",
                )
                task_status.started(binds[0])
            # hypercorn returned: stop was set and its connections are closed.
            ingest.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def main(config: Config) -> None:
    """``mrqart run``: the service until SIGINT or SIGTERM."""
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def wait_signal() -> None:
                async for signum in signals:
                    log.info("%s: shutting down", signal.Signals(signum).name)
                    stop.set()
                    return

            nursery.start_soon(wait_signal)
            url = await nursery.start(partial(run_service, config, stop=stop))
            log.info("watching %s", ", ".join(str(r) for r in config.roots))
            print(f"mrqart: open {url}", flush=True)
            await stop.wait()


def _access_from_env() -> dict[str, Any]:
    def items(name: str) -> tuple[str, ...]:
        return tuple(i.strip() for i in os.environ.get(name, "").split(",") if i.strip())

    users = os.environ.get("MRQART_USERS")
    return {
        "users": Path(users) if users else None,
        "trust_proxy": items("MRQART_TRUST_PROXY"),
        "allowed_hosts": items("MRQART_ALLOWED_HOSTS"),
        "phi": os.environ.get("MRQART_PHI") or None,
        # no refusal to start here: the bind is hypercorn's. Without accounts the Guard
        # serves loopback clients only, per request.
        "no_auth": os.environ.get("MRQART_NO_AUTH") == "1",
    }


def app_from_env() -> QuartTrio:
    """The app for ``hypercorn --worker-class trio 'mrqart.live.service:app_from_env()'``.

    Configured by MRQART_WATCH (directories, separated by ':'), MRQART_DB, MRQART_RULES
    and MRQART_FINISH_MINUTES; the app's lifespan starts the same pipeline in the app's nursery.
    MRQART_DICOM_PORT starts the DICOM node too (MRQART_AE_TITLE, MRQART_DICOM_DIR,
    MRQART_DICOM_ALLOW: comma-separated), listening on MRQART_DICOM_HOST (default 127.0.0.1).
    Access: MRQART_USERS, MRQART_TRUST_PROXY and MRQART_ALLOWED_HOSTS (comma-separated),
    MRQART_PHI and MRQART_NO_AUTH=1. The web bind is hypercorn's, unknown here: without
    accounts only this host's browsers are served, under the loopback names and
    MRQART_ALLOWED_HOSTS.
    """
    watch = os.environ.get("MRQART_WATCH")
    if not watch:
        raise RuntimeError("set MRQART_WATCH to the directories to watch (separated by ':')")
    rules = os.environ.get("MRQART_RULES")
    finish = os.environ.get("MRQART_FINISH_MINUTES")
    dicom_port, dicom_dir = os.environ.get("MRQART_DICOM_PORT"), os.environ.get("MRQART_DICOM_DIR")
    db = default_db()
    prepare_db(db)
    config = Config(
        roots=tuple(Path(p) for p in watch.split(":") if p),
        db=db,
        rules=Path(rules) if rules else None,
        finish_minutes=float(finish) if finish else FINISHED_AFTER_MINUTES,
        host=os.environ.get("MRQART_DICOM_HOST", "127.0.0.1"),
        dicom_port=int(dicom_port) if dicom_port else None,
        ae_title=os.environ.get("MRQART_AE_TITLE", "MRQART"),
        dicom_dir=Path(dicom_dir) if dicom_dir else None,
        dicom_allow=tuple(os.environ.get("MRQART_DICOM_ALLOW", "").split(",")),
        **_access_from_env(),
    )
    if config.dicom_port is not None:
        config.receive_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(config)
    node = dicom_node(config, pipeline)
    app = _build_app(pipeline)

    @app.before_serving
    async def start_pipeline() -> None:
        await app.nursery.start(pipeline.run)
        if node is not None:
            await app.nursery.start(node.run)

    @app.after_serving
    async def close_browsers() -> None:
        pipeline.hub.close_all()

    return app
