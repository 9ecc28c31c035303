"""The producer's pure logic (reorder, merge, pace, watermark) with a fake clock: no sleeps."""

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from beam_tally.replay import (
    POS_INF,
    Elements,
    Merger,
    ReorderBuffer,
    StreamSettings,
    Update,
    Watermark,
    stream_events,
)


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def chunked_poll(readers: dict[str, list], chunk: int = 3):
    """A replay poll: each call returns the next ``chunk`` items of every reader."""
    positions = dict.fromkeys(readers, 0)

    def poll():
        updates = []
        for name, items in readers.items():
            start = positions[name]
            if start > len(items):
                continue
            part = items[start : start + chunk]
            positions[name] = start + chunk
            updates.append(Update(name, part, done=positions[name] >= len(items)))
            if positions[name] >= len(items):
                positions[name] = len(items) + 1
        return updates

    return poll


def check_stream(events):
    """Elements before the watermark that covers them, watermark never back, ends at +inf;
    returns the elements in order and the items that arrived behind the watermark."""
    watermark = -math.inf
    out, behind = [], []
    for event in events:
        if isinstance(event, Watermark):
            assert event.at >= watermark
            watermark = event.at
        else:
            assert isinstance(event, Elements) and event.items
            for ts, item in event.items:
                out.append((ts, item))
                if ts < watermark:
                    behind.append(item)
    assert watermark == POS_INF
    return out, behind


def test_reorder_buffer_releases_in_order_once_max_delay_behind():
    buffer = ReorderBuffer(max_delay=5)
    for ts in (10, 8, 13, 9, 16):
        buffer.push(ts, f"t{ts}")
    assert buffer.watermark == 11
    assert [ts for ts, _ in buffer.pop_until(buffer.watermark)] == [8, 9, 10]
    buffer.push(None, "bad")  # no event time: travels at the newest time seen
    assert [item for _, item in buffer.drain(0)] == ["t13", "t16", "bad"]


def test_untimed_items_wait_for_the_first_event_time():
    buffer = ReorderBuffer(max_delay=0)
    buffer.push(None, "header-ish")
    assert buffer.watermark == -math.inf
    buffer.push(7, "first")
    assert list(buffer.pop_until(7)) == [(7, "header-ish"), (7, "first")]


def test_merged_watermark_is_the_minimum_over_readers_still_reading():
    merger = Merger(max_delay=2)
    merger.apply(Update("a", [(100, "a100")]))
    merger.apply(Update("b", [(50, "b50")]))
    released, watermark = merger.advance()
    assert watermark == 48 and released == []
    merger.apply(Update("b", [], done=True))
    released, watermark = merger.advance()
    assert watermark == 98 and released == [(50, "b50")]
    merger.apply(Update("a", [], done=True))
    released, watermark = merger.advance()
    assert watermark == POS_INF and released == [(100, "a100")]


def test_replay_of_shuffled_readers_is_sorted_with_nothing_behind_the_watermark():
    rng = random.Random(7)
    readers = {}
    for name in ("x", "y", "z"):
        times = sorted(rng.randrange(0, 300) for _ in range(200))
        items = [(t, (name, i)) for i, t in enumerate(times)]
        # shuffle within the 5 s reorder budget
        items.sort(key=lambda pair: pair[0] + rng.uniform(0, 5))
        readers[name] = items
    clock = FakeClock()
    events = list(stream_events(chunked_poll(readers, 17), StreamSettings(max_delay=5), clock))
    out, behind = check_stream(events)
    assert behind == []
    assert [ts for ts, _ in out] == sorted(ts for ts, _ in out)
    assert sorted(item for _, item in out) == sorted(i for r in readers.values() for _, i in r)
    assert clock.slept == []  # unpaced, and never idle


