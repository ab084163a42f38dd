"""The governor: holds one route of one run under its policy.

tick() takes one reading and decides everything from it: memory's state and the batch size
(smaller in steps as memory nears its ceiling: policy.decide), the CPU this process may use now (the headroom its neighbours leave under
the ceiling: policy.CpuShare) and the concurrency, steadied against flapping; the same reading
goes into the samples and the events. before_batch() adds the waits: memory throttles with
waits for recovery, emergency brakes with progressive pauses, the stop after too many brakes,
the CPU duty cycle and the batch delay. call() wraps one provider call in the limiter
(monitoring.governor.call_limiter). The reading, clock, sleep and CPU clock are injected: tests
drive tick() with fixed readings and a fake clock, and nothing really sleeps.

CPU never throttles, brakes or stops a sync: it is held at its allowance by duty-cycling, and
while the duty cycle holds it its concurrency follows the allowance in proportion (calls that
would only wait for CPU need not be in flight), growing back a step a window once it is not
held.
"""

import gc
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace

from .call_limiter import Limiter
from .call_limits import AdaptiveLimit, Call, Pacer
from .events import Episodes, Event, Sample, describe_rss
from .memory import malloc_trim
from .policy import CpuAllowance, CpuShare, Decision, Ewma, RoutePolicy, State, SteadyValue, cpu_concurrency, decide
from .readings import Reading
from .readings.database import DatabaseCpu, database_cpu, own_cpu_seconds

RECOVERY_STEP_S = 0.5  # short sleeps while waiting for memory to recover
COLLECT_EVERY_S = 2.0
HOLD_GAP_S = 3.0  # a CPU hold episode ends after this long without the duty cycle holding
HOLD_TAU_S = 5.0  # the share of time held is averaged over about this long
SHRINK_ABOVE = 0.15  # held more than this share of the time: concurrency follows the allowance
GROW_BELOW = 0.02  # held less than this: more at once, a step per window
RATE_QUIET_S = 10.0  # a push-back episode ends after this long without one
MAX_DUTY_SLEEP_S = 5.0


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
        self.held_at = float("-inf")  # when it last asked for a sleep

    def delay(self, now: float, cpu_seconds: float, allowed_cores: float) -> float:
        """Charge the CPU used since the last call; return how long to sleep to be back in budget."""
        with self._lock:
            if self._virtual is None:
                self._virtual, self._cpu = now, cpu_seconds
                return 0.0
            used, self._cpu = max(cpu_seconds - self._cpu, 0.0), cpu_seconds
            self._virtual = max(self._virtual + used / allowed_cores, now - self.burst_s)
            if self._virtual > now:
                self.held_at = now
            return max(0.0, self._virtual - now)


# One of each per process: the CPU it used and what its neighbours use are the process's.
PROCESS_CPU_BUDGET = CpuBudget()
PROCESS_CPU_SHARE = CpuShare()


def allowance_now(policy: RoutePolicy, reading: Reading, usable_cores: float = 1.0) -> CpuAllowance:
    """The CPU this process may use now, by the process's own view of its neighbours."""
    PROCESS_CPU_SHARE.observe(reading)
    return PROCESS_CPU_SHARE.allowance(policy, reading.cpu_capacity, usable_cores)


