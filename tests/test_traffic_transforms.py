"""ComputeTrafficStats and DetectHighTraffic in TestPipeline and TestStream."""

from __future__ import annotations

import random
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from tests.conftest import beam_direct_pipeline, direct_pipeline, streaming_pipeline
from tests.test_alert_rule import reference_alerts
from transforms.records import AccessRecord, RankedCount, TrafficStats
from transforms.traffic import (
    ALERTS,
    LATE,
    ComputeTrafficStats,
    DetectHighTraffic,
    TrafficStatsCombineFn,
)


def record(ts, *, host="10.0.0.1", section="/api", status=200, size=100, user="-", line=0):
    return AccessRecord(
        host, "-", user, ts, "GET", section + "/x", section, "HTTP/1.1", status, size, "f", line
    )


def stamped(records):
    return [window.TimestampedValue(r, r.timestamp) for r in records]


def create_stamped(p, records):
    """``beam.Create`` of records, each timestamped with its event time."""
    return (
        p
        | "Create" >> beam.Create(records)
        | "Stamp" >> beam.Map(lambda r: window.TimestampedValue(r, r.timestamp))
    )


# DetectHighTraffic ---------------------------------------------------------------------------


def burst(start, seconds, per_second):
    return [start + s for s in range(seconds) for _ in range(per_second)]


def test_detect_high_traffic_in_batch_equals_the_reference_on_shuffled_input():
    rng = random.Random(5)
    timestamps = burst(1000, 200, 2) + burst(1050, 60, 30) + burst(1400, 30, 3)
    rng.shuffle(timestamps)
    with direct_pipeline() as p:
        records = [record(t, line=i) for i, t in enumerate(timestamps)]
        result = create_stamped(p, records) | DetectHighTraffic(10, 120, max_delay=5)
        assert_that(
            result[ALERTS] | beam.Map(lambda a: (a.kind, a.at, a.hits)),
            equal_to(reference_alerts(timestamps, 10, 120)),
        )
        assert_that(result[LATE], equal_to([]), label="NoLate")


def stream_of(batches):
    """TestStream: each batch is (records, watermark after it)."""
    stream = TestStream().advance_watermark_to(0)
    for records, watermark in batches:
        stream = stream.add_elements(stamped(records)).advance_watermark_to(watermark)
    return stream.advance_watermark_to_infinity()


def test_streaming_on_time_and_out_of_order_within_delay_match_the_reference():
    # Lines arrive shuffled within 5 s; the watermark trails the newest second by 5 s.
    rng = random.Random(2)
    timestamps = burst(100, 150, 2) + burst(130, 40, 40)
    timestamps.sort()
    batches, i = [], 0
    while i < len(timestamps):
        chunk = list(timestamps[i : i + 50])
        rng.shuffle(chunk)
        i += 50
        batches.append(([record(t) for t in chunk], max(chunk) - 5))
    with streaming_pipeline() as p:
        result = p | stream_of(batches) | DetectHighTraffic(10, 120, max_delay=5)
        assert_that(
            result[ALERTS] | beam.Map(lambda a: (a.kind, a.at, a.hits)),
            equal_to(reference_alerts(timestamps, 10, 120)),
        )
        assert_that(result[LATE], equal_to([]), label="NoLate")


def test_streaming_late_line_is_a_dead_letter_not_a_silent_drop():
    on_time = burst(100, 30, 1)
    batches = [
        ([record(t, line=t) for t in on_time], 140),  # watermark passes 129: seconds evaluated
        ([record(105, line=9999)], 141),  # second 105 was evaluated: late
        ([record(131, line=131)], 200),
    ]
    with streaming_pipeline() as p:
        result = p | stream_of(batches) | DetectHighTraffic(0.1, 10, max_delay=5)
        assert_that(
            result[LATE] | beam.Map(lambda d: (d.source, d.where, d.reason.split(":")[0])),
            equal_to([("f", 9999, "late")]),
        )
        # The late line does not count: alerts equal the reference without it.
        assert_that(
            result[ALERTS] | beam.Map(lambda a: (a.kind, a.at, a.hits)),
            equal_to(reference_alerts([*on_time, 131], 0.1, 10)),
            label="Alerts",
        )


