"""One Prometheus view of every worker: snapshots shared through the state store."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from ._forksafe import after_fork_in_child
from ._retired import Retired, counts_only
from ._worker import PeriodicWorker, fault_hook
from .stores import StateStore, Versioned, make_key
from .telemetry import (
    FamilySnapshot,
    Telemetry,
    merge_snapshots,
    snapshot_from_json,
    snapshot_to_json,
    subtract_snapshots,
)
from .validation import InvalidValueError

__all__ = ["FleetMetrics"]

_log = logging.getLogger("mlops_otel.fleet")
_NAMESPACE = "telemetry"
_GROUP = "fleet"
#: A real sleep between the slices of a refresh: ``sleep(0)`` releases the GIL but does not make
#: CPython hand it over, so the event loop could still wait for the whole refresh (#16).
_SLICE_PAUSE_S = 0.0001
#: Hand the GIL over only once a slice has run this long: each pause is a sleep and a wake-up of
#: this thread, which at a few model versions cost more than the slices themselves (#16).
_SLICE_S = 0.0005
#: At most this many stopped workers' documents are folded into the retired document per refresh.
_RETIRE_PER_REFRESH = 16
#: This worker's last publish attempts kept (stamp, snapshot): one of them is what was folded in if it was.
_HISTORY = 8
#: The mark a folding worker puts on a document before it folds it.
_FOLDING = "folding"
#: "Not known": the stored document was not read (publish's first check, from the retired document alone).
_UNKNOWN: Any = object()


class _Slicer:
    """Let a thread waiting for the GIL (the event loop) run once the current slice reached :data:`_SLICE_S`."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since = time.perf_counter()

    def __call__(self) -> None:
        if time.perf_counter() - self._since >= _SLICE_S:
            time.sleep(_SLICE_PAUSE_S)
            self._since = time.perf_counter()


def _telemetry_of(fleet: FleetMetrics) -> Telemetry:
    return fleet.telemetry


def _retirable(entry: _Seen, now: float, retire_after: float) -> bool:
    """Whether *entry*'s worker stopped *retire_after* seconds or more past its TTL (0.1's documents,
    with no TTL or stamp, are never folded)."""
    ttl = entry.ttl
    if entry.published_at == float("-inf") or not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        return False
    return now > entry.published_at + ttl + retire_after


def _published_at(doc: dict[str, Any]) -> float:
    stamp = doc.get("published_at")
    return float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else float("-inf")


@attrs.frozen
class _Seen:
    """The latest document of another worker that this worker has seen."""

    version: int
    published_at: float
    ttl: object
    snapshot: list[FamilySnapshot]
    #: When this worker last fetched the document (its clock).
    checked_at: float

    def expired(self, now: float) -> bool:
        """Whether its worker stopped renewing it (or it was written by 0.1, which never renewed it)."""
        if not isinstance(self.ttl, (int, float)) or self.published_at == float("-inf"):
            return True
        return now > self.published_at + self.ttl


@attrs.frozen
class _Stored:
    """The retired document as a refresh read it: its version and value (``None``: absent, or not one)."""

    version: int
    value: Retired | None
    present: bool


