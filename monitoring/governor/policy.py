"""Decisions from readings: pure functions and small objects, no I/O, no clock, no ORM.

Memory lowers concurrency and batch sizes in steps below its ceiling (memory_cap, batch_plan),
and stops new work over it. CPU is shared with the neighbours: the ceiling caps
the machine's total, and a sync may use the headroom the rest of the machine leaves under it
(CpuShare), held by duty-cycling and by concurrency in proportion, never by an on/off switch.
Provider calls have their own limits (monitoring.governor.call_limits).
"""

import math
import threading
from dataclasses import dataclass, fields, replace
from enum import StrEnum

from .readings import Reading

MB = 1024 * 1024


class State(StrEnum):
    """Memory states (CPU never stops a sync: it shrinks the sync's share instead)."""

    OK = "ok"
    BUSY = "busy"  # memory above the route's sequential threshold: one at a time, no throttle yet
    OVERLOADED = "overloaded"  # memory over its ceiling: throttle
    EMERGENCY = "emergency"  # memory at the emergency threshold


@dataclass(frozen=True)
class RoutePolicy:
    """Limits for one route (users, tokens, relations, run). Checked once when made."""

    max_concurrency: int = 2  # for CPU-bound work: one interpreter gains little from more
    io_max_concurrency: int = 2  # how far AIMD may climb for I/O-bound calls
    sequential_above: float = 75.0
    brake_after: int = 5  # consecutive throttles before an emergency brake
    batch_size: int = 100
    batch_delay_s: float = 0.0
    max_cpu_percent: float = 80.0  # of the machine (container), neighbours included
    cpu_floor_percent: float = 10.0  # of one core: what a sync keeps when neighbours fill the ceiling
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
        for name in ("max_cpu_percent", "cpu_floor_percent", "max_memory_percent", "emergency_percent", "sequential_above"):
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
    rss_bound: bool = False  # the process's own RSS ceiling is that figure, not the machine's memory


def pressure(reading: Reading, policy: RoutePolicy) -> Pressure:
    """CPU and memory as percentages where the ceilings are policy.max_*_percent.

    With an RSS ceiling, RSS at the ceiling reads as max_memory_percent: every threshold then
    applies to the process's own memory the same way as to the container's.
    """
    memory, reason, rss_bound = reading.memory_percent, f"memory {reading.memory_percent:.0f}%", False
    if policy.rss_limit_mb:
        rss_percent = reading.rss_bytes / (policy.rss_limit_mb * MB) * policy.max_memory_percent
        if rss_percent > memory:
            memory, reason, rss_bound = rss_percent, f"RSS {reading.rss_bytes / MB:.0f} MB of {policy.rss_limit_mb:.0f} MB", True
    if policy.emergency_rss_mb and reading.rss_bytes >= policy.emergency_rss_mb * MB:
        memory = max(memory, policy.emergency_percent)
        reason, rss_bound = f"RSS {reading.rss_bytes / MB:.0f} MB >= emergency {policy.emergency_rss_mb:.0f} MB", True
    # The machine's CPU is recorded beside memory; what it allows is the CpuShare's business.
    return Pressure(cpu=reading.cpu_percent, memory=memory, reason=reason, rss_bound=rss_bound)


def state_of(p: Pressure, policy: RoutePolicy) -> State:
    if p.memory >= policy.emergency_percent:
        return State.EMERGENCY
    if p.memory > policy.max_memory_percent:
        return State.OVERLOADED
    if p.memory > policy.sequential_above:
        return State.BUSY
    return State.OK


# Where memory starts to count, as shares of the thresholds they follow: the ceiling (80% by
# default: two at once from 60%, smaller batches from 50%, half batches from 70%), and the
# sequential threshold (75% by default: the maximum below 45%). A site that moves a ceiling
# moves the steps under it; at the defaults these are the figures above.
TWO_AT_ONCE_FROM = 0.75  # of the memory ceiling
SMALLER_BATCHES_FROM = 0.625  # of the memory ceiling: 3/4 size, twice the delay
HALF_BATCHES_ABOVE = 0.875  # of the memory ceiling: half size, three times the delay
ALL_AT_ONCE_BELOW = 0.6  # of the sequential threshold


def memory_cap(memory: float, maximum: int, ceiling: float = 80.0) -> int:
    """Concurrency allowed by memory: over the ceiling one, from 3/4 of it at most two, else the maximum."""
    if memory > ceiling:
        return 1
    if memory >= ceiling * TWO_AT_ONCE_FROM:
        return min(2, maximum)
    return maximum