@pytest.mark.parametrize(
    ("max_delay", "watermark"),
    [
        (5, 124),  # the watermark exactly max_delay behind the newest second: nothing evaluated
        (5, 125),  # one second more: every second the watermark passed is evaluated
        (5, 127),  # between newest - max_delay and newest
        (5, 140),  # past the newest second
        (2, 127),  # another max_delay: exactly max_delay behind
        (2, 128),  # and one second more
    ],
)
def test_when_a_second_is_evaluated_relative_to_max_delay(max_delay, watermark):
    """The detector evaluates nothing while the watermark is ``max_delay`` seconds or less
    behind the newest second it has seen; once the watermark is further ahead, every second the
    watermark has passed is evaluated, and a line for it that comes after is late (a dead
    letter, not counted). The rule, by hand: second ``s`` is evaluated when ``watermark >
    newest - max_delay`` and ``s < watermark``."""
    newest = 129
    on_time = burst(100, 30, 1)  # one line a second, 100..129
    probes = list(range(119, 130))  # then one line for each of the last eleven seconds
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements(stamped([record(t, line=t) for t in on_time]))
        .advance_watermark_to(watermark)
        .add_elements(stamped([record(s, line=1000 + s) for s in probes]))
        .advance_watermark_to(200)
        .advance_watermark_to_infinity()
    )
    late = [s for s in probes if watermark > newest - max_delay and s < watermark]
    counted = on_time + [s for s in probes if s not in late]
    # 1/s over a 10 s window is an average of exactly 1.0, not above the threshold: each
    # counted probe changes the alerts, so they show which probes were counted.
    expected_alerts = reference_alerts(counted, 1.0, 10)
    assert bool(expected_alerts) == (len(late) < len(probes))  # a counted probe alerts
    with streaming_pipeline() as p:
        result = p | stream | DetectHighTraffic(1.0, 10, max_delay=max_delay)
        assert_that(
            result[LATE] | beam.Map(lambda d: (d.source, d.where, d.reason.split(":")[0])),
            equal_to([("f", 1000 + s, "late") for s in late]),
        )
        assert_that(
            result[ALERTS] | beam.Map(lambda a: (a.kind, a.at, a.hits)),
            equal_to(expected_alerts),
            label="Alerts",
        )


def test_silence_recovers_at_the_right_second_and_threshold_is_strict():
    # 10/s for 12 s in a 10 s window at threshold 10: average exactly 10, no alert; then 11/s.
    exact = burst(0, 12, 10)
    above = [*burst(50, 12, 11), 80]  # a line at 80 keeps evaluation going through the silence
    with direct_pipeline() as p:
        result = create_stamped(p, [record(t) for t in exact + above]) | DetectHighTraffic(
            10, 10, 5
        )
        expected = reference_alerts(exact + above, 10, 10)
        assert [k for k, _, _ in expected] == ["alert", "recover"]
        assert_that(result[ALERTS] | beam.Map(lambda a: (a.kind, a.at, a.hits)), equal_to(expected))


# ComputeTrafficStats -------------------------------------------------------------------------


def test_stats_fn_methods_and_merging_in_any_order():
    fn = TrafficStatsCombineFn(top=2)
    records = [
        record(1, host="a", section="/api", status=200, size=10, user="u1"),
        record(2, host="b", section="/api", status=404, size=20, user="-"),
        record(3, host="b", section="/report", status=503, size=30, user="-"),
        record(4, host="c", section="/static", status=301, size=40, user="u2"),
    ]
    expected = fn.extract_output(
        fn.add_input(
            fn.add_input(
                fn.add_input(fn.add_input(fn.create_accumulator(), records[0]), records[1]),
                records[2],
            ),
            records[3],
        )
    )
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        accs = [fn.add_input(fn.create_accumulator(), records[i]) for i in order]
        merged = fn.merge_accumulators([fn.merge_accumulators(accs[:2]), accs[2], accs[3]])
        assert fn.extract_output(merged) == expected
    hits, size, sections, statuses, error_rate, by_hits, by_bytes, users, hosts, distinct_users = (
        expected
    )
    assert (hits, size, hosts, distinct_users) == (4, 100, 3, 3)
    assert sections == [RankedCount("/api", 2), RankedCount("/report", 1)]  # top 2, ties by name
    assert [s.name for s in statuses] == ["2xx", "3xx", "4xx", "5xx"]
    assert error_rate == 0.5
    assert by_hits == [RankedCount("b", 2), RankedCount("a", 1)]
    assert by_bytes == [RankedCount("b", 50), RankedCount("c", 40)]
    assert users == [RankedCount("-", 2), RankedCount("u1", 1)]
    assert fn.extract_output(fn.merge_accumulators([]))[0] == 0
    assert fn.extract_output(fn.create_accumulator())[4] == 0.0


