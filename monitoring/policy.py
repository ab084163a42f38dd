"""Decisions from readings: pure functions and small objects, no I/O, no clock, no ORM.

The tables are the seeds' (000/001); AIMD and pacing go beyond them for I/O-bound calls.
"""

from dataclasses import dataclass, field, fields, replace
from enum import StrEnum

from .readings import Reading

MB = 1024 * 1024


class State(StrEnum):
    OK = "ok"
    BUSY = "busy"  # above the route's sequential threshold: one at a time, no throttle yet
    OVERLOADED = "overloaded"  # over a ceiling: throttle
    EMERGENCY = "emergency"  # memory at the emergency threshold


@dataclass(frozen=True)
class RoutePolicy:
    """Limits for one route (users, tokens, relations, run). Checked once when made."""

    max_concurrency: int = 2  # for CPU-bound work (the seeds' table)
    io_max_concurrency: int = 2  # how far AIMD may climb for I/O-bound calls
    sequential_above: float = 75.0
    brake_after: int = 5  # consecutive throttles before an emergency brake
    batch_size: int = 100
    batch_delay_s: float = 0.0
    max_cpu_percent: float = 80.0
    max_memory_percent: float = 80.0
    emergency_percent: float = 90.0
    rss_limit_mb: float | None = None  # MAX_RSS_USAGE_MB: this process's own memory ceiling
    emergency_rss_mb: float | None = None  # EMERGENCY_THRESHOLD_MB
    brake_pause_s: float = 8.0
    max_brakes: int = 3  # more brakes than this in one run stops it
    max_wait_s: float = 45.0
    stop_after_wait: bool = False  # after max_wait: stop (True) or go on at concurrency 1
    collect_garbage: bool = True
    malloc_trim: bool = True
    parallel: bool = True  # the run route: users and tokens side by side when allowed

    def __post_init__(self):
        problems = []
        for name in ("max_concurrency", "io_max_concurrency", "brake_after", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a whole number >= 1")
        for name in ("max_cpu_percent", "max_memory_percent", "emergency_percent", "sequential_above"):
            if not 1 <= getattr(self, name) <= 100:
                problems.append(f"{name} must be between 1 and 100")
        for name in ("batch_delay_s", "brake_pause_s", "max_wait_s"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        for name in ("rss_limit_mb", "emergency_rss_mb"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        if self.max_brakes < 0:
            problems.append("max_brakes must not be negative")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def ceiling(self) -> int:
        return max(self.max_concurrency, self.io_max_concurrency)

    def with_overrides(self, **overrides) -> "RoutePolicy":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown governor settings: {', '.join(unknown)}")
        return replace(self, **overrides)


@dataclass(frozen=True)
class Pressure:
    cpu: float  # percent of CPU capacity
    memory: float  # percent of the memory budget; the process's own RSS ceiling counts too
    reason: str  # the figure that dominates, for log lines


def pressure(reading: Reading, policy: RoutePolicy) -> Pressure:
    """CPU and memory as percentages where the ceilings are policy.max_*_percent.

    With an RSS ceiling, RSS at the ceiling reads as max_memory_percent: every threshold then
    applies to the process's own memory the same way as to the container's.
    """
    memory, reason = reading.memory_percent, f"memory {reading.memory_percent:.0f}%"
    if policy.rss_limit_mb:
        rss_percent = reading.rss_bytes / (policy.rss_limit_mb * MB) * policy.max_memory_percent
        if rss_percent > memory:
            memory, reason = rss_percent, f"RSS {reading.rss_bytes / MB:.0f} MB of {policy.rss_limit_mb:.0f} MB"
    if policy.emergency_rss_mb and reading.rss_bytes >= policy.emergency_rss_mb * MB:
        memory = max(memory, policy.emergency_percent)
        reason = f"RSS {reading.rss_bytes / MB:.0f} MB >= emergency {policy.emergency_rss_mb:.0f} MB"
    # The machine's (container's) CPU. This process's own share is held by duty-cycling in the
    # governor, not by waits: reacting to it twice would starve the sync.
    cpu = reading.cpu_percent
    if cpu > memory:
        reason = f"CPU {cpu:.0f}%"
    return Pressure(cpu=cpu, memory=memory, reason=reason)


def state_of(p: Pressure, policy: RoutePolicy) -> State:
    if p.memory >= policy.emergency_percent:
        return State.EMERGENCY
    if p.cpu > policy.max_cpu_percent or p.memory > policy.max_memory_percent:
        return State.OVERLOADED
    if max(p.cpu, p.memory) > policy.sequential_above:
        return State.BUSY
    return State.OK


def memory_cap(memory: float, maximum: int) -> int:
    """Concurrency allowed by memory: above 80% one, 60–80% at most two, below 60% the maximum."""
    if memory > 80:
        return 1
    if memory >= 60:
        return min(2, maximum)
    return maximum


def optimal_concurrency(cpu: float, memory: float, maximum: int) -> int:
    """From max(CPU, memory): above 75 one, below 45 the maximum, between them the middle."""
    usage = max(cpu, memory)
    if usage > 75:
        return 1
    if usage < 45:
        return maximum
    return max(1, (maximum + 2) // 2)


def batch_plan(memory: float, size: int, delay_s: float) -> tuple[int, float]:
    """Batch size and delay by memory: above 70% half size, 3× delay; 50–70% 75%, 2×; else standard."""
    if memory > 70:
        return max(1, size // 2), delay_s * 3
    if memory >= 50:
        return max(1, size * 3 // 4), delay_s * 2
    return size, delay_s


def memory_headroom(reading: Reading, policy: RoutePolicy) -> float:
    """Bytes left under the memory ceilings (the container's and this process's own)."""
    budgets = [reading.memory_limit_bytes * policy.max_memory_percent / 100 - reading.memory_used_bytes]
    if policy.rss_limit_mb:
        budgets.append(policy.rss_limit_mb * MB - reading.rss_bytes)
    return max(min(budgets), 0.0)


def headroom_batch(reading: Reading, policy: RoutePolicy, bytes_per_record: float | None, concurrency: int) -> int | None:
    """Under a memory ceiling, the batch size that half the remaining headroom can hold."""
    if not bytes_per_record:
        return None
    return max(1, int(memory_headroom(reading, policy) / 2 / bytes_per_record / max(concurrency, 1)))


@dataclass(frozen=True)
class Decision:
    state: State
    concurrency: int
    batch_size: int
    delay_s: float
    pressure: Pressure


def decide(
    reading: Reading,
    policy: RoutePolicy,
    *,
    io_bound: bool = False,
    limit: int | None = None,
    bytes_per_record: float | None = None,
) -> Decision:
    """The next concurrency, batch size and delay. `limit` is the AIMD limit for I/O-bound calls."""
    p = pressure(reading, policy)
    state = state_of(p, policy)
    maximum = policy.io_max_concurrency if io_bound else policy.max_concurrency
    concurrency = min(memory_cap(p.memory, maximum), optimal_concurrency(p.cpu, p.memory, maximum))
    if limit is not None:
        concurrency = min(concurrency, limit)
    if state != State.OK:
        concurrency = 1
    size, delay = batch_plan(p.memory, policy.batch_size, policy.batch_delay_s)
    fitted = headroom_batch(reading, policy, bytes_per_record, concurrency)
    if fitted is not None:
        size = min(size, fitted)
    return Decision(state=state, concurrency=max(1, concurrency), batch_size=size, delay_s=delay, pressure=p)


@dataclass
class AIMDLimit:
    """Additive increase, multiplicative decrease of calls in flight (Netflix AIMDLimit, Vector's ARC).

    +1 when the limit was used (in flight ≥ half of it) with no back-pressure and latency no worse
    than its running mean plus 2.5 deviations; ×backoff on a rejection or on such a latency jump.
    """

    limit: float = 1.0
    minimum: int = 1
    maximum: int = 32
    backoff: float = 0.9
    _mean: float | None = field(default=None, repr=False)
    _variance: float = field(default=0.0, repr=False)

    def current(self) -> int:
        return max(self.minimum, min(self.maximum, int(self.limit)))

    @property
    def mean_latency(self) -> float | None:
        return self._mean

    def on_sample(self, latency_s: float, in_flight: int, rejected: bool) -> int:
        slow = False
        if self._mean is None:
            self._mean = latency_s
        else:
            deviation = latency_s - self._mean
            slow = self._variance > 0 and deviation > 2.5 * self._variance**0.5 and deviation > 0.2 * self._mean
            self._mean += 0.1 * deviation  # exponential averages: a tiny object, as in ExpAvgMeasurement
            self._variance = 0.9 * (self._variance + 0.1 * deviation * deviation)
        if rejected or slow:
            self.limit = max(self.minimum, self.limit * self.backoff)
        elif in_flight >= self.limit / 2:
            self.limit = min(self.maximum, self.limit + 1 / max(self.limit, 1))  # about +1 per window
        return self.current()


@dataclass
class Pacer:
    """The pace of calls, in calls per second: unpaced until the provider rejects one.

    On a rejection the rate drops to backoff × what was really sent over the last second (once
    per second: the rejections of calls already in flight are the same congestion); while
    calls succeed it creeps up by `increase` per second, so a quota-bound step settles just under
    the quota instead of bouncing off it. `next_delay` says how long to wait before the next call.
    """

    rate: float | None = None
    backoff: float = 0.95
    increase: float = 0.5  # calls per second gained per second without a rejection
    minimum: float = 0.2
    maximum: float | None = None  # a quota we were told (calls per second), never exceeded
    _next_at: float = field(default=0.0, repr=False)
    _sent: list = field(default_factory=list, repr=False)
    _last_result_at: float | None = field(default=None, repr=False)
    _last_cut_at: float = field(default=float("-inf"), repr=False)

    def __post_init__(self):
        if self.maximum is not None and self.rate is None:
            self.rate = self.maximum

    def next_delay(self, now: float) -> float:
        """Reserve the next call slot; return how long to wait for it."""
        self._sent = [t for t in self._sent if t > now - 1.0]
        if self.rate is None:
            self._sent.append(now)
            return 0.0
        at = max(now, self._next_at)
        self._next_at = at + 1.0 / self.rate
        self._sent.append(at)
        return at - now

    def on_result(self, now: float, rejected: bool) -> None:
        elapsed_s = 0.0 if self._last_result_at is None else max(now - self._last_result_at, 0.0)
        self._last_result_at = now
        if rejected and now - self._last_cut_at < 1.0:
            pass  # calls already in flight when the first was rejected: one congestion, one cut
        elif rejected:
            self._last_cut_at = now
            # What the provider took over the last second is what its quota allows.
            observed = len([t for t in self._sent if t > now - 1.0])
            base = min(self.rate or observed, max(observed, self.minimum))
            self.rate = max(self.minimum, base * self.backoff)
        elif self.rate is not None:
            self.rate += self.increase * elapsed_s
        if self.rate is not None and self.maximum is not None:
            self.rate = min(self.rate, self.maximum)