def test_a_line_later_than_the_budget_still_travels_behind_the_watermark():
    items = [(t, t) for t in range(100, 130)] + [(101, "late")]
    events = list(
        stream_events(chunked_poll({"a": items}, 5), StreamSettings(max_delay=5), FakeClock())
    )
    out, behind = check_stream(events)
    assert behind == ["late"]
    assert len(out) == len(items)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8)), max_size=40),
        min_size=1,
        max_size=3,
    ),
    st.integers(0, 8),
    st.integers(1, 10),
)
def test_property_every_item_served_once_and_only_the_too_late_behind(readers, budget, chunk):
    """Each reader's item at position i has event time ``base`` shifted by up to ``jitter``
    seconds; an item is behind the watermark only if its reader had already read an item more
    than ``budget`` seconds newer."""
    named = {}
    expected_behind = set()
    for r, pairs in enumerate(readers):
        items = []
        newest = -math.inf
        for i, (base, jitter) in enumerate(pairs):
            ts = base + jitter
            items.append((ts, (r, i)))
            newest = max(newest, ts)
        named[f"r{r}"] = items
        if not items:
            named[f"r{r}"] = []
    events = list(
        stream_events(chunked_poll(named, chunk), StreamSettings(max_delay=budget), FakeClock())
    )
    out, behind = check_stream(events)
    assert sorted(item for _, item in out) == sorted(
        item for items in named.values() for _, item in items
    )
    for r, items in enumerate(named.values()):
        newest = -math.inf
        for ts, item in items:
            if ts < newest - budget:
                expected_behind.add(item)
            newest = max(newest, ts)
        del r
    assert set(behind) <= expected_behind


def test_pacing_divides_event_time_by_speedup_with_heartbeats_while_waiting():
    items = [(0, "first"), (100, "second")]
    clock = FakeClock(start=5_000.0)
    settings_ = StreamSettings(max_delay=0, speedup=10, heartbeat=1.0)
    emitted_at = []
    heartbeats = 0
    for event in stream_events(chunked_poll({"a": items}, 10), settings_, clock):
        if isinstance(event, Elements):
            emitted_at += [(item, clock.now()) for _, item in event.items]
        elif event.at != POS_INF:
            heartbeats += 1
    assert emitted_at == [("first", 5_000.0), ("second", 5_010.0)]
    assert heartbeats >= 9  # one per second of the 10 s wait
    assert max(clock.slept) <= 1.0


def test_follow_mode_idle_reader_stops_holding_the_watermark():
    clock = FakeClock()
    rounds = iter(
        [
            [Update("busy", [(10, "b10")]), Update("quiet", [(5, "q5")])],
            *([[Update("busy", [(20 + i, f"b{20 + i}")])] for i in range(30)]),
        ]
    )
    settings_ = StreamSettings(max_delay=0, follow=True, idle_after=2.0, poll=0.2)
    watermarks = []

    def poll():  # each poll of the files takes 0.3 s
        clock.sleep(0.3)
        return next(rounds, [])

    for event in stream_events(poll, settings_, clock):
        if isinstance(event, Watermark):
            watermarks.append(event.at)
        if clock.now() > 1_020:
            break
    assert max(watermarks) >= 40  # 'quiet' stopped holding it at 5 once idle
    assert 5 in watermarks  # but held it while it was not yet idle


def test_clock_watermark_follows_the_clock_when_items_are_stamped_with_it():
    clock = FakeClock(start=2_000.0)
    calls = iter([[Update("dir", [(clock.now(), "file-1")])]])
    settings_ = StreamSettings(max_delay=0, follow=True, clock_watermark=True, poll=0.5)
    seen = []
    for event in stream_events(lambda: next(calls, []), settings_, clock):
        seen.append(event)
        if clock.now() >= 2_002:
            break
    assert seen[0] == Elements([(2_000.0, "file-1")])
    marks = [e.at for e in seen if isinstance(e, Watermark)]
    assert marks[0] == 2_000.0 and marks[-1] >= 2_001.5