def test_stats_per_ten_second_window_equal_a_direct_count():
    rng = random.Random(4)
    records = [
        record(
            1_549_573_860 + rng.randrange(60),
            host=f"10.0.0.{rng.randrange(6)}",
            section=rng.choice(["/api", "/report", "/static"]),
            status=rng.choice([200, 200, 404, 500]),
            size=rng.randrange(1000),
        )
        for _ in range(500)
    ]
    expected = {}
    for r in records:
        start = r.timestamp - r.timestamp % 10
        hits, size = expected.get(start, (0, 0))
        expected[start] = (hits + 1, size + r.bytes)
    with direct_pipeline() as p:
        stats = create_stamped(p, records) | ComputeTrafficStats(10, top=3)
        assert_that(
            stats | beam.Map(lambda s: (s.start, s.end - s.start, s.hits, s.bytes)),
            equal_to([(start, 10, h, b) for start, (h, b) in expected.items()]),
        )
        assert_that(
            stats | beam.Map(lambda s: sum(c.value for c in s.status_classes) == s.hits),
            equal_to([True] * len(expected)),
            label="StatusClassesAddUp",
        )
        # Each window's stats are in that window, as in streaming.
        windows = stats | beam.ParDo(
            lambda s, w=beam.DoFn.WindowParam: [(s.start, int(w.start), int(w.end))]
        )
        assert_that(
            windows,
            equal_to([(start, start, start + 10) for start in expected]),
            label="InTheirWindows",
        )


def test_batch_merge_of_a_runs_packed_partials_equals_one_pass_per_window():
    from transforms.traffic import _MergeWindowStatsFn, pack_windows, unpack_windows

    rng = random.Random(5)
    records = [
        record(1_549_573_860 + rng.randrange(10), host=f"h{rng.randrange(4)}", size=i)
        for i in range(40)
    ]
    fn = TrafficStatsCombineFn(top=3)

    def accumulate(part):
        acc = fn.create_accumulator()
        for r in part:
            fn.add_input(acc, r)
        return acc

    start, later = 1_549_573_860, 1_549_573_880
    other = [r._replace(timestamp=later) for r in records[:5]]
    groups = [
        {later: accumulate(other), start: accumulate(records[:15])},  # out of order
        {start: accumulate(records[15:])},
        {start: accumulate([])},
    ]
    assert [unpack_windows(pack_windows(accs)) for accs in groups] == groups
    packed = [pack_windows(accs) for accs in groups]
    first, second = _MergeWindowStatsFn(10, fn).process((start, packed))
    assert first.value == TrafficStats(start, start + 10, *fn.extract_output(accumulate(records)))
    assert first.timestamp == window.IntervalWindow(start, start + 10).max_timestamp()
    assert second.value == TrafficStats(later, later + 10, *fn.extract_output(accumulate(other)))


def test_stats_in_streaming_fire_per_window_as_the_watermark_passes():
    rng = random.Random(8)
    timestamps = [rng.randrange(0, 40) for _ in range(200)]
    counts = Counter(t - t % 10 for t in timestamps)
    early = [t for t in timestamps if t < 25]
    late_ok = [t for t in timestamps if t >= 25]
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements(stamped([record(t) for t in early]))
        .advance_watermark_to(20)
        .add_elements(stamped([record(t) for t in late_ok]))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        stats = p | stream | ComputeTrafficStats(10)
        assert_that(stats | beam.Map(lambda s: (s.start, s.hits)), equal_to(sorted(counts.items())))


def test_partial_stats_bundle_total_is_its_windows_merged_and_leaves_them_intact():
    from transforms.traffic import BUNDLE_TOTALS, PartialStatsFn

    fn = TrafficStatsCombineFn(top=3)
    records = [record(t, host=f"h{t % 3}", size=t) for t in (5, 12, 13, 27, 8)]
    partial = PartialStatsFn(10, fn, totals=True)
    partial.start_bundle()
    partial.process(records)  # a RecordList-like chunk, as the live stream gives
    outputs = list(partial.finish_bundle())
    (total,) = [o.value for o in outputs if getattr(o, "tag", None) == BUNDLE_TOTALS]
    windows = {o.value[0]: o.value[1] for o in outputs if getattr(o, "tag", None) is None}
    assert sorted(windows) == [0, 10, 20]
    assert [fn.extract_output(windows[s])[0] for s in (0, 10, 20)] == [2, 2, 1]
    first, last, merged = total.value
    assert (first, last, total.timestamp) == (0, 20, 0)
    one_pass = fn.create_accumulator()
    for r in records:
        fn.add_input(one_pass, r)
    assert fn.extract_output(merged) == fn.extract_output(one_pass)


def test_streaming_totals_are_every_record_so_far_whatever_the_bundles():
    rng = random.Random(9)
    batches = [[record(t, size=t % 7) for t in rng.sample(range(n, n + 30), 12)] for n in (0, 40)]
    stream = TestStream().advance_watermark_to(0)
    for batch in batches:
        stream = stream.add_elements(stamped(batch)).advance_watermark_to(batch[-1].timestamp + 31)
    every = [r for batch in batches for r in batch]
    first, last = min(r.timestamp for r in every), max(r.timestamp for r in every)
    with streaming_pipeline() as p:
        computed = p | stream.advance_watermark_to_infinity() | ComputeTrafficStats(10, totals=True)
        latest = computed["totals"] | beam.Map(lambda t: (t.hits, t.bytes, t.start, t.end))
        expected = (
            len(every),
            sum(r.bytes for r in every),
            first - first % 10,
            last - last % 10 + 10,
        )

        def latest_is_everything(updates):  # each update holds every record so far
            assert updates and max(updates) == expected, (updates, expected)

        assert_that(latest, latest_is_everything)


