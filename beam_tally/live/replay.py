"""The producer's logic, pure: reorder, merge, pace and watermark a replay (no Beam, no gRPC).

``stream_events`` turns what readers return into the events a live source serves: ``Elements``
(lists of ``(event time, item)``) and ``Watermark``. Each reader (one per input file) has a
reorder buffer that releases items in event-time order once they are ``max_delay`` behind the
newest it has read, and whose watermark is ``newest - max_delay``. The merged stream's
watermark is the minimum over the readers still reading (an idle reader in follow mode stops
holding it back), never goes back, and is sent only after every item at or before it. Items are
paced by event time divided by ``speedup``; heartbeats repeat the watermark while idle.

Time comes from a ``Clock`` passed in, so tests drive it with a fake one and never sleep.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

NEG_INF = -math.inf
_EVENT_TIME = itemgetter(0)
POS_INF = math.inf


class Elements(NamedTuple):
    items: list[tuple[float, Any]]  # (event time in seconds, item), in event-time order


class Watermark(NamedTuple):
    at: float  # seconds; +inf ends the stream


class End(NamedTuple):
    """The replay is complete: sent just before the final ``Watermark(+inf)``, so a consumer
    can tell a stream that ended from one that broke off."""


class Clock(Protocol):
    def now(self) -> float: ...  # wall time, seconds since the epoch

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Update(NamedTuple):
    """What one reader returned on one poll: new ``(event time or None, item)`` pairs (None: an
    item without event time, a bad line, which travels at the newest time seen) and whether
    the reader has reached the end of its input."""

    reader: str
    items: list[tuple[float | None, Any]]
    done: bool = False


@dataclass
class ReorderBuffer:
    """One reader's items, released in event-time order once ``max_delay`` behind its newest.
    An item more than ``max_delay`` older than an item read before it is late: it waits in
    ``late`` with the newest time it fell behind.

    Items wait in a list in arrival order, sorted by event time only when one arrived out of
    order (a stable sort keeps ties in arrival order): lines mostly come in order, and a sort
    of nearly sorted data costs about one pass, far less than a heap push per line."""

    max_delay: float
    newest: float | None = None
    late: list = field(default_factory=list)  # (event time, item, newest when it arrived)
    _waiting: list = field(default_factory=list)  # (event time, item)
    _sorted: bool = True
    _untimed: list = field(default_factory=list)

    def push(self, ts: float | None, item: Any) -> None:
        if ts is None:
            if self.newest is None:  # nothing timed yet: wait for the first event time
                self._untimed.append(item)
                return
            ts = self.newest
        elif self.newest is None or ts > self.newest:
            self.newest = ts
        elif ts < self.newest - self.max_delay:
            self.late.append((ts, item, self.newest))
            return
        for waiting in self._untimed:
            self._push(ts, waiting)
        self._untimed.clear()
        self._push(ts, item)

    def _push(self, ts: float, item: Any) -> None:
        waiting = self._waiting
        if waiting and ts < waiting[-1][0]:
            self._sorted = False
        waiting.append((ts, item))

    @property
    def watermark(self) -> float:
        return NEG_INF if self.newest is None else self.newest - self.max_delay

    def pop_until(self, limit: float) -> Iterator[tuple[float, Any]]:
        """Items with event time at or before ``limit``, oldest first (ties in arrival order)."""
        waiting = self._waiting
        if not self._sorted:
            waiting.sort(key=_EVENT_TIME)
            self._sorted = True
        cut = bisect.bisect_right(waiting, limit, key=_EVENT_TIME)
        released = waiting[:cut]
        del waiting[:cut]
        return iter(released)

    def drain(self, fallback: float) -> Iterator[tuple[float, Any]]:
        """Everything left; untimed items (a reader that never saw an event time) at
        ``fallback``."""
        for item in self._untimed:
            self._push(fallback, item)
        self._untimed.clear()
        yield from self.pop_until(POS_INF)


class Merger:
    """Readers' buffers merged into one event-time ordered stream with one watermark."""

    def __init__(self, max_delay: float) -> None:
        self.max_delay = max_delay
        self.buffers: dict[str, ReorderBuffer] = {}
        self.finished: set[str] = set()
        self.idle: set[str] = set()
        self.watermark = NEG_INF  # the merged watermark so far; never goes back
        self.caught_up = False  # followed, and no reader holds the watermark

    def apply(self, update: Update) -> None:
        buffer = self.buffers.get(update.reader)
        if buffer is None:
            buffer = self.buffers[update.reader] = ReorderBuffer(self.max_delay)
        for ts, item in update.items:
            buffer.push(ts, item)
        if update.items:
            self.idle.discard(update.reader)
            self.finished.discard(update.reader)  # a followed path that came back
        if update.done:
            self.finished.add(update.reader)

    @property
    def all_finished(self) -> bool:
        return len(self.finished) == len(self.buffers)

    def take_late(self) -> list[tuple[float, Any, float]]:
        """The late items read since the last call: ``(event time, item, newest before it)``."""
        late = [entry for buffer in self.buffers.values() for entry in buffer.late]
        for buffer in self.buffers.values():
            buffer.late.clear()
        return late

    def advance(self, follow: bool = False) -> tuple[list[tuple[float, Any]], float]:
        """The items now released (event-time order) and the watermark to send after them.

        A replay ends (+inf) once every reader is done, and until then every reader still
        reading holds the watermark. Followed, a reader holds it only once it has seen an event
        time and while it is not idle; when none holds (every file quiet), they are taken as
        caught up: the watermark moves to the newest time read, so the last windows close, and
        a line that then arrives older than that is late."""
        timed = {name: b for name, b in self.buffers.items() if b.newest is not None}
        holding = [
            buffer.watermark
            for name, buffer in (timed if follow else self.buffers).items()
            if name not in self.finished and name not in self.idle
        ]
        self.caught_up = follow and not holding
        if not follow and self.all_finished:
            target = POS_INF
        elif holding:
            target = min(holding)
        else:  # nobody reading (all idle or done): what was read is all there is for now
            target = max((b.newest for b in timed.values()), default=NEG_INF)
        self.watermark = max(self.watermark, target)
        if self.watermark == POS_INF:
            newest = max((b.newest for b in timed.values()), default=0)
            streams = [b.drain(newest) for b in self.buffers.values()]
        else:
            streams = [b.pop_until(self.watermark) for b in self.buffers.values()]
            if self.watermark > NEG_INF:  # items of readers without an event time yet
                streams += [
                    b.drain(self.watermark) for b in self.buffers.values() if b.newest is None
                ]
        released = list(heapq.merge(*(list(st) for st in streams), key=lambda pair: pair[0]))
        return released, self.watermark


