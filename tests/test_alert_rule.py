"""The alert rule: the incremental evaluator against a ten-line plain-Python reference."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.alert_rule import ALERT, RECOVER, TrafficAlertRule, changes_of_counts


def reference_alerts(timestamps, threshold, window):
    """The rule of docs/design.md, as directly as it can be written."""
    per_second, changes, active = Counter(timestamps), [], False
    for t in range(min(per_second, default=0), max(per_second, default=-1) + 1):
        hits = sum(per_second.get(s, 0) for s in range(t - window + 1, t + 1))
        if not active and hits / window > threshold:
            active, changes = True, [*changes, (ALERT, t, hits)]
        elif active and hits / window <= threshold:
            active, changes = False, [*changes, (RECOVER, t, hits)]
    return changes


def run_rule(timestamps, threshold, window, pieces=1, seed=0):
    """Feeds the rule in ``pieces`` steps, shuffled within each, evaluating between steps."""
    rule = TrafficAlertRule(threshold, window)
    changes = []
    ordered = sorted(timestamps)
    rng = random.Random(seed)
    size = max(1, len(ordered) // pieces)
    for start in range(0, len(ordered), size):
        chunk = ordered[start : start + size]
        rng.shuffle(chunk)
        for second, count in Counter(chunk).items():
            rule.add(second, count)
        # Evaluate only what every later piece can no longer change.
        if start + size < len(ordered):
            changes += rule.evaluate_until(ordered[start + size] - 1)
    changes += rule.evaluate_until(rule.last_second if rule.last_second is not None else 0)
    return [(c.kind, c.at, c.hits) for c in changes]


traffic = st.lists(st.integers(0, 400), max_size=600)


@given(traffic, st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0]), st.sampled_from([1, 5, 30, 120]))
@settings(max_examples=200, deadline=None)
def test_rule_equals_reference_on_random_traffic(timestamps, threshold, window):
    assert run_rule(timestamps, threshold, window) == reference_alerts(
        timestamps, threshold, window
    )


@given(traffic, st.integers(1, 8), st.integers(0, 10_000))
@settings(max_examples=100, deadline=None)
def test_rule_is_the_same_however_input_is_split_and_ordered(timestamps, pieces, seed):
    assert run_rule(timestamps, 0.1, 30, pieces, seed) == reference_alerts(timestamps, 0.1, 30)


@given(
    traffic,
    st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0, 2 / 3]),
    st.sampled_from([1, 2, 5, 30, 120]),
)
@settings(max_examples=300, deadline=None)
def test_changes_of_counts_at_once_equal_the_rule_second_by_second(timestamps, threshold, window):
    """The batch evaluation (only the seconds where a count comes in or goes out) against the
    incremental rule, alerts' hits and averages included."""
    per_second = Counter(timestamps)
    rule = TrafficAlertRule(threshold, window)
    for second, count in per_second.items():
        rule.add(second, count)
    expected = rule.evaluate_until(max(per_second, default=0))
    seconds = np.array(sorted(per_second), np.int64)
    counts = np.array([per_second[s] for s in sorted(per_second)], np.int64)
    assert changes_of_counts(seconds, counts, threshold, window) == expected


def test_alert_at_the_second_the_average_exceeds_and_recovery_after_silence():
    # 13 requests per second for 100 s in a 120 s window at threshold 10: hits 1,200 is not
    # above (average exactly 10), 1,201 is.
    timestamps = [s for s in range(1000, 1100) for _ in range(13)] + [1300]
    changes = run_rule(timestamps, 10.0, 120)
    first_above = next(t for t in range(1000, 1100) if 13 * (t - 999) > 1200)
    assert changes[0] == (ALERT, first_above, 13 * (first_above - 999))
    # Silence: the window empties second by second; recovery when hits drop to 1,200 or less.
    recover_at = next(t for t in range(1100, 1300) if 13 * (1099 - (t - 120)) <= 1200)
    assert changes[1] == (RECOVER, recover_at, 13 * (1099 - (recover_at - 120)))
    assert len(changes) == 2


def test_average_exactly_at_threshold_does_not_alert():
    timestamps = [s for s in range(0, 120) for _ in range(10)]
    assert run_rule(timestamps, 10.0, 120) == []
    assert run_rule([*timestamps, 119], 10.0, 120) == [(ALERT, 119, 1201)]


def test_late_second_is_refused_once_evaluated():
    rule = TrafficAlertRule(1.0, 10)
    rule.add(5)
    rule.evaluate_until(7)
    assert rule.is_late(5)
    assert not rule.is_late(6)  # never evaluated: seconds after the last event stay open
    with pytest.raises(ValueError, match="already evaluated"):
        rule.add(4)


def test_a_far_future_line_does_not_make_the_rule_walk_the_gap():
    timestamps = [*[5] * 30, 253_402_300_799]  # 9999-12-31T23:59:59Z
    # 30 hits at second 5 (average 3 > 1) alert; the window empties at 15 and recovers; the
    # lone far-future hit (average 0.1) changes nothing. (The reference would walk the gap.)
    assert run_rule(timestamps, 1.0, 10) == [(ALERT, 5, 30), (RECOVER, 15, 0)]
    assert reference_alerts([*[5] * 30, 40], 1.0, 10) == [(ALERT, 5, 30), (RECOVER, 15, 0)]
    # And the gap never costs a step per second (this would take hours otherwise).
    rule = TrafficAlertRule(0.0, 120)
    rule.add(0)
    rule.add(10**12)
    assert [c.at for c in rule.evaluate_until(10**12)] == [0, 120, 10**12]


def test_sparse_traffic_is_evaluated_in_time_linear_in_its_seconds():
    # 30,000 lines 200 s apart: every gap is a jump (this took 20 s when each jump rescanned).
    timestamps = [i * 200 for i in range(30_000)]
    rule = TrafficAlertRule(0.0, 120)
    for second in timestamps:
        rule.add(second)
    changes = rule.evaluate_until(timestamps[-1])
    assert len(changes) == 2 * 30_000 - 1  # alert at each line, recovery 120 s later
    assert changes[:2] == [(ALERT, 0, 1, 1 / 120), (RECOVER, 120, 0, 0.0)]
