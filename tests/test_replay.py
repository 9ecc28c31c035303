"""The producer's pure logic (reorder, merge, pace, watermark) with a fake clock: no sleeps."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_tally.live.produce import access_poll
from beam_tally.live.replay import (
    POS_INF,
    Elements,
    End,
    Merger,
    ReorderBuffer,
    Session,
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
    """Elements before the watermark that covers them, watermark never back, ends with End
    then +inf; returns the elements in order and the items that arrived behind the watermark."""
    watermark = -math.inf
    out, behind = [], []
    assert events[-2:] == [End(), Watermark(POS_INF)]
    for event in events[:-2]:
        if isinstance(event, Watermark):
            assert event.at >= watermark
            watermark = event.at
        else:
            assert isinstance(event, Elements) and event.items
            for ts, item in event.items:
                out.append((ts, item))
                if ts < watermark:
                    behind.append(item)
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


def test_a_line_later_than_the_budget_travels_at_the_watermark_marked_late():
    items = [(t, t) for t in range(100, 130)] + [(101, "late")]
    events, marked = marking_session(chunked_poll({"a": items}, 5), StreamSettings(max_delay=5))
    out, behind = check_stream(events)
    assert behind == [] and marked == ["late"]
    assert len(out) == len(items)


def marking_session(poll, settings_: StreamSettings):
    """A session whose late items come out as ("late", item); returns (events, marked)."""
    marked = []

    def mark_late(ts, item, behind):
        assert ts < behind
        marked.append(item)
        return ("late", item)

    return list(Session(poll, settings_, FakeClock(), mark_late).events()), marked


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 60), max_size=40), min_size=1, max_size=3),
    st.integers(0, 8),
    st.integers(1, 10),
)
def test_property_late_exactly_beyond_the_budget_whatever_the_chunks(readers, budget, chunk):
    """Every item is served once and never behind the watermark; the items marked late are
    exactly those more than ``budget`` seconds older than an item read before them from the
    same reader, however the readers' input is chunked."""
    named = {
        f"r{r}": [(ts, (r, i)) for i, ts in enumerate(times)] for r, times in enumerate(readers)
    }
    events, marked = marking_session(chunked_poll(named, chunk), StreamSettings(max_delay=budget))
    out, behind = check_stream(events)
    assert behind == []
    served = [item[1] if isinstance(item[0], str) else item for _, item in out]
    assert sorted(served) == sorted(item for items in named.values() for _, item in items)
    expected = []
    for items in named.values():
        newest = -math.inf
        for ts, item in items:
            if ts < newest - budget:
                expected.append(item)
            newest = max(newest, ts)
    assert sorted(marked) == sorted(expected)
    on_time = [ts for ts, item in out if not isinstance(item[0], str)]
    assert on_time == sorted(on_time)


def test_pacing_divides_event_time_by_speedup_with_heartbeats_while_waiting():
    items = [(0, "first"), (100, "second")]
    clock = FakeClock(start=5_000.0)
    settings_ = StreamSettings(max_delay=0, speedup=10, heartbeat=1.0)
    emitted_at = []
    heartbeats = 0
    for event in stream_events(chunked_poll({"a": items}, 10), settings_, clock):
        if isinstance(event, Elements):
            emitted_at += [(item, clock.now()) for _, item in event.items]
        elif isinstance(event, Watermark) and event.at != POS_INF:
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


def test_late_items_leave_marked_at_the_watermark_never_behind_it():
    items = [(t, t) for t in range(100, 130)] + [(101, "late"), (126, "on time")]
    marked = []

    def mark_late(ts, item, watermark):
        marked.append((ts, item, watermark))
        return f"late {item}"

    poll = chunked_poll({"a": items}, 5)
    session = Session(poll, StreamSettings(max_delay=5), FakeClock(), mark_late)
    out, behind = check_stream(list(session.events()))
    assert behind == []
    assert [(ts, item, newest) for ts, item, newest in marked] == [(101, "late", 129)]
    sent_at = next(ts for ts, item in out if item == "late late")
    assert 101 < sent_at <= 129 - 5  # at the watermark, not behind it
    assert "on time" in [item for _, item in out]


