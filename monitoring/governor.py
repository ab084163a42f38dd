"""The governor: holds one route of one run under its policy.

tick() reads, decides and records what changed. before_batch() adds the waits: throttles with
resource-aware waits for recovery, emergency brakes with progressive pauses, the stop after too
many brakes, CPU duty-cycling and the batch delay. call() paces and counts provider calls and
feeds their outcome to AIMD. The reading, clock, sleep and CPU clock are injected: tests drive
tick() with fixed readings and a fake clock, and nothing really sleeps.
"""

import gc
import math
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from .events import Event, describe_rss
from .memory import malloc_trim
from .policy import AIMDLimit, Decision, Pacer, RoutePolicy, State, decide
from .readings import Reading

RECOVERY_STEP_S = 0.5  # short sleeps while waiting for recovery
COLLECT_EVERY_S = 2.0


def _figures(p) -> str:
    """CPU and memory for an event's detail, and the RSS ceiling's figure when that is what bit."""
    figures = f"CPU {p.cpu:.0f}%, memory {p.memory:.0f}%"
    return f"{figures} ({p.reason})" if p.reason.startswith("RSS") else figures


class GovernorStop(Exception):
    """The route must stop cleanly: committed batches stay, a re-run resumes."""


class CpuBudget:
    """The CPU time this process may use, shared by every governor in it: two steps running in
    one process must not both sleep for the same CPU seconds.

    A virtual clock advances by cpu_seconds / allowed_cores for the CPU used; the caller sleeps
    until the virtual clock catches up with now. Idle time banks at most `burst_s` of credit,
    so a pause is not followed by a burst over the ceiling.
    """

    def __init__(self, burst_s: float = 0.02):
        self.burst_s = burst_s
        self._lock = threading.Lock()
        self._virtual = self._cpu = None

    def delay(self, now: float, cpu_seconds: float, allowed_cores: float) -> float:
        """Charge the CPU used since the last call; return how long to sleep to be back in budget."""
        with self._lock:
            if self._virtual is None:
                self._virtual, self._cpu = now, cpu_seconds
                return 0.0
            used, self._cpu = max(cpu_seconds - self._cpu, 0.0), cpu_seconds
            self._virtual = max(self._virtual + used / allowed_cores, now - self.burst_s)
            return max(0.0, self._virtual - now)


PROCESS_CPU_BUDGET = CpuBudget()


@dataclass
class RunStats:
    peak_rss_bytes: int = 0
    cpu_total: float = 0.0
    cpu_samples: int = 0
    peak_cpu_percent: float = 0.0
    waited_s: float = 0.0

    @property
    def mean_cpu_percent(self) -> float:
        return self.cpu_total / self.cpu_samples if self.cpu_samples else 0.0