class Pacer:
    """When each event time is due: the first item at once, then event-time gaps divided by
    ``speedup`` (None: no pacing, everything is due at once)."""

    def __init__(self, speedup: float | None, clock: Clock) -> None:
        if speedup is not None and speedup <= 0:
            raise ValueError("speedup must be positive")
        self.speedup = speedup
        self.clock = clock
        self.origin: tuple[float, float] | None = None  # (event time, wall time) of the first

    def due(self, ts: float) -> float:
        now = self.clock.now()
        if self.speedup is None:
            return now
        if self.origin is None:
            self.origin = (ts, now)
        first_ts, started = self.origin
        return started + (ts - first_ts) / self.speedup


@dataclass
class StreamSettings:
    max_delay: float = 5.0
    speedup: float | None = None
    follow: bool = False
    batch: int = 50_000  # items per Elements event at most (each is a bundle downstream)
    granularity: float = 0.2  # seconds: items due this close together are sent together
    heartbeat: float = 1.0  # seconds between events while idle
    poll: float = 0.2  # seconds between polls of idle inputs (follow mode)
    idle_after: float = 2.0  # seconds without new data before a followed reader stops holding
    clock_watermark: bool = False  # items are stamped with the clock: the watermark follows it


def stream_events(
    poll: Callable[[], Iterable[Update]], settings: StreamSettings, clock: Clock
) -> Iterator[Elements | Watermark | End]:
    """The events of one replay (or follow session), from ``poll``, which returns each reader's
    new items (an empty iterable when nothing is new). Ends with ``Watermark(+inf)`` once every
    reader is done and nothing is followed."""
    return Session(poll, settings, clock).events()


