"""The high-traffic alert rule as a pure, incremental evaluator (no Beam).

At every whole second ``t`` from the first to the last event second, ``hits(t)`` is the number of
requests with timestamp in ``[t - window + 1, t]`` (seconds without traffic count as zero) and the
average is ``hits(t) / window``. Above ``threshold`` (strictly) raises an alert; at or below it,
an active alert recovers. ``TrafficAlertRule`` keeps per-second counts only for the seconds still
inside the window or not yet evaluated, and a running sum, so each second costs O(1).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from transforms.records import Alert

ALERT = "alert"
RECOVER = "recover"


@dataclass
class TrafficAlertRule:
    threshold: float
    window: int
    counts: dict[int, int] = field(default_factory=dict)
    cursor: int | None = None  # the next second to evaluate
    last_second: int | None = None  # the newest event second seen
    running: int = 0  # hits(cursor - 1)
    active: bool = False

    def is_late(self, second: int) -> bool:
        """True when ``second`` was already evaluated: its requests can no longer count."""
        return self.cursor is not None and second < self.cursor

    def add(self, second: int, count: int = 1) -> None:
        if self.is_late(second):
            raise ValueError(f"second {second} is already evaluated")
        self.counts[second] = self.counts.get(second, 0) + count
        if self.last_second is None or second > self.last_second:
            self.last_second = second

    def evaluate_until(self, until: int) -> list[Alert]:
        """Evaluates every second up to ``min(until, last event second)``; returns the changes."""
        if self.last_second is None:
            return []
        if self.cursor is None:
            self.cursor = min(self.counts)
        end = min(until, self.last_second)
        changes: list[Alert] = []
        counts, window, limit = self.counts, self.window, self.threshold
        t = self.cursor
        sorted_pending = None  # the seconds with traffic, sorted once, when a gap first needs it
        while t <= end:
            if self.running == 0 and not self.active and t not in counts:
                # Silence with nothing in the window: no change is possible before the next
                # second with traffic, so jump to it (a gap costs O(log n), not a step per
                # second: a lone far-future line, or sparse traffic, stays cheap).
                if sorted_pending is None:
                    sorted_pending = sorted(s for s in counts if s > t)
                index = bisect_right(sorted_pending, t)
                t = sorted_pending[index] if index < len(sorted_pending) else end + 1
                if t > end:
                    break
            self.running += counts.get(t, 0) - counts.pop(t - window, 0)
            average = self.running / window
            if not self.active and average > limit:
                self.active = True
                changes.append(Alert(ALERT, t, self.running, average))
            elif self.active and average <= limit:
                self.active = False
                changes.append(Alert(RECOVER, t, self.running, average))
            t += 1
        if end >= self.cursor:
            self.cursor = end + 1
        return changes