def optimal_concurrency(usage: float, maximum: int, sequential_above: float = 75.0) -> int:
    """Concurrency by usage (memory here): one over the sequential threshold, the maximum below
    60% of it, between them the middle, so that concurrency falls before the ceiling is reached."""
    if usage > sequential_above:
        return 1
    if usage < sequential_above * ALL_AT_ONCE_BELOW:
        return maximum
    return max(1, (maximum + 2) // 2)


def batch_plan(memory: float, size: int, delay_s: float, ceiling: float = 80.0) -> tuple[int, float]:
    """Batch size and delay by memory: near the ceiling half size and 3× delay, a little lower
    3/4 size and 2× delay, else as configured: smaller batches hold less at once."""
    if memory > ceiling * HALF_BATCHES_ABOVE:
        return max(1, size // 2), delay_s * 3
    if memory >= ceiling * SMALLER_BATCHES_FROM:
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
class CpuAllowance:
    """The CPU one process may use now: the headroom its neighbours leave under the ceiling."""

    cores: float  # what it may use now
    usable: float  # the most it could use (one Python process: about one core)
    capacity: float  # cores of the scope the ceiling is a share of
    ceiling: float  # percent of the capacity, for the whole machine
    neighbours: float  # percent of the capacity the rest of the machine uses (smoothed)

    @property
    def fraction(self) -> float:
        return self.cores / self.usable if self.usable else 1.0

    @property
    def percent(self) -> float:
        return 100.0 * self.cores / self.capacity

    @property
    def held(self) -> bool:
        """Is the ceiling the limit (rather than what the process could use)?"""
        return self.cores < self.usable * 0.999

    def describe(self) -> str:
        return f"held at {self.percent:.0f}% CPU: neighbours use {self.neighbours:.0f}% of the {self.ceiling:.0f}% ceiling"


class Ewma:
    """An exponential average over about `tau_s` seconds; each value weighs by the time it covers.

    Bias-corrected (the weights so far add up to one), so a first value that covers a moment,
    such as a reader's first reading, does not stand for the whole past. A jump of more than
    `jump` is followed faster: up over `rise_tau_s` (pressure is believed at once), down over
    `fall_tau_s` (relief a little later); readings that merely jitter move it over `tau_s`, the
    same both ways.
    """

    def __init__(self, tau_s: float, rise_tau_s: float | None = None, jump: float = 0.0, fall_tau_s: float | None = None):
        self.tau_s, self.jump = tau_s, jump
        self.rise_tau_s, self.fall_tau_s = rise_tau_s or tau_s, fall_tau_s or tau_s
        self.value: float | None = None
        self._weight = 0.0  # of everything seen so far: 1 − e^(−time covered / tau)

    def add(self, value: float, covers_s: float) -> float:
        tau = self.tau_s
        if self.value is not None and value > self.value + self.jump:
            tau = self.rise_tau_s
        elif self.value is not None and value < self.value - self.jump:
            tau = self.fall_tau_s
        keep = math.exp(-max(covers_s, 1e-9) / tau)
        total = self._weight * keep + (1.0 - keep)
        self.value = value if self.value is None else ((self.value * self._weight * keep) + value * (1.0 - keep)) / total
        self._weight = total
        return self.value


class CpuShare:
    """What the rest of the machine uses, smoothed, and so what this process may use.

    The neighbours' use is machine less own, over one scope, averaged over about `tau_s`
    seconds; a jump of more than `jump` points is followed over `rise_tau_s` up (a neighbour that
    starts: give way within a reading or two, so it does not push the machine over for long) and
    `fall_tau_s` down (a burst that ended: take the room back within a second or two). Readings
    that only jitter move it as much down as up, so it does not sit above the truth. A reading weighs by the window it covers, so skipped
    readings only slow the average. One per process, shared by its governors; a reading is
    counted once however many look at it. The database backends working for the sync are the
    sync's own where they are seen (readings.database), not neighbours.
    """

    def __init__(self, tau_s: float = 3.0, rise_tau_s: float = 0.3, jump: float = 5.0, fall_tau_s: float = 1.0):
        self.neighbours = Ewma(tau_s, rise_tau_s, jump, fall_tau_s)  # percent of the capacity
        self._last_at: float | None = None
        self._lock = threading.Lock()  # the governors of a process's threads share it: a reading counts once

    def observe(self, reading: Reading) -> None:
        with self._lock:
            if reading.at != self._last_at:
                self._last_at = reading.at
                self.neighbours.add(reading.neighbours_cpu_percent, reading.window_s)

    def allowance(self, policy: RoutePolicy, capacity: float, usable: float) -> CpuAllowance:
        """The ceiling less the neighbours, never below the floor nor above what the process can
        use. A ceiling of 100% is no ceiling: whatever the neighbours use, nothing is held."""
        usable = min(usable, capacity)
        with self._lock:
            neighbours = self.neighbours.value or 0.0
        if policy.max_cpu_percent >= 100:
            return CpuAllowance(cores=usable, usable=usable, capacity=capacity, ceiling=policy.max_cpu_percent, neighbours=neighbours)
        headroom = (policy.max_cpu_percent - neighbours) / 100.0 * capacity
        floor = min(policy.cpu_floor_percent / 100.0, usable)
        cores = min(max(headroom, floor), usable)
        return CpuAllowance(cores=cores, usable=usable, capacity=capacity, ceiling=policy.max_cpu_percent, neighbours=neighbours)


def cpu_concurrency(allowance: CpuAllowance, maximum: int) -> int:
    """Concurrency in proportion to the CPU allowed: the whole maximum when nothing holds the process."""
    return max(1, math.ceil(maximum * allowance.fraction - 1e-9))


@dataclass
class SteadyValue:
    """A whole number that follows its target without flapping: hysteresis and a minimum dwell.

    Down when the target is a clear step below (more than `deadband` of the value) and the last
    change is `dwell_s` old; at once when told it is urgent. Up one step (×`growth`) per window,
    and only when the target stayed above the value for the whole window: headroom that is
    really there, not a lull between two readings.
    """

    value: int
    dwell_s: float = 5.0
    window_s: float = 5.0
    deadband: float = 0.25
    growth: float = 1.5
    _changed_at: float = float("-inf")
    _above_since: float | None = None
    _lowest_above: int = 0

    def propose(self, target: int, now: float, *, urgent: bool = False) -> bool:
        """Move toward target if the rules allow it now; True when the value changed."""
        if target < self.value:
            self._above_since = None
            clear = self.value - target >= max(1.0, self.deadband * self.value)
            if urgent or (clear and now - self._changed_at >= self.dwell_s):
                return self._set(target, now)
            return False
        if target == self.value:
            self._above_since = None
            return False
        if self._above_since is None:
            self._above_since, self._lowest_above = now, target
        self._lowest_above = min(self._lowest_above, target)
        if now - self._above_since >= self.window_s and now - self._changed_at >= self.window_s:
            self._above_since = None
            return self._set(min(self._lowest_above, max(self.value + 1, int(self.value * self.growth))), now)
        return False

    def _set(self, value: int, now: float) -> bool:
        self.value, self._changed_at = value, now
        return True


@dataclass(frozen=True)
class Decision:
    state: State
    concurrency: int
    batch_size: int
    delay_s: float
    pressure: Pressure
    limited_by: str = ""  # "memory" or "cpu" when one of them holds concurrency under its maximum

    @property
    def overloaded(self) -> bool:
        """Memory over its ceiling (or at the emergency threshold): throttle."""
        return self.state in (State.OVERLOADED, State.EMERGENCY)


def decide(
    reading: Reading,
    policy: RoutePolicy,
    *,
    io_bound: bool = False,
    cpu_cap: int | None = None,
    bytes_per_record: float | None = None,
) -> Decision:
    """The next concurrency, batch size and delay. `cpu_cap` is the concurrency the CPU allows
    (the governor steadies it); provider calls have their own limit besides (monitoring.governor.call_limiter)."""
    p = pressure(reading, policy)
    state = state_of(p, policy)
    maximum = policy.io_max_concurrency if io_bound else policy.max_concurrency
    ceiling = policy.max_memory_percent
    concurrency = min(memory_cap(p.memory, maximum, ceiling), optimal_concurrency(p.memory, maximum, policy.sequential_above))
    if state != State.OK:
        concurrency = 1
    limited_by = "memory" if concurrency < maximum else ""
    if cpu_cap is not None and cpu_cap < concurrency:
        concurrency, limited_by = cpu_cap, "cpu"
    size, delay = batch_plan(p.memory, policy.batch_size, policy.batch_delay_s, ceiling)
    fitted = headroom_batch(reading, policy, bytes_per_record, concurrency)
    if fitted is not None:
        size = min(size, fitted)
    return Decision(state=state, concurrency=max(1, concurrency), batch_size=size, delay_s=delay, pressure=p, limited_by=limited_by)
