"""Limits of provider calls: pure objects fed outcomes, no threads, no clock of their own.

As in Netflix's concurrency-limits, the algorithm (how many calls may be in flight, how fast
they may start) is apart from the limiter that enforces it (monitoring.governor.call_limiter), which feeds
these objects under its one lock.
"""

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"  # an answer, whatever it said, that is not one of the below
    PUSHBACK = "pushback"  # 429, or 403 for a rate or quota: the provider asks us to slow down
    ERROR = "error"  # 5xx, timeout, lost connection: retried by the caller; about us only if it persists


@dataclass
class Call:
    """One provider call as its guard sees it: the body says how it went (`outcome`); when the
    call ends the guard says whether a push-back persists (`persisting`), so the call backs off
    as long as a persisting one needs or is retried soon as a lone one deserves."""

    outcome: Outcome = Outcome.OK
    persisting: bool = True  # without a guard to judge, every push-back is taken seriously


@dataclass
class RecentShare:
    """Whether a kind of answer persists: more than `threshold` of the last `window` answers
    were of it (judged once a quarter of the window has been seen)."""

    window: int
    threshold: float
    _last: deque = field(default_factory=deque, repr=False)
    _hits: int = field(default=0, repr=False)

    def add(self, hit: bool) -> bool:
        """Count one answer; True when that kind now persists."""
        self._last.append(hit)
        self._hits += hit
        if len(self._last) > self.window:
            self._hits -= self._last.popleft()
        return len(self._last) >= self.window // 4 and self._hits > self.threshold * len(self._last)


def error_share() -> RecentShare:
    """A lone 5xx or timeout says nothing about our pace (the caller retries that call alone);
    errors that persist, over a quarter of the last 40 answers, are treated as push-back."""
    return RecentShare(window=40, threshold=0.25)


def pushback_share() -> RecentShare:
    """Google answers 403 rateLimitExceeded now and then far under any quota (1% of calls here is
    common): such a lone push-back costs its own call a retry and the in-flight limit a tenth.
    Over a fifth of the last 20 answers is no chance (at 1%, about once in a million windows):
    then the provider's limit is reached and the pace must follow it."""
    return RecentShare(window=20, threshold=0.2)


@dataclass
class AdaptiveLimit:
    """Calls in flight: slow start, then additive increase and multiplicative decrease.

    Slow start (TCP's, gentler): the limit grows ×1.4 every round trip (a round = as many
    answers as the limit) while it is used, until the first push-back or until a round's mean latency is
    `rise` times the first round's: then it halves (the last limit that held; no call goes out
    behind the first push-back until half of those in flight have answered) and AIMD takes
    over: +1 per round while the limit is used and latency holds (no more than its mean plus
    2.5 deviations), ×`backoff` on a push-back, lone or not, or a latency jump (Vector's ARC,
    Netflix's AIMD). Answers to calls sent before a cut are the same congestion: at most one
    cut per round trip.
    """

    limit: float = 1.0
    minimum: int = 1
    maximum: int = 32
    backoff: float = 0.9
    rise: float = 1.5
    growth: float = 1.4  # of the limit per round trip in slow start (see _slow_start)
    slow_start: bool = True
    _baseline: float | None = field(default=None, repr=False)  # the first round's mean latency
    _round: list = field(default_factory=list, repr=False)  # latencies of this round
    _round_peak: int = field(default=0, repr=False)  # the most in flight this round
    _round_size: int = field(default=1, repr=False)
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
        if dropped and self.slow_start:
            self._end_slow_start(self.limit / 2)  # no call behind the first push-back until half of those in flight answered
            self._last_cut_at = now
        elif dropped:
            self._cut(now)
        elif self.slow_start:
            self._slow_start(latency_s, in_flight)
        elif slow:
            self._cut(now)
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
        """×`growth` per round trip while the limit is used (half of it in flight this round),
        a little with each answer rather than a round's worth at once. TCP doubles; 1.4 reaches
        32 in ten round trips and, against a hidden quota, has half as many calls in flight
        when the first is refused: every one of those is refused too. Each round's mean
        latency is held against the first round's."""
        if not self._round:
            self._round_size = self.current()  # answers to the calls of one round trip
        self._round.append(latency_s)
        self._round_peak = max(self._round_peak, in_flight)
        if self._round_peak >= self.limit / 2:
            self.limit = min(self.maximum, self.limit * self.growth ** (1 / self._round_size))
        if len(self._round) >= self._round_size:
            mean = sum(self._round) / len(self._round)
            self._round, self._round_peak = [], 0
            if self._baseline is None:
                self._baseline = mean
            elif mean > self.rise * self._baseline:
                self._end_slow_start(self._round_size / 2)  # half what this round started with: the last limit that held
                return
        if self.limit >= self.maximum:
            self._end_slow_start(self.limit)

    def _cut(self, now: float) -> None:
        """×backoff, once per round trip."""
        if now - self._last_cut_at < (self._mean or 0.0):
            return  # answers to calls sent before the last cut: the same congestion
        self._last_cut_at = now
        self.limit = max(self.minimum, self.limit * self.backoff)

    def _end_slow_start(self, limit: float) -> None:
        self.slow_start, self._round = False, []
        self.limit = min(max(limit, self.minimum), self.maximum)