def test_an_empty_replay_ends_and_a_follow_never_does():
    assert list(stream_events(list, StreamSettings(), FakeClock())) == [End(), Watermark(POS_INF)]
    clock = FakeClock()
    events = stream_events(lambda: [Update("a", [], done=True)], StreamSettings(follow=True), clock)
    seen = []
    for event in events:
        seen.append(event)
        if clock.now() > 1_010:
            break
    else:  # the generator stopped: a follow session ended
        pytest.fail(f"the follow session ended after {clock.now() - 1_000:g} s: {seen[-3:]}")
    # Only heartbeats (no End, no +inf), about one a second.
    assert all(isinstance(e, Watermark) and e.at < POS_INF for e in seen) and len(seen) >= 9


def test_a_followed_file_that_went_quiet_gets_heartbeats_and_polls_sleep(tmp_path):
    """The real reader: once a followed file stops growing, each poll finds nothing new, the
    session sleeps between polls and sends a heartbeat every second (a consumer that hears
    nothing for 30 s gives up)."""
    path = tmp_path / "a.csv"
    lines = "".join(
        f'"10.0.0.1","-","-",{1_000 + n},"GET /api/x HTTP/1.1",200,10\n' for n in range(10)
    )
    path.write_text('"remotehost","rfc931","authuser","date","request","status","bytes"\n' + lines)
    clock = FakeClock()
    settings_ = StreamSettings(max_delay=2, follow=True, heartbeat=1.0, poll=0.2)
    elements, heartbeats = [], 0
    for event in stream_events(access_poll(str(path), "auto", follow=True), settings_, clock):
        if isinstance(event, Elements):
            elements += event.items
        elif isinstance(event, Watermark):
            heartbeats += 1
        if clock.now() >= 1_010:
            break
    assert heartbeats >= 9  # about one a second over 10 s
    assert len(elements) == 11  # once idle, the file is caught up: all of it is served
    assert sum(clock.slept) >= 9.5  # polls slept: no busy loop


def follow_until(poll, settings_: StreamSettings, clock: FakeClock, seconds: float):
    """Events of a follow session for ``seconds`` of fake time."""
    events, start = [], clock.now()
    for event in stream_events(poll, settings_, clock):
        events.append(event)
        if clock.now() >= start + seconds:
            return events
    return events


def test_when_every_followed_reader_is_idle_the_newest_is_reached():
    """An old file and one an hour newer, both quiet: both are served in full, and a reader
    that has seen no event time yet (a header-only file) holds nothing back."""
    first = iter(
        [
            [
                Update("old", [(100 + i, f"old{i}") for i in range(10)]),
                Update("new", [(3_700 + i, f"new{i}") for i in range(10)]),
                Update("header-only", [(None, "header")]),
            ]
        ]
    )
    clock = FakeClock()
    settings_ = StreamSettings(max_delay=5, follow=True, idle_after=2.0)
    # 10 s: idle after 2 s, then the quiet seconds pass max_delay (5 s) behind the clock
    events = follow_until(lambda: next(first, []), settings_, clock, 10)
    served = [item for e in events if isinstance(e, Elements) for _, item in e.items]
    expected = [f"old{i}" for i in range(10)] + [f"new{i}" for i in range(10)] + ["header"]
    assert sorted(served) == sorted(expected)
    marks = [e.at for e in events if isinstance(e, Watermark)]
    assert 3_709 in marks  # caught up at the newest line, then the quiet seconds pass
    assert max(marks) > 3_709


def test_quiet_followed_files_let_event_time_pass_with_the_clock_times_speedup():
    """Once every followed file is quiet, the watermark moves on from the newest line at the
    clock's pace times --speedup, so the windows after it close and the alert rule sees the
    silence."""
    polls = iter([[Update("a", [(100 + i, f"a{i}") for i in range(10)])]])
    clock = FakeClock()
    settings_ = StreamSettings(max_delay=2, follow=True, idle_after=2.0, speedup=10)
    marks = []  # (clock, watermark)
    for event in stream_events(lambda: next(polls, []), settings_, clock):
        if isinstance(event, Watermark):
            marks.append((clock.now(), event.at))
        if clock.now() >= 1_010:
            break
    caught = next(at for at, mark in marks if mark == 109)
    after = [(at, mark) for at, mark in marks if at > caught]
    assert after, "the watermark stopped at the newest line"
    for at, mark in after:  # never faster than the clock times speedup
        assert 109 < mark <= 109 + (at - caught) * 10 + 1e-9
    last_at, last = after[-1]
    assert last >= 109 + (last_at - caught - 1.5) * 10  # and not slower, a heartbeat apart
    assert last >= 150  # the window [100, 110) and the ones after it close