@attrs.define(eq=False)
class FleetMetrics:
    """Publish this worker's snapshot to the store; serve the sum of all workers on ``/metrics``.

    With several uvicorn/gunicorn workers behind one port, a scrape reaches
    one worker at random; with this enabled every worker answers with the
    fleet's totals (counters and histograms summed over workers, gauges from
    the most recent report). A background thread publishes this worker's
    snapshot and fetches the others' every *interval* seconds; a scrape merges
    this worker's live snapshot with that cached view and does no store I/O,
    so a slow or unreachable store never stalls the worker; the other workers'
    counts it serves are at most about *interval* seconds old. Workers that
    stopped keep their final counts, so totals never go down; use a store
    prefix per deployment. OTLP keeps pushing each worker's own data (tagged
    with its ``service.instance.id``); scrape one target per deployment, not
    one per host, or ``sum()`` counts the fleet once per host.

    Each snapshot carries the time it was published and a TTL (*ttl*, default
    three intervals plus ten seconds) that the worker renews with every
    publish. A snapshot whose TTL ran out belongs to a worker that stopped or
    hangs: its gauges (the champion, drift scores, pending writes) leave the
    fleet view, so a restart never shows two champions, while its counters and
    histograms stay in the totals (so they never go down).
    """

    store: StateStore
    telemetry: Telemetry
    interval: float = attrs.field(default=2.0, kw_only=True)
    ttl: float | None = attrs.field(default=None, kw_only=True)
    #: Seconds after its TTL ran out that a stopped worker's document is folded into the fleet's one
    #: retired document (its counters kept, the document deleted), by whichever worker refreshes first.
    #: A worker that was paused that long and resumes notices, and goes on under a new id publishing
    #: only what it counted since (docs/stores.md, "Retired workers", gives the rules and the limits).
    retire_after: float = attrs.field(default=600.0, kw_only=True)
    #: How often a document whose TTL ran out is fetched again (seconds). Each refresh lists the documents,
    #: but a stopped worker's is re-read only this often: workers recycled often (gunicorn's
    #: ``max_requests``) leave many, and re-reading each every *interval* cost a fetch and a JSON parse
    #: apiece. A worker that hung past its TTL and resumed is seen again within this time.
    expired_recheck: float = attrs.field(default=30.0, kw_only=True)
    clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True, repr=False)
    _worker: str = attrs.field(factory=lambda: uuid.uuid4().hex, init=False)
    _thread: PeriodicWorker[FleetMetrics] | None = attrs.field(default=None, init=False, repr=False)
    _closed: bool = attrs.field(default=False, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    #: What a scrape merges with this worker's live snapshot: (the baseline to subtract from it, the other
    #: workers' snapshots), replaced as one at the end of a refresh so a scrape never sees half of a change.
    _view: tuple[list[FamilySnapshot] | None, list[list[FamilySnapshot]]] = attrs.field(
        default=(None, []), init=False, repr=False)
    #: The version of this worker's own document after its last publish (only this worker writes it),
    #: so a publish is one compare-and-set instead of a read of the whole document and a write.
    _own_version: int | None = attrs.field(default=None, init=False, repr=False)
    _seen: dict[str, _Seen] = attrs.field(factory=dict, init=False, repr=False)
    #: The newest copy seen of every incarnation of the retired document (by id): one the store lost
    #: keeps counting here, as a lost worker document does.
    _retired: dict[str, Retired] = attrs.field(factory=dict, init=False, repr=False)
    #: (store version, incarnation id) of the retired document as last read.
    _retired_version: tuple[int, str] = attrs.field(default=(-1, ""), init=False, repr=False)
    #: When the retired document was last read (this worker's clock), and whether it must be read next time.
    _retired_checked: float = attrs.field(default=float("-inf"), init=False, repr=False)
    _retired_due: bool = attrs.field(default=True, init=False, repr=False)
    #: The other workers' documents the last refresh listed.
    _listed: set[str] = attrs.field(factory=set, init=False, repr=False)
    #: (published_at, snapshot) of this worker's last publish attempts (one whose reply was lost included).
    _history: deque[tuple[float, list[FamilySnapshot]]] = attrs.field(
        factory=lambda: deque(maxlen=_HISTORY), init=False, repr=False)
    #: (published_at, snapshot) of this worker's last publish known stored: kept apart from the attempts,
    #: which a long outage can push out of the history.
    _stored: tuple[float, list[FamilySnapshot]] | None = attrs.field(default=None, init=False, repr=False)
    #: After this worker found itself folded in: the snapshot that was, subtracted from what it publishes.
    _baseline: list[FamilySnapshot] | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not 0 < self.interval < float("inf"):
            raise InvalidValueError("interval", "a positive number of seconds", self.interval)
        if self.ttl is None:
            self.ttl = 3 * self.interval + 10.0
        elif not self.interval < self.ttl < float("inf"):
            raise InvalidValueError("ttl", f"a number of seconds above interval ({self.interval!r})", self.ttl)
        if not 0 < self.expired_recheck < float("inf"):
            raise InvalidValueError("expired_recheck", "a positive number of seconds", self.expired_recheck)
        if not 0 < self.retire_after < float("inf"):
            raise InvalidValueError("retire_after", "a positive number of seconds", self.retire_after)
        after_fork_in_child(self, FleetMetrics._after_fork)

    def _after_fork(self) -> None:
        self._worker = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._view = (None, [])
        self._own_version = None
        self._seen = {}
        self._retired = {}
        self._retired_version = (-1, "")
        self._retired_checked, self._retired_due, self._listed = float("-inf"), True, set()
        self._history = deque(maxlen=_HISTORY)
        self._stored = None
        self._baseline = None
        if self._thread is not None:
            self._thread.after_fork()  # reset before restarting: the child publishes under its new id
            if not self._closed:
                self._thread.start()

    @property
    def worker_id(self) -> str:
        """This process's id among the fleet's published snapshots."""
        return self._worker

    def start(self) -> None:
        """Serve the fleet view on ``/metrics`` and publish in the background."""
        self.telemetry.use_exposition_source(self.fleet_snapshot)
        with self._lock:
            self._closed = False
            if self._thread is None or self._thread.stopped:  # start() after close() starts afresh
                # Refresh at once, then every interval; the worker holds this view weakly (a view
                # dropped without close() stops refreshing), and a failed refresh is counted.
                self._thread = PeriodicWorker(self, FleetMetrics.refresh, name="mlops-otel-fleet",
                                              interval=self.interval, run_first=True,
                                              on_error=fault_hook(self, _telemetry_of, "fleet_refresh"))
            self._thread.start()

    def refresh(self) -> bool:
        """Publish this worker's snapshot and fetch every other worker's (store I/O; never raises).

        The background thread calls it every *interval* seconds. Returns whether both succeeded;
        on failure the previous view of the other workers is kept. The work is cut in slices (one
        per worker's document and metric family) with the GIL handed over in between, so the
        request thread never waits for a whole refresh (16 ms of CPU at 100 model versions and
        3 workers; the GIL is handed over whenever a slice has run for 0.5 ms).

        The view of another worker never goes back: a document older than the one already
        seen (a store restored from an older copy) is ignored, and the counters of a document
        that left the store (restarted empty, flushed) stay in the view; a document seen
        again unchanged is not parsed again, and one whose TTL ran out is fetched again only
        every *expired_recheck* seconds. Documents stopped for *retire_after* past their TTL are
        folded into the retired document (:meth:`_retire`), which is read when a document left the
        listing and otherwise every *expired_recheck* seconds.
        """
        slicer = _Slicer()
        now = self.clock()
        # The retired document changes only with a fold, which deletes documents: read it when one left the
        # listing, else every expired_recheck seconds (a worker checks its own fold when it publishes).
        stored: _Stored | None = None
        if self._retired_due or now - self._retired_checked >= self.expired_recheck:
            stored = self._read_retired()
            if stored is None:
                return False
            self._retired_due, self._retired_checked = False, now
        published = self.publish(slicer=slicer)
        own = make_key(_NAMESPACE, _GROUP, self._worker)
        head = make_key(_NAMESPACE, _GROUP, "")
        folded = self._folded_ids()
        seen = dict(self._seen)  # a folded worker's entry is dropped below, and its key not listed
        leftovers: list[str] = []
        try:
            listed: set[str] = set()
            for key in self.store.list_keys(head):
                if key == own:
                    continue
                if key[len(head):] in folded:  # counted in the retired document; deleted below
                    leftovers.append(key)
                    continue
                previous = seen.get(key)
                if previous is not None and previous.expired(now) and now - previous.checked_at < self.expired_recheck:
                    listed.add(key)  # still in the store, its worker stopped: its last snapshot stands for now
                    continue
                slicer()
                found = self.store.get_document(key)
                if found is None or not isinstance(found.value, dict):
                    continue
                families = found.value.get("families")
                if not isinstance(families, dict):
                    continue
                listed.add(key)
                stamp = _published_at(found.value)
                if previous is not None and (previous.published_at > stamp or (
                        previous.published_at == stamp and previous.version == found.version)):
                    seen[key] = attrs.evolve(previous, checked_at=now)
                    continue  # unchanged, or older than what this worker already serves
                snapshot: list[FamilySnapshot] = []
                for name, body in families.items():
                    slicer()
                    snapshot += snapshot_from_json({name: body})
                seen[key] = _Seen(found.version, stamp, found.value.get("ttl"), snapshot, now)
            due = [key for key in sorted(listed) if _retirable(seen[key], now, self.retire_after)]
            if due or leftovers:
                stored = stored or self._read_retired()
                if stored is not None:
                    self._retire(stored, seen, due[:_RETIRE_PER_REFRESH], listed, leftovers, now)
        except Exception as exc:  # keep serving the last view of the fleet
            self.telemetry.fault("fleet_refresh", exc)
            return False
        if self._listed - listed - {own}:  # a document left the store: folded (or lost), read the retired one
            self._retired_due = True
        self._listed = listed
        # Never a folded worker's own counts beside the retired ones (the retired document may have been
        # read for a fold after the listing started).
        folded = self._folded_ids()
        seen = {k: v for k, v in seen.items() if k[len(head):] not in folded}
        others = [list(r.families) for r in self._retired.values()]
        for key, entry in seen.items():
            if key in listed and not entry.expired(now):
                others.append(entry.snapshot)
            else:  # its worker stopped renewing it, or the store lost it: counters only
                others.append(counts_only(entry.snapshot))
        self._seen = seen
        self._view = (self._baseline, others)
        return published

    def _folded_ids(self) -> set[str]:
        """The workers whose documents were folded into a retired document this worker has read."""
        return {worker for retired in self._retired.values() for worker in retired.absorbed}

    def _published(self, stamp: float) -> list[FamilySnapshot] | None:
        """The snapshot this worker published (or tried to) at *stamp*, if it still knows it."""
        found = next((snapshot for at, snapshot in reversed(self._history) if at == stamp), None)
        if found is None and self._stored is not None and self._stored[0] == stamp:
            found = self._stored[1]
        return found

    @property
    def _retired_key(self) -> str:
        return make_key(_NAMESPACE, _GROUP)  # the group's own key: on the same Cluster slot as the documents

    def _read_retired(self) -> _Stored | None:
        """The retired document as stored now; ``None`` when it could not be read."""
        try:
            found = self.store.get_document(self._retired_key)
        except Exception as exc:
            self.telemetry.fault("fleet_refresh", exc)
            return None
        if found is None:
            return _Stored(0, None, present=False)
        cached = self._retired.get(self._retired_version[1])
        if (cached is not None and found.version == self._retired_version[0] and isinstance(found.value, dict)
                and found.value.get("id") == cached.id and found.value.get("generation") == cached.generation):
            return _Stored(found.version, cached, present=True)  # not parsed again (a store restarted empty
            # numbers its versions from 1 again: the incarnation and generation tell the copies apart)
        retired = Retired.from_json(found.value)
        if retired is not None:
            known = self._retired.get(retired.id)
            if known is None or known.generation <= retired.generation:
                self._retired[retired.id] = retired  # never back to an older copy (a store restored from one)
            self._retired_version = (found.version, retired.id)
        return _Stored(found.version, retired, present=True)

    def _folded_at(self, current: object) -> float | None:
        """The ``published_at`` at which this worker's document was folded in (``None``: it was not), judged
        from the retired document's record, else from *current*, its document as now stored (``_UNKNOWN``:
        not read): marked by a folding worker, or gone after a silence long enough for a fold (the record
        forgotten, or lost with the store)."""
        for retired in self._retired.values():
            if self._worker in retired.absorbed:
                return retired.absorbed[self._worker]
        if isinstance(current, Versioned) and isinstance(current.value, dict) and current.value.get(_FOLDING):
            return _published_at(current.value)
        last = self._stored
        if current is None and last is not None and self.clock() - last[0] > float(self.ttl or 0) + self.retire_after:
            return last[0]
        return None

    def _leave(self, stamp: float, *, marked: bool = False) -> None:
        """Go on under a new id, publishing only what this worker counted after its publish at *stamp*.

        *marked*: a folder marked the document and has not folded it yet (as far as this worker knows):
        its counts are kept in this worker's view as those of a stopped worker until the retired
        document or the marked document is read, so its own /metrics does not dip meanwhile.
        """
        folded = self._published(stamp)
        if folded is None:  # not one of our last publishes: count from now on (what came between is lost)
            self.telemetry.fault("fleet_refold", LookupError(f"no publish of this worker at {stamp}"))
            folded = self.telemetry.snapshot()
        _log.warning("mlops-otel: fleet worker %s was stopped long enough to be retired (its counts are in the "
                     "retired document); it goes on under a new id", self._worker)
        self._baseline = folded
        if marked:
            self._seen[make_key(_NAMESPACE, _GROUP, self._worker)] = _Seen(-1, stamp, self.ttl, counts_only(folded),
                                                                             float("-inf"))
        self._worker = uuid.uuid4().hex
        self._own_version = None
        self._stored = None
        self._history.clear()

    def _retire(self, stored: _Stored, seen: dict[str, _Seen], due: list[str], listed: set[str],
                leftovers: list[str], now: float) -> None:
        """Fold the *due* documents (of workers stopped for *retire_after* past their TTL) into the
        retired document, then delete them.

        Each document is first marked as being folded with a compare-and-set on the version this worker
        read (so it is folded only as it still is, and a worker that resumes finds the mark instead of
        publishing over it); then the retired document is written with a compare-and-set (two workers
        folding at once fold each document once; a marked document not folded yet is counted as any
        other and folded later). Documents of workers already folded (a delete that failed) are deleted.
        """
        head = make_key(_NAMESPACE, _GROUP, "")
        for key in leftovers[:_RETIRE_PER_REFRESH]:
            self.store.delete(key)
        if stored.present and stored.value is None:
            return  # something else wrote the key: leave it alone
        retired = stored.value if stored.value is not None else Retired.new(uuid.uuid4().hex)
        retired = self._retired.get(retired.id, retired)  # the newest copy seen (the store may hold an older one)
        folding = []
        for key in due:
            entry = seen[key]
            found = self.store.get_document(key)
            if (found is None or found.version != entry.version or not isinstance(found.value, dict)
                    or _published_at(found.value) != entry.published_at
                    or not self.store.compare_and_set(key, {**found.value, _FOLDING: True},
                                                      expected_version=found.version)):
                seen[key] = attrs.evolve(entry, checked_at=float("-inf"))  # changed: read it again next time
                continue
            seen[key] = attrs.evolve(entry, version=found.version + 1)  # the mark: the same counts
            retired = retired.absorb(key[len(head):], entry.published_at, entry.snapshot)
            folding.append(key)
        stored_keys = listed.union(leftovers)
        pruned = retired.forget(now, lambda worker: make_key(_NAMESPACE, _GROUP, worker) in stored_keys)
        if not folding and pruned is retired:
            return
        written = pruned.successor()
        if not self.store.compare_and_set(self._retired_key, written.to_json(), expected_version=stored.version):
            return  # another worker changed it first: the next refresh reads it (the marked ones are folded then)
        self._retired[written.id] = written
        self._retired_version = (stored.version + 1, written.id)
        for key in folding:
            del seen[key]
            listed.discard(key)
            self.store.delete(key)

    def publish(self, *, gauges: bool = True, slicer: Callable[[], None] | None = None) -> bool:
        """Write this worker's snapshot to the store now; return whether it was stored.

        ``gauges=False`` leaves the gauges out (a one-shot writer such as the CLI, whose
        gauges would go stale at once, while its counters must reach the totals). A worker
        whose document was folded into the retired document (it was stopped for longer than
        its TTL and *retire_after*) goes on under a new id, publishing what it counted since.
        """
        pause = _Slicer() if slicer is None else slicer
        try:
            stamp = self._folded_at(_UNKNOWN)  # the retired document's record (no I/O)
            if stamp is not None:
                self._leave(stamp)
            raw = self.telemetry.snapshot()
            pause()
            for _ in range(4):
                key = make_key(_NAMESPACE, _GROUP, self._worker)
                families = self._own(raw, self._baseline)
                if not gauges:
                    families = counts_only(families)
                stamp = self.clock()
                doc: dict[str, Any] = {"worker": self._worker, "families": snapshot_to_json(families),
                                       "published_at": stamp, "ttl": self.ttl}
                pause()
                self._history.append((stamp, raw))  # before the write: one whose reply is lost may be stored
                # Only this worker writes its key, so the version its last write left is the one to expect (a
                # store that numbers versions otherwise, a lost key, or a fold's mark costs one read).
                known = self._own_version
                if known is None or not self.store.compare_and_set(key, doc, expected_version=known):
                    current = self.store.get_document(key)
                    if current is None:
                        self._read_retired()  # folded and deleted since this refresh read it?
                    folded = self._folded_at(current)
                    if folded is not None:
                        self._leave(folded, marked=current is not None)
                        continue
                    if current is not None and isinstance(current.value, dict):  # what is stored (a reply lost?)
                        at = _published_at(current.value)
                        raw_at = self._published(at)
                        if raw_at is not None:
                            self._stored = (at, raw_at)
                    known = 0 if current is None else current.version
                    if not self.store.compare_and_set(key, doc, expected_version=known):
                        continue
                self._own_version = known + 1
                self._stored = (stamp, raw)
                return True
        except Exception as exc:  # the store being down must not break scrapes or the service
            self._own_version = None
            self.telemetry.fault("fleet_publish", exc)
        return False

    def fleet_snapshot(self) -> list[FamilySnapshot]:
        """This worker's live snapshot merged with the others' last fetched ones (no store I/O)."""
        baseline, others = self._view
        return merge_snapshots([self._own(self.telemetry.snapshot(), baseline), *others])

    @staticmethod
    def _own(snapshot: list[FamilySnapshot], baseline: list[FamilySnapshot] | None) -> list[FamilySnapshot]:
        """What this worker counts in the fleet: all of *snapshot*, less *baseline*, what was folded in
        under an old id."""
        return snapshot if baseline is None else subtract_snapshots(snapshot, baseline)

    def close(self) -> None:
        """Publish once more (counters only: a stopped worker exports no gauges) and stop.

        ``/metrics`` serves the local snapshot again.
        """
        self._closed = True
        worker = self._thread
        if worker is not None:
            worker.stop()
        self._read_retired()  # folded meanwhile? (then the last publish goes under a new id)
        self.publish(gauges=False)
        self.telemetry.use_exposition_source(None)