class Governor:
    def __init__(
        self,
        policy: RoutePolicy,
        *,
        read: Callable[[], Reading],
        recorder,
        io_bound: bool = False,
        calls_per_second: float | None = None,
        sample_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        cpu_clock: Callable[[], float] = time.process_time,
        collect: Callable[[], None] | None = None,
        cpu_budget: "CpuBudget | None" = None,
    ):
        self.policy, self.read, self.recorder, self.io_bound = policy, read, recorder, io_bound
        self.clock, self._sleep, self.cpu_clock = clock, sleep, cpu_clock
        self.collect = collect or self._collect
        self.sample_every_s = sample_every_s
        self.limit = AIMDLimit(limit=min(2, policy.io_max_concurrency), maximum=policy.io_max_concurrency)
        self.pacer = Pacer(maximum=calls_per_second)
        self.stats = RunStats()
        self.consecutive_throttles = 0
        self.brakes = 0
        self.forced_sequential = False  # after a wait that ran out: go on at concurrency 1
        self.bytes_per_record: float | None = None
        self._in_flight = 0
        self._lock = threading.Lock()
        self._last_sample_at = float("-inf")
        self._last_collect_at = float("-inf")
        self.cpu_budget = cpu_budget or PROCESS_CPU_BUDGET
        self.cpu_budget.delay(self.clock(), self.cpu_clock(), 1.0)  # start counting from now
        first = self.read()
        self.capacity = first.cpu_capacity
        self.io_cap = 0
        self.decision: Decision = self._decide(first)
        self.concurrency = self.decision.concurrency
        self.batch_size = self.decision.batch_size

    # --- reading and deciding -------------------------------------------------

    def _decide(self, reading: Reading) -> Decision:
        decision = decide(reading, self.policy, io_bound=self.io_bound, bytes_per_record=self.bytes_per_record)
        self.io_cap = 1 if self.forced_sequential else decision.concurrency  # what resources allow
        concurrency = self.io_limit()
        if concurrency != decision.concurrency:
            decision = Decision(decision.state, concurrency, decision.batch_size, decision.delay_s, decision.pressure)
        return decision

    def _event(self, kind: str, reading: Reading, detail: str, before: int | None = None, after: int | None = None):
        self.recorder.event(Event(kind, self.decision.pressure, reading.rss_bytes, before, after, detail))

    def tick(self) -> Decision:
        """Read, decide, record what changed, and a resource sample at a bounded rate.

        A concurrency event is recorded when resources change what is allowed; AIMD's steps
        for I/O-bound calls show in the samples instead (they move with every window).
        """
        allowed_before = self.io_cap
        reading = self.read()
        self.capacity = reading.cpu_capacity
        stats = self.stats
        stats.peak_rss_bytes = max(stats.peak_rss_bytes, reading.rss_bytes)
        stats.cpu_total += reading.cpu_percent
        stats.cpu_samples += 1
        stats.peak_cpu_percent = max(stats.peak_cpu_percent, reading.cpu_percent)
        decision = self._decide(reading)
        self.decision = decision
        p = decision.pressure
        if self.io_cap != allowed_before:
            self._event("concurrency", reading, _figures(p), allowed_before, self.io_cap)
        self.concurrency = decision.concurrency
        if decision.batch_size != self.batch_size:
            self._event("batch_size", reading, f"{self.batch_size} -> {decision.batch_size} records: {_figures(p)}")
            self.batch_size = decision.batch_size
        now = self.clock()
        if now - self._last_sample_at >= self.sample_every_s:
            self._last_sample_at = now
            self.recorder.sample(reading, p, decision.concurrency, decision.batch_size)
        return decision

    def io_limit(self) -> int:
        """Calls allowed in flight now: what resources allow, capped by AIMD for I/O-bound work.

        Once calls are paced, enough stay in flight to keep the pace (Little's law: rate ×
        latency), so a quota-bound step is held by its pace, not starved by a shrunken limit.
        """
        if not self.io_bound:
            return self.io_cap
        limit = self.limit.current()
        rate, latency = self.pacer.rate, self.limit.mean_latency
        if rate and latency:
            limit = max(limit, math.ceil(rate * latency) + 1)
        return min(self.io_cap, limit)

    # --- waiting -------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.waited_s += seconds
            self._sleep(seconds)

    def _overloaded(self, decision: Decision) -> bool:
        return decision.state in (State.OVERLOADED, State.EMERGENCY)

    def before_batch(self) -> Decision:
        """Everything that must happen before the next batch: may sleep, may raise GovernorStop."""
        decision = self.tick()
        if self._overloaded(decision):
            self._throttle(decision)
            decision = self.decision
        else:
            self.consecutive_throttles = 0
        self._duty_cycle()
        self.sleep(decision.delay_s)
        if decision.delay_s == 0:
            self._sleep(0)  # yield to other threads between batches
        return decision

    def _throttle(self, decision: Decision) -> None:
        reading = self.read()
        p = decision.pressure
        self.consecutive_throttles += 1
        self._event("throttle", reading, f"{p.reason} (consecutive {self.consecutive_throttles})")
        if decision.state == State.EMERGENCY:
            self._event("emergency", reading, f"{p.reason} >= {self.policy.emergency_percent:.0f}%: concurrency 1, pause, collect", self.concurrency, 1)
            self.concurrency = self.io_cap = 1
            self._collect_now(reading)
        if self.consecutive_throttles >= self.policy.brake_after:
            self.brakes += 1
            self.consecutive_throttles = 0
            if self.brakes > self.policy.max_brakes:
                self._event("stop", reading, "system consistently overloaded")
                raise GovernorStop("system consistently overloaded")
            pause = self.policy.brake_pause_s * self.brakes  # progressive: 8 s, 16 s, 24 s
            self._event("brake", reading, f"emergency brake #{self.brakes}: pause {pause:.0f} s after {self.policy.brake_after} throttles")
            self.sleep(pause)
        self._wait_for_recovery()

    def _wait_for_recovery(self) -> None:
        """Short sleeps, re-reading each time, until under the ceilings or max_wait has passed."""
        started, step = self.clock(), RECOVERY_STEP_S
        while True:
            waited = self.clock() - started
            if waited >= self.policy.max_wait_s:
                break
            self.sleep(min(step, self.policy.max_wait_s - waited))
            step = min(step * 2, 5.0)
            decision = self.tick()
            if not self._overloaded(decision):
                self._event("recovery", self.read(), f"back under the ceilings after {self.clock() - started:.1f} s")
                self.forced_sequential = False
                return
        reading = self.read()
        if self.policy.stop_after_wait:
            self._event("stop", reading, f"still overloaded after {self.policy.max_wait_s:.0f} s")
            raise GovernorStop(f"still overloaded after waiting {self.policy.max_wait_s:.0f} s")
        self._event("pause", reading, f"still overloaded after {self.policy.max_wait_s:.0f} s: going on at concurrency 1", self.concurrency, 1)
        self.forced_sequential = True
        self.concurrency = self.io_cap = 1

    def _duty_cycle(self) -> None:
        """Hold the CPU ceiling: when this process used more than its share, sleep until its use
        is back at the ceiling (one busy thread uses a whole core whatever the concurrency is)."""
        allowed = self.policy.max_cpu_percent / 100 * max(self.capacity, 1e-6)
        self.sleep(min(self.cpu_budget.delay(self.clock(), self.cpu_clock(), allowed), 5.0))

    # --- memory ----------------------------------------------------------------

    def after_batch(self, records: int, rss_before: int | None = None) -> None:
        """Learn bytes per record; under memory pressure collect garbage (and trim the heap)."""
        reading = self.read()
        if records and rss_before is not None and reading.rss_bytes > rss_before:
            growth = (reading.rss_bytes - rss_before) / records
            self.bytes_per_record = growth if self.bytes_per_record is None else 0.8 * self.bytes_per_record + 0.2 * growth
        if self.policy.collect_garbage and self.decision.pressure.memory > 70:
            self._collect_now(reading)

    def _collect_now(self, reading: Reading) -> None:
        now = self.clock()
        if not self.policy.collect_garbage or now - self._last_collect_at < COLLECT_EVERY_S:
            return
        self._last_collect_at = now
        before = reading.rss_bytes
        self.collect()
        after = self.read().rss_bytes
        self._event("collect", reading, f"RSS {describe_rss(before)} -> {describe_rss(after)}")

    def _collect(self) -> None:
        gc.collect()
        if self.policy.malloc_trim:
            malloc_trim()

    # --- provider calls ----------------------------------------------------------

    @contextmanager
    def call(self):
        """Wrap one provider call: wait for its slot in the pace, then report how it went.

        The body sets `outcome["rejected"] = True` when the provider pushed back (429, 403 rate).
        """
        with self._lock:
            delay = self.pacer.next_delay(self.clock())
        if delay > 0:
            self._sleep(delay)
            with self._lock:
                self.stats.waited_s += delay
        outcome = {"rejected": False}
        started = self.clock()
        with self._lock:
            self._in_flight += 1
        try:
            yield outcome
        finally:
            finished = self.clock()
            with self._lock:
                in_flight = self._in_flight
                self._in_flight -= 1
                rate_before, limit_before = self.pacer.rate, self.limit.limit
                self.pacer.on_result(finished, outcome["rejected"])
                self.limit.on_sample(finished - started, in_flight, outcome["rejected"])
            if outcome["rejected"]:
                pace = f"{rate_before:.1f}" if rate_before else "unpaced"
                self._event(
                    "rate", self.read(),
                    f"provider pushed back: pace {pace} -> {self.pacer.rate:.1f} calls/s, "
                    f"in flight limit {limit_before:.1f} -> {self.limit.limit:.1f}",
                    round(limit_before), round(self.limit.limit),
                )