def test_a_late_line_is_sent_at_once_not_paced_at_its_own_time():
    """A line late within its file but ahead of the stream's watermark does not hold back
    the other readers' lines until its own time comes."""
    polls = iter(
        [
            [Update("a", [(0, "a0")]), Update("b", [(0, "b0")])],
            [Update("a", [(300, "a300"), (200, "a200 late")])],
            [Update("b", [(t, f"b{t}") for t in range(1, 60)], done=True)],
            [Update("a", [], done=True)],
        ]
    )
    clock = FakeClock(start=0.0)
    settings_ = StreamSettings(max_delay=5, speedup=10)
    session = Session(lambda: next(polls, []), settings_, clock, lambda ts, item, behind: item)
    sent_at, events = {}, []
    for event in session.events():
        events.append(event)
        if isinstance(event, Elements):
            for _, item in event.items:
                sent_at[item] = clock.now()
    assert check_stream(events)[1] == []  # nothing behind the watermark
    assert sent_at["a200 late"] < 1.0  # at once, not at 200 / 10 = 20 s
    assert sent_at["b59"] == pytest.approx(5.9, abs=0.3)  # b's lines keep their pace


def test_in_a_replay_a_reader_without_an_event_time_yet_still_holds_the_watermark():
    """Reader b's first chunk is only its header: a's later lines must not make b's lines
    late (lateness must not depend on how the files were chunked)."""
    polls = iter(
        [
            [Update("a", [(100, "a100")], done=True), Update("b", [(None, "header")])],
            [Update("b", [(50, "b50"), (60, "b60")], done=True)],
        ]
    )
    events, marked = marking_session(lambda: next(polls, []), StreamSettings(max_delay=5))
    out, behind = check_stream(events)
    assert marked == [] and behind == []
    assert [item for _, item in out] == ["header", "b50", "b60", "a100"]


def test_a_quiet_follow_keeps_the_watermark_max_delay_behind_the_clock():
    """After the followed files went quiet, a line written late but within --max_delay of the
    clock is on time; one older than that is late."""
    clock = FakeClock(start=1_000.0)
    polls = {1_000.0: [Update("a", [(1_000, "first")])]}
    later = [(1_007, "within the budget"), (1_001, "beyond it")]

    def poll():
        now = clock.now()
        if now >= 1_010 and later:
            return [Update("a", [later.pop(0)])]
        return polls.pop(now, [])

    late = []
    settings_ = StreamSettings(max_delay=5, follow=True, idle_after=2.0)
    session = Session(poll, settings_, clock, lambda ts, item, behind: late.append(item) or item)
    for _ in session.events():
        if clock.now() >= 1_015:
            break
    assert late == ["beyond it"]


class RunningClock(FakeClock):
    """A clock that moves a second every time it is read: walking a release takes time."""

    def now(self) -> float:
        self.t += 1.0
        return self.t


def test_an_unpaced_replay_cuts_its_events_by_count_only_however_long_walking_them_takes():
    """Without a speedup every item is due at once: a release leaves in events of
    ``batch`` items, in order, each followed by its watermark, even on a clock that moves
    more than ``granularity`` between two items."""
    items = [(float(t), f"line {t}") for t in range(1_000, 1_010)]
    settings_ = StreamSettings(max_delay=0, batch=4)
    events = list(stream_events(chunked_poll({"a": items}, 100), settings_, RunningClock()))
    sent = [event.items for event in events if isinstance(event, Elements)]
    assert [len(items) for items in sent] == [4, 4, 2]
    assert [item for batch in sent for item in batch] == items
    marks = [event.at for event in events if isinstance(event, Watermark)]
    assert marks == sorted(marks) and marks[-1] == POS_INF