class WaitClock:
    """Wall time during which at least one thread waited: overlapping waits of several threads
    count once, so it never exceeds the time that passed."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self._lock = threading.Lock()
        self._waiting, self._since, self._total = 0, 0.0, 0.0
        self.last_end = float("-inf")

    @contextmanager
    def waiting(self):
        with self._lock:
            if self._waiting == 0:
                self._since = self.clock()
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1
                if self._waiting == 0:
                    self.last_end = self.clock()
                    self._total += self.last_end - self._since

    def seconds(self) -> float:
        with self._lock:
            return self._total + (self.clock() - self._since if self._waiting else 0.0)

    def active_within(self, seconds: float) -> bool:
        with self._lock:
            return self._waiting > 0 or self.clock() - self.last_end < seconds


class CpuHold:
    """One route's CPU: the allowance its neighbours leave under the ceiling (policy.CpuShare),
    held by duty-cycling (the process's CpuBudget), and the concurrency that follows it: in
    proportion to the allowance while the duty cycle holds the route, back up a step per window
    once it no longer does, steadied against flapping (policy.SteadyValue)."""

    def __init__(self, policy: RoutePolicy, maximum: int, first: Reading, *, clock, cpu_clock, budget: CpuBudget, share: CpuShare, usable_cores: float,
                 database: DatabaseCpu = database_cpu):
        self.policy, self.maximum, self.clock, self.cpu_clock = policy, maximum, clock, cpu_clock
        self.budget, self.share, self.usable_cores, self.database = budget, share, usable_cores, database
        self.holds = WaitClock(clock)  # the time the duty cycle held the route
        self.held = Ewma(HOLD_TAU_S)  # as a share of the time
        self._held_seen, self._held_at = 0.0, clock()
        budget.delay(clock(), cpu_clock(), 1.0)  # start counting from now
        share.observe(first)
        self.allowance: CpuAllowance = share.allowance(policy, first.cpu_capacity, usable_cores)
        # A step that starts while the duty cycle holds its process (a step beside it, or just
        # before it) starts in proportion, rather than at its maximum and a change a moment later.
        holding = self.allowance.held and clock() - budget.held_at < HOLD_GAP_S
        self.cap = SteadyValue(cpu_concurrency(self.allowance, maximum) if holding else maximum)

    @property
    def held_share(self) -> float:
        return self.held.value or 0.0

    def update(self, reading: Reading, now: float) -> None:
        """A new reading: the allowance it leaves, and where concurrency should go."""
        self.share.observe(reading)
        self.allowance = self.share.allowance(self.policy, reading.cpu_capacity, self.usable_cores)
        held, elapsed = self.holds.seconds(), now - self._held_at
        if elapsed > 0:
            self.held.add(min((held - self._held_seen) / elapsed, 1.0), elapsed)
            self._held_seen, self._held_at = held, now
        if self.held_share > SHRINK_ABOVE:
            self.cap.propose(cpu_concurrency(self.allowance, self.maximum), now)
        elif self.held_share < GROW_BELOW:
            self.cap.propose(self.maximum, now)

    def duty_cycle(self, sleep: Callable[[float], None]) -> None:
        """When the process used more CPU than allowed, sleep until it is back at the allowance
        (one busy thread uses a whole core whatever the concurrency is)."""
        delay = self.budget.delay(self.clock(), self.cpu_clock(), self.allowance.cores)
        if delay > 0:
            with self.holds.waiting():
                sleep(min(delay, MAX_DUTY_SLEEP_S))

    def holding(self) -> bool:
        """Held now, or within the last HOLD_GAP_S (an episode does not end between two batches)."""
        return self.holds.active_within(HOLD_GAP_S)

    def describe(self) -> str:
        """What holds the route, with where the database's CPU is when it is not counted."""
        return self.allowance.describe() + self.database.note()

    def reason(self) -> str:
        a = self.allowance
        if a.held:
            return f"CPU: {self.describe()}; the duty cycle held the step {100 * self.held_share:.0f}% of the time"
        return f"CPU: no longer held (neighbours use {a.neighbours:.0f}% of the {a.ceiling:.0f}% ceiling){self.database.note()}"


@dataclass
class RunStats:
    """A route's figures, from exactly the samples its run's chart draws: the mean of their
    machine CPU and the highest of their peaks (each sample keeps the highest reading since the
    one before), so the picture and the numbers beside it agree. RSS: every reading's."""

    peak_rss_bytes: int = 0
    cpu_total: float = 0.0
    cpu_samples: int = 0
    peak_cpu_percent: float = 0.0

    @property
    def mean_cpu_percent(self) -> float:
        return self.cpu_total / self.cpu_samples if self.cpu_samples else 0.0

    def watch(self, reading: Reading) -> None:
        self.peak_rss_bytes = max(self.peak_rss_bytes, reading.rss_bytes)

    def add(self, sample: Sample) -> None:
        self.cpu_total += sample.reading.cpu_percent
        self.cpu_samples += 1
        self.peak_cpu_percent = max(self.peak_cpu_percent, sample.cpu_peak)


def _figures(p) -> str:
    """Memory for an event's detail, and the RSS ceiling's figure when that is what bit."""
    return f"memory {p.memory:.0f}%" + (f" ({p.reason})" if p.rss_bound else "")


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
        cpu_clock: Callable[[], float] = own_cpu_seconds,  # with the database backends serving the process
        collect: Callable[[], None] | None = None,
        cpu_budget: CpuBudget | None = None,
        cpu_share: CpuShare | None = None,
        usable_cores: float = 1.0,  # one Python process: the interpreter lock allows about one core (and its database's: readings.database)
        database: DatabaseCpu = database_cpu,  # where the database's CPU is, for the reasons given
    ):
        self.policy, self.read, self.recorder, self.io_bound = policy, read, recorder, io_bound
        self.clock, self._sleep, self.cpu_clock = clock, sleep, cpu_clock
        self.collect = collect or self._collect
        self.sample_every_s = sample_every_s
        self.limiter = Limiter(AdaptiveLimit(maximum=policy.io_max_concurrency), Pacer(maximum=calls_per_second), clock=clock)
        self.waits = WaitClock(clock)  # everything the governor made the step wait for
        self.stats = RunStats()
        self.consecutive_throttles = 0
        self.brakes = 0
        self.forced_sequential = False  # after a memory wait that ran out: one at a time until memory recovers
        self.bytes_per_record: float | None = None
        self.episodes = Episodes(recorder)
        self._lock = threading.RLock()  # the state below is shared with the threads that call()
        self.started_at = clock()  # the route's start, on its own clock
        self._last_sample_at = self._last_collect_at = self._last_pushback_at = float("-inf")
        self._cpu_peak = 0.0  # the machine's highest reading since the last sample
        first = self.reading = self.read()
        self.cpu = CpuHold(
            policy, policy.io_max_concurrency if io_bound else policy.max_concurrency, first, clock=clock, cpu_clock=cpu_clock,
            budget=cpu_budget or PROCESS_CPU_BUDGET, share=cpu_share or PROCESS_CPU_SHARE, usable_cores=usable_cores, database=database,
        )
        self.decision: Decision = self._decide(first)
        self.resource_cap = self.decision.concurrency
        self._limited_by = self.decision.limited_by
        self.concurrency = self.io_limit()
        self.batch_size = self.decision.batch_size

    # --- reading and deciding -------------------------------------------------

    def _decide(self, reading: Reading) -> Decision:
        decision = decide(reading, self.policy, io_bound=self.io_bound, cpu_cap=self.cpu.cap.value, bytes_per_record=self.bytes_per_record)
        if not decision.overloaded:
            self.forced_sequential = False  # memory is back under its ceiling
        if self.forced_sequential and decision.concurrency > 1:
            decision = replace(decision, concurrency=1, limited_by="memory")
        return decision

    def _event(self, kind: str, reading: Reading, detail: str, before: int | None = None, after: int | None = None) -> None:
        self.recorder.event(Event(kind, self.decision.pressure, reading.rss_bytes, before, after, detail))

    def tick(self) -> Decision:
        """Read once, decide, and record what changed (events, episodes, a sample at a bounded rate)."""
        with self._lock:
            reading, now = self.read(), self.clock()
            self.reading = reading  # the events of this decision carry the reading it came from
            self.stats.watch(reading)
            self._cpu_peak = max(self._cpu_peak, reading.cpu_percent)
            self.cpu.update(reading, now)
            decision = self._decide(reading)
            self.decision = decision
            cap_before, self.resource_cap = self.resource_cap, decision.concurrency
            self.limiter.set_cap(self.resource_cap)
            if self.resource_cap != cap_before:
                by_cpu = "cpu" in (decision.limited_by, self._limited_by)  # held by it, or let go by it
                why = self.cpu.reason() if by_cpu else _figures(decision.pressure)
                self._event("concurrency", reading, why, cap_before, self.resource_cap)
            self._limited_by = decision.limited_by
            self.concurrency = self.io_limit()
            if decision.batch_size != self.batch_size:
                self._event("batch_size", reading, f"{self.batch_size} -> {decision.batch_size} records: {_figures(decision.pressure)}")
                self.batch_size = decision.batch_size
            self._follow_episodes(now, reading)
            if now - self._last_sample_at >= self.sample_every_s:
                self._sample(now)
            return decision

    def _sample(self, now: float) -> None:
        """Record how the route stands: the chart's point and its figures' (RunStats) alike."""
        self._last_sample_at = now
        reading = self.reading
        sample = Sample(
            reading, self.decision.pressure.memory, self.resource_cap, self.io_limit() if self.io_bound else None,
            self.decision.batch_size, max(self._cpu_peak, reading.cpu_percent),
        )
        self._cpu_peak = 0.0
        self.stats.add(sample)
        self.recorder.sample(sample)

    def io_limit(self) -> int:
        """Calls allowed in flight now (for I/O-bound work), else the concurrency resources allow."""
        return self.limiter.allowed() if self.io_bound else self.resource_cap

    def calls_under_way(self) -> int:
        """How many provider calls a step should keep under way (monitoring.governor.call_limiter.Limiter.under_way)."""
        return self.limiter.under_way()

    # --- episodes ----------------------------------------------------------------

    def _follow_episodes(self, now: float, reading: Reading) -> None:
        """Start, carry on and end the conditions that last, from this tick's reading."""
        pressure, allowance = self.decision.pressure, self.cpu.allowance
        cpu_detail = self.cpu.describe() if allowance.held else None
        self.episodes.carry("cpu", "throttle", self.cpu.holding(), now, reading, pressure, cpu_detail, 100 - allowance.percent)
        overloaded = self.decision.overloaded
        memory_detail = f"{pressure.reason} over the {self.policy.max_memory_percent:.0f}% ceiling: one at a time, waiting for it to fall"
        self.episodes.carry("memory", "throttle", overloaded, now, reading, pressure, memory_detail, pressure.memory)
        if "rate" in self.episodes:
            self.episodes.carry("rate", "rate", now - self._last_pushback_at < RATE_QUIET_S, now, reading, pressure, None)

    def close(self) -> None:
        """The step ended: a last sample (its chart and figures reach its end), and what is
        still going on closed."""
        with self._lock:
            self._sample(self.clock())
            self.episodes.end_all(self.clock())

    # --- waiting -------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self.waits.waiting():
                self._sleep(seconds)

    def before_batch(self) -> Decision:
        """Everything that must happen before the next batch: may sleep, may raise GovernorStop."""
        decision = self.tick()
        if decision.overloaded:
            self._throttle(decision)
            decision = self.decision
        else:
            self.consecutive_throttles = 0
        self.cpu.duty_cycle(self.sleep)
        self.sleep(decision.delay_s)
        if decision.delay_s == 0:
            self._sleep(0)  # yield to other threads between batches
        return decision

    def settle(self) -> None:
        """The duty cycle alone: sleep off the CPU used beyond the allowance since it last ran
        (after a statement whose CPU was the database's, or before a step ends, so a step that
        ran long statements leaves no debt to a process that may never run another)."""
        self.cpu.duty_cycle(self.sleep)

    def _throttle(self, decision: Decision) -> None:
        """Memory over its ceiling: one at a time, collect, wait for it to fall; brake when it keeps on."""
        reading = self.reading
        self.consecutive_throttles += 1
        if decision.state == State.EMERGENCY:
            self._event("emergency", reading, f"{decision.pressure.reason} >= {self.policy.emergency_percent:.0f}%: concurrency 1, pause, collect", self.resource_cap, 1)
            self._one_at_a_time()
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
        """Short sleeps, re-reading each time, until memory is under its ceiling or max_wait has passed."""
        started, step = self.clock(), RECOVERY_STEP_S
        while True:
            waited = self.clock() - started
            if waited >= self.policy.max_wait_s:
                break
            self.sleep(min(step, self.policy.max_wait_s - waited))
            step = min(step * 2, 5.0)
            if not self.tick().overloaded:
                return
        reading = self.reading
        if self.policy.stop_after_wait:
            self._event("stop", reading, f"still overloaded after {self.policy.max_wait_s:.0f} s")
            raise GovernorStop(f"still overloaded after waiting {self.policy.max_wait_s:.0f} s")
        self._event("pause", reading, f"still overloaded after {self.policy.max_wait_s:.0f} s: going on at concurrency 1", self.resource_cap, 1)
        self._one_at_a_time(until_recovery=True)

    def _one_at_a_time(self, until_recovery: bool = False) -> None:
        with self._lock:
            self.forced_sequential = self.forced_sequential or until_recovery
            self.resource_cap = 1
            self.limiter.set_cap(1)

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
        """Wrap one provider call: the pace, room in flight; then how it went.

        The body sets the yielded limits.Call's outcome: PUSHBACK for 429 and 403 rate or quota
        answers, ERROR for 5xx and lost connections (the caller retries those alone); when the
        block ends, the Call says whether push-back persists (then the caller backs off long).
        Calls are not duty-cycled themselves: the step's one writer thread is, and the answers
        wait for it in a bounded queue, so its pace is theirs (many threads waking together
        for CPU budget cost more CPU than they saved).
        """
        ticket = self.limiter.acquire(self.sleep)  # waiting for the pace counts; for room in flight, not
        call = Call()
        try:
            yield call
        finally:
            pushback = self.limiter.release(ticket, self.clock(), call.outcome)
            call.persisting = pushback is not None and pushback.persisting
            if pushback is not None:
                self._pushed_back(pushback)

    def _pushed_back(self, change) -> None:
        if change.persisting:
            pace = f"{change.rate_before:.1f}" if change.rate_before else "unpaced"
            detail = (
                f"provider pushed back persistently: pace {pace} -> {change.rate_after:.1f} calls/s, "
                f"in flight limit {change.limit_before:.1f} -> {change.limit_after:.1f}"
            )
        else:
            detail = f"provider pushed back on a lone call: in flight limit {change.limit_before:.1f} -> {change.limit_after:.1f}, the call retried"
        with self._lock:
            now = self._last_pushback_at = self.clock()
            self.episodes.carry("rate", "rate", True, now, self.read(), self.decision.pressure, detail, severity=float(change.persisting))
