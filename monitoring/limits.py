"""Limits of provider calls: pure objects fed outcomes, no threads, no clock of their own.

As in Netflix's concurrency-limits, the algorithm (how many calls may be in flight, how fast
they may start) is apart from the limiter that enforces it (monitoring.limiter), which feeds
these objects under its one lock.
"""

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"  # an answer, whatever it said, that is not one of the below
    PUSHBACK = "pushback"  # 429, or 403 for a rate or quota: the provider asks us to slow down
    ERROR = "error"  # 5xx, timeout, lost connection: retried by the caller; about us only if it persists


@dataclass
class AdaptiveLimit:
    """Calls in flight: slow start, then additive increase and multiplicative decrease.

    Slow start (TCP's): the limit doubles every round trip (a round = as many answers as the
    limit) while it is used, until the first push-back or until a round's mean latency is `rise`
    times the first round's: then it halves (the last limit that held) and AIMD takes over:
    +1 per round while the limit is used and latency holds (no more than its mean plus 2.5
    deviations), ×`backoff` on a push-back or a latency jump (Vector's ARC, Netflix's AIMD).
    Answers to calls sent before a cut are the same congestion: at most one cut per round trip.
    """

    limit: float = 1.0
    minimum: int = 1
    maximum: int = 32
    backoff: float = 0.9
    rise: float = 1.5
    slow_start: bool = True
    _baseline: float | None = field(default=None, repr=False)  # the first round's mean latency
    _round: list = field(default_factory=list, repr=False)  # (latency, in flight) of this round
    _mean: float | None = field(default=None, repr=False)
    _variance: float = field(default=0.0, repr=False)
    _last_cut_at: float = field(default=float("-inf"), repr=False)

    def __post_init__(self):
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError("AdaptiveLimit needs 1 <= minimum <= maximum")
        self.limit = min(max(self.limit, self.minimum), self.maximum)
        self.slow_start = self.slow_start and self.limit < self.maximum

    def current(self) -> int:
        return max(self.minimum, min(self.maximum, int(self.limit)))

    @property
    def mean_latency(self) -> float | None:
        return self._mean

    def on_sample(self, now: float, latency_s: float, in_flight: int, dropped: bool) -> int:
        """One answer: how long it took, how many were in flight when it came, whether it was a push-back."""
        slow = self._track(latency_s)
        if dropped:
            self._cut(now, halve=self.slow_start)
        elif self.slow_start:
            self._slow_start(latency_s, in_flight)
        elif slow:
            self._cut(now, halve=False)
        elif in_flight >= self.limit / 2:
            self.limit = min(self.maximum, self.limit + 1 / max(self.limit, 1))  # about +1 per round
        return self.current()

    def _track(self, latency_s: float) -> bool:
        """Running mean and variance (exponential, as ExpAvgMeasurement); True for a latency jump."""
        if self._mean is None:
            self._mean = latency_s
            return False
        deviation = latency_s - self._mean
        slow = self._variance > 0 and deviation > 2.5 * self._variance**0.5 and deviation > 0.2 * self._mean
        self._mean += 0.1 * deviation
        self._variance = 0.9 * (self._variance + 0.1 * deviation * deviation)
        return slow

    def _slow_start(self, latency_s: float, in_flight: int) -> None:
        self._round.append((latency_s, in_flight))
        if len(self._round) < self.current():
            return
        mean = sum(lat for lat, _ in self._round) / len(self._round)
        used = max(n for _, n in self._round) >= self.limit / 2
        self._round = []
        if self._baseline is None:
            self._baseline = mean
        elif mean > self.rise * self._baseline:
            self._end_slow_start(self.limit / 2)
            return
        if used:
            self.limit = min(self.maximum, self.limit * 2)
            if self.limit >= self.maximum:
                self._end_slow_start(self.limit)

    def _cut(self, now: float, *, halve: bool) -> None:
        if now - self._last_cut_at < (self._mean or 0.0):
            return  # answers to calls sent before the last cut: the same congestion
        self._last_cut_at = now
        if halve:
            self._end_slow_start(self.limit / 2)
        else:
            self.limit = max(self.minimum, self.limit * self.backoff)

    def _end_slow_start(self, limit: float) -> None:
        self.slow_start, self._round = False, []
        self.limit = min(max(limit, self.minimum), self.maximum)


@dataclass
class ErrorRate:
    """Whether errors persist: more than `threshold` of the last `window` answers were errors.

    A lone 5xx or timeout says nothing about our pace (the caller retries that call alone);
    errors that persist are treated as push-back.
    """

    window: int = 40
    threshold: float = 0.25
    _last: deque = field(default_factory=deque, repr=False)
    _errors: int = field(default=0, repr=False)

    def add(self, error: bool) -> bool:
        """Count one answer; True when errors now persist."""
        self._last.append(error)
        self._errors += error
        if len(self._last) > self.window:
            self._errors -= self._last.popleft()
        return len(self._last) >= self.window // 4 and self._errors > self.threshold * len(self._last)


@dataclass
class Pacer:
    """The pace of calls, in calls per second: unpaced until the provider pushes back.

    On a push-back the rate drops to backoff × what was really sent over the last second (once
    per second: the push-backs of calls already in flight are the same congestion); while calls
    succeed it creeps up by `increase` per second, so a quota-bound step settles just under the
    quota instead of bouncing off it. `next_delay` says how long to wait before the next call.
    """

    rate: float | None = None
    backoff: float = 0.95
    increase: float = 0.5  # calls per second gained per second without a push-back
    minimum: float = 0.2
    maximum: float | None = None  # a quota we were told (calls per second), never exceeded
    _next_at: float = field(default=0.0, repr=False)
    _sent: deque = field(default_factory=deque, repr=False)
    _last_result_at: float | None = field(default=None, repr=False)
    _last_cut_at: float = field(default=float("-inf"), repr=False)

    def __post_init__(self):
        if self.maximum is not None and self.rate is None:
            self.rate = self.maximum

    def next_delay(self, now: float) -> float:
        """Reserve the next call slot; return how long to wait for it."""
        while self._sent and self._sent[0] <= now - 1.0:
            self._sent.popleft()
        if self.rate is None:
            self._sent.append(now)
            return 0.0
        at = max(now, self._next_at)
        self._next_at = at + 1.0 / self.rate
        self._sent.append(at)
        return at - now

    def on_result(self, now: float, pushed_back: bool) -> None:
        elapsed_s = 0.0 if self._last_result_at is None else max(now - self._last_result_at, 0.0)
        self._last_result_at = now
        if pushed_back and now - self._last_cut_at < 1.0:
            pass  # calls already in flight when the first was refused: one congestion, one cut
        elif pushed_back:
            self._last_cut_at = now
            # What the provider took over the last second is what its quota allows.
            observed = sum(1 for t in self._sent if t > now - 1.0)
            base = min(self.rate or observed, max(observed, self.minimum))
            self.rate = max(self.minimum, base * self.backoff)
        elif self.rate is not None:
            self.rate += self.increase * elapsed_s
        if self.rate is not None and self.maximum is not None:
            self.rate = min(self.rate, self.maximum)