def test_stats_of_an_unbounded_input_without_the_streaming_flag_still_fire_per_window():
    # A TestStream is unbounded: the transform must take its windowed path even when the
    # options do not say --streaming (the DirectRunner switches to streaming by itself).
    timestamps = [3, 7, 12, 18, 19, 31]
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements(stamped([record(t) for t in timestamps]))
        .advance_watermark_to_infinity()
    )
    counts = Counter(t - t % 10 for t in timestamps)
    with beam_direct_pipeline() as p:
        stats = p | stream | ComputeTrafficStats(10)
        assert_that(stats | beam.Map(lambda s: (s.start, s.hits)), equal_to(sorted(counts.items())))


def test_streaming_first_bundle_not_earliest_and_an_outlier_second():
    # The first bundle holds a far-future outlier and seconds later than the next bundle's;
    # alerts must still come while the stream runs (assert_that only sees timer output emitted
    # before the end) and equal the reference over the lines that were not late.
    outlier = 10**9
    first = [record(t) for t in [*burst(140, 10, 3), outlier]]
    second = [record(t) for t in burst(100, 40, 3)]  # earlier seconds, still within the delay
    third = [record(t) for t in burst(150, 60, 3)]
    batches = [(first, 95), (second, 135), (third, 300)]
    with streaming_pipeline() as p:
        result = p | stream_of(batches) | DetectHighTraffic(1.0, 10, max_delay=5)
        timestamps = [r.timestamp for r in first + second + third if r.timestamp < outlier]
        assert_that(
            result[ALERTS]
            | beam.Filter(lambda a: a.at < outlier)
            | beam.Map(lambda a: (a.kind, a.at, a.hits)),
            equal_to(reference_alerts(timestamps, 1.0, 10)),
        )
        assert_that(result[LATE], equal_to([]), label="NoLate")


class _FakeState:
    def __init__(self):
        self.value = None

    def read(self):
        return self.value

    def write(self, value):
        self.value = value

    def clear(self):
        self.value = None


class _FakeTimer:
    def __init__(self):
        self.set_at: dict[str, int] = {}

    def set(self, timestamp, dynamic_timer_tag=""):
        self.set_at[dynamic_timer_tag] = int(timestamp.micros // 1_000_000)


def test_detector_sets_a_timer_at_each_second_the_watermark_may_pass_beside_the_first():
    """Seconds within ``max_delay`` of the newest get a timer each, beside the one at the
    first second to evaluate: an advance past several fires them in one round."""
    from array import array

    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import Timestamp

    from transforms.traffic import DetectHighTrafficFn, SecondCounts

    fn = DetectHighTrafficFn(1.0, 10, max_delay=3)
    rule, pending, progress, end = _FakeState(), _FakeState(), _FakeTimer(), _FakeTimer()
    lines = array("q", range(100, 111))
    seconds = SecondCounts(dict.fromkeys(range(100, 111), 1), {"f": (lines, lines)})
    list(fn.process(("all", seconds), GlobalWindow(), rule, pending, progress, end))
    # the first at 108 (the newest, 110, max_delay behind, plus one), then 109, 110, 111
    assert progress.set_at == {"": 108, "109": 109, "110": 110, "111": 111}
    assert pending.value == 108
    # fired at 109 (the watermark passed 108): seconds up to 108 evaluated, the rest followed
    progress.set_at.clear()
    list(fn.on_progress(Timestamp(109), rule, pending, progress))
    assert progress.set_at == {"": 110, "111": 111}


def test_streaming_totals_step_emits_everything_so_far_after_each_bundle_total():
    from transforms.traffic import UpdateTotalsFn

    fn = TrafficStatsCombineFn(top=2)
    update = UpdateTotalsFn(10, fn)
    state = _FakeState()
    bundles = [[record(3, size=1), record(14, size=2)], [record(41, size=4)], [record(7, size=8)]]
    emitted = []
    for batch in bundles:
        acc = fn.create_accumulator()
        for r in batch:
            fn.add_input(acc, r)
        starts = [r.timestamp - r.timestamp % 10 for r in batch]
        emitted += list(update.process(("totals", (min(starts), max(starts), acc)), state))
    assert [(t.start, t.end, t.hits, t.bytes) for t in emitted] == [
        (0, 20, 2, 3),
        (0, 50, 3, 7),
        (0, 50, 4, 15),
    ]