class Session:
    """One replay or follow session; ``pacer.origin`` is its pacing origin once it started.

    A late item (more than ``max_delay`` older than one its reader read before it, or, from a
    new or idle reader, older than the watermark already sent) leaves at once, at the
    watermark, as ``mark_late(event time, item, the time it fell behind)`` returns it (the item
    itself by default): the consumer gets it as data to dead-letter, never behind the
    watermark, and the stream never depends on how the input was chunked."""

    def __init__(
        self,
        poll,
        settings: StreamSettings,
        clock: Clock,
        mark_late: Callable[[float, Any, float], Any] | None = None,
    ) -> None:
        self.poll = poll
        self.mark_late = mark_late
        self.settings = settings
        self.clock = clock
        self.merger = Merger(settings.max_delay)
        self.pacer = Pacer(settings.speedup, clock)
        self.sent = NEG_INF  # the last watermark sent
        self.last_event = clock.now()
        self.quiet_since: tuple[float, float] | None = None  # (clock, watermark) when caught up
        self.last_data: dict[str, float] = {}

    def _read(self) -> bool:
        """Applies one poll; marks followed readers idle; whether anything new arrived."""
        now = self.clock.now()
        got_data = False
        for update in self.poll():
            self.merger.apply(update)
            if update.items or update.reader not in self.last_data:
                self.last_data[update.reader] = now
            got_data = got_data or bool(update.items)
        if self.settings.follow:
            for reader, seen in self.last_data.items():
                if now - seen >= self.settings.idle_after and reader not in self.merger.finished:
                    self.merger.idle.add(reader)
        return got_data

    def _watermark(self, at: float) -> Iterator[Watermark]:
        if at > self.sent:
            self.sent = at
            self.last_event = self.clock.now()
            yield Watermark(at)

    def _heartbeat(self) -> Iterator[Watermark]:
        """The last watermark again, if nothing was sent for a heartbeat: a source that hears
        nothing for long gives up."""
        if self.clock.now() - self.last_event >= self.settings.heartbeat:
            self.last_event = self.clock.now()
            yield Watermark(self.sent)

    def _flush(self, batch: list, upto: float) -> Iterator[Elements | Watermark]:
        """Sends ``batch`` and moves the watermark up to ``upto``, the newest released item in
        it: released items come in event-time order, so nothing older is still to come."""
        if batch:
            yield Elements(batch)
            self.last_event = self.clock.now()
            yield from self._watermark(min(upto, self.merger.watermark))

    def _paced(self, released: list, late: list) -> Iterator[Elements | Watermark]:
        """``late`` items at once, then ``released`` in batches, each sent once its last item
        is due: items due within ``granularity`` of a batch's first go with it (sent up to
        that much late, never early)."""
        settings = self.settings
        batch = [self._late(*entry) for entry in late]
        if self.pacer.speedup is None:
            yield from self._unpaced(released, batch)
            return
        first_due = last_due = self.clock.now()
        upto = NEG_INF  # the newest released (not late) item in the batch
        for released_ts, released_item in released:
            ts, item = released_ts, released_item
            if ts < self.sent:  # from a new or idle reader, behind what was sent
                ts, item = self._late(ts, item, self.sent)
                due = self.clock.now()
            else:
                due = self.pacer.due(ts)
            if batch and (due - first_due > settings.granularity or len(batch) >= settings.batch):
                yield from self._send_when_due(batch, last_due, upto)
                batch, upto = [], NEG_INF
            if not batch:
                first_due = last_due = due
            batch.append((ts, item))
            last_due = max(last_due, due)
            upto = max(upto, released_ts if released_ts >= self.sent else NEG_INF)
        if batch:
            yield from self._send_when_due(batch, last_due, upto)

    def _unpaced(self, released: list, batch: list) -> Iterator[Elements | Watermark]:
        """``_paced`` without a speedup: every item is due at once, so a batch ends only at
        ``settings.batch`` items (as the paced walk does when the clock stands still; on a real
        clock it also cut a long release wherever walking it had taken ``granularity``)."""
        limit = self.settings.batch
        upto = NEG_INF
        for ts, item in released:
            if len(batch) >= limit:
                yield from self._flush(batch, upto)
                batch, upto = [], NEG_INF
            if ts < self.sent:  # from a new or idle reader, behind what was sent
                batch.append(self._late(ts, item, self.sent))
            else:
                batch.append((ts, item))
                upto = max(upto, ts)
        yield from self._flush(batch, upto)

    def _quiet_watermark(self, watermark: float) -> float:
        """Followed files that all went quiet are caught up at the newest line; from then on
        event time keeps passing with the clock (times ``speedup``), ``max_delay`` behind it:
        silence in a followed log is time without traffic, so the windows after the newest line
        close and the alert rule sees the quiet seconds, instead of the stream stopping at the
        newest second."""
        if not self.merger.caught_up or watermark in (NEG_INF, POS_INF):
            self.quiet_since = None
            return watermark
        if self.quiet_since is None:
            self.quiet_since = (self.clock.now(), watermark)
        since, caught_up_at = self.quiet_since
        passed = (self.clock.now() - since) * (self.settings.speedup or 1.0)
        # still max_delay behind: a line written late within its budget is not made late
        behind = max(0.0, passed - self.settings.max_delay)
        self.merger.watermark = max(watermark, caught_up_at + behind)
        return self.merger.watermark

    def _late(self, ts: float, item: Any, behind: float) -> tuple[float, Any]:
        """A late item, marked, at the watermark already sent (due at once when paced)."""
        marked = item if self.mark_late is None else self.mark_late(ts, item, behind)
        return (ts if self.sent == NEG_INF else self.sent), marked

    def _send_when_due(
        self, batch: list, due: float, upto: float
    ) -> Iterator[Elements | Watermark]:
        wait = due - self.clock.now()
        while wait > 0:  # sleep in heartbeat-sized steps
            self.clock.sleep(min(wait, self.settings.heartbeat))
            yield from self._heartbeat()
            wait = due - self.clock.now()
        yield from self._flush(batch, upto)

    def events(self) -> Iterator[Elements | Watermark | End]:
        follow = self.settings.follow
        while True:
            got_data = self._read()
            late = self.merger.take_late()
            released, watermark = self.merger.advance(follow)
            if self.settings.clock_watermark and watermark != POS_INF:
                watermark = self.merger.watermark = max(watermark, self.clock.now())
            elif follow:
                watermark = self._quiet_watermark(watermark)
            items = late or released
            yield from self._paced(released, late)
            if watermark == POS_INF:
                yield End()
            yield from self._watermark(watermark)
            if self.sent == POS_INF:
                return
            if not got_data or (follow and not items):  # nothing new to send: wait a little
                yield from self._heartbeat()
                self.clock.sleep(self.settings.poll)