@dataclass
class Pacer:
    """The pace of calls, in calls per second: unpaced until push-back persists.

    Then the pace is what the provider accepted over the last second, less `backoff`: at a
    quota, the quota itself (what it took is what it allows), found at once rather than by
    sliding down towards it. Calls are spaced by 1/rate and, like a quota's own window, no more
    than the rate start in any second, counting the calls sent less those refused: the burst
    that found the quota is waited out instead of refused again. From a cut the pace follows
    CUBIC's curve in time (RFC 9438): back up to the accepted rate it was cut from, slower and
    slower, a plateau there (about `plateau_s` after the cut), then faster and faster above it,
    so a quota-bound step sits just under the quota for seconds at a time instead of bouncing
    off it, and a pace cut deep (errors that persisted, a quota that reset) finds its way back
    up. Each push-back once paced cuts again, once a second (the refusals of calls already sent
    are the same congestion). `next_delay` says how long to wait before the next call.
    """

    rate: float | None = None
    backoff: float = 0.975
    plateau_s: float = 10.0  # after a cut at 40 calls/s, how long until the pace is back at 40
    minimum: float = 0.2
    maximum: float | None = None  # a quota we were told (calls per second), never exceeded
    _next_at: float = field(default=0.0, repr=False)
    _sent: deque = field(default_factory=deque, repr=False)  # when the calls of the last second went, less the refused
    _accepted: deque = field(default_factory=deque, repr=False)  # when the answers accepted in the last second came
    _cut_at: float = field(default=float("-inf"), repr=False)
    _curve: tuple = field(default=(0.0, 0.0), repr=False)  # (the rate cut from, seconds from the cut back to it)

    def __post_init__(self):
        if self.maximum is not None and self.rate is None:
            self.rate = self.maximum

    @property
    def _growth(self) -> float:
        """CUBIC's C, in calls/s per s³: a cut at 40 calls/s is made up in `plateau_s`."""
        return 40 * (1 - self.backoff) / self.plateau_s**3

    @staticmethod
    def _prune(times: deque, now: float) -> None:
        while times and times[0] <= now - 1.0:
            times.popleft()

    def next_delay(self, now: float) -> float:
        """Reserve the next call slot; return how long to wait for it."""
        if self.rate is None:
            return 0.0
        at = max(now, self._next_at)
        self._prune(self._sent, at)
        excess = len(self._sent) - math.ceil(self.rate) + 1
        if excess > 0:  # a second's worth went out already: wait until enough of them are a second old
            at = max(at, self._sent[excess - 1] + 1.0)
        self._next_at = at + 1.0 / self.rate
        return at - now

    def on_sent(self, now: float) -> None:
        """A call went out now (only the last second's are kept: unpaced, nothing else prunes them)."""
        self._prune(self._sent, now)
        self._sent.append(now)

    def on_result(self, now: float, outcome: Outcome, *, sent_at: float, persisting: bool) -> None:
        """An answer to a call sent at `sent_at`; `persisting`: whether answers of its kind now
        persist (push-back; errors that persist are push-back too)."""
        if outcome is Outcome.OK:
            self._accepted.append(now)
        elif outcome is Outcome.PUSHBACK:
            try:
                self._sent.remove(sent_at)  # refused: not in the provider's count
            except ValueError:
                pass  # more than a second old already
        self._prune(self._accepted, now)
        if outcome is Outcome.OK and self.rate is not None and self._cut_at > float("-inf"):
            top, back_in = self._curve
            self.rate = max(self.minimum, top + self._growth * (now - self._cut_at - back_in) ** 3)
        elif persisting or (outcome is Outcome.PUSHBACK and self.rate is not None):
            self._cut(now)
        if self.rate is not None and self.maximum is not None:
            self.rate = min(self.rate, self.maximum)

    def _cut(self, now: float) -> None:
        if now - self._cut_at < 1.0:
            return  # calls already in flight when the first was refused: one congestion, one cut
        self._cut_at = now
        accepted = len(self._accepted)  # what the provider took over the last second is what it allows
        self.rate = max(self.minimum, min(self.rate or math.inf, accepted * self.backoff))
        top = max(accepted, self.rate)
        self._curve = (top, ((top - self.rate) / self._growth) ** (1 / 3))
