"""A simulated machine and a simulated provider for the real governor and limiter, on a fake clock.

Nothing sleeps: time moves when the simulated sync works or when the governor tells it to
sleep (as Vector tests its adaptive concurrency against simulated services).
"""

import heapq
import random
from dataclasses import dataclass, field

from monitoring.governor.call_limiter import Limiter
from monitoring.governor.call_limits import AdaptiveLimit, Outcome, Pacer
from monitoring.governor.events import ListRecorder
from monitoring.governor.policy import CpuShare, RoutePolicy
from monitoring.governor.readings import Reading
from monitoring.governor.route import CpuBudget, Governor

GB = 1024**3


@dataclass
class Machine:
    """Two cores; a neighbour whose load (share of the machine) follows a schedule; one sync
    process that is either working (it wants one core), waiting on its database (whose backend
    then wants one core for it) or asleep. Readings every `interval_s`, with a little noise on
    the machine's figure, as /proc/stat gives them; they count the backend's CPU as the sync's
    own when `database_counted` (a server on this machine whose processes are seen), else as a
    neighbour's."""

    schedule: list  # [(from second, neighbour share of the machine, 0..1)]
    capacity: float = 2.0
    interval_s: float = 0.5
    noise: float = 2.0  # percent, uniform ±
    seed: int = 1
    dt: float = 0.005
    database_counted: bool = True
    now: float = 0.0
    process_cpu: float = 0.0
    database_cpu: float = 0.0  # what the sync's database backend used for it
    trace: list = field(default_factory=list)  # (t, machine busy cores, sync cores with its backend's, neighbour cores) per dt
    latest: Reading | None = None

    def __post_init__(self):
        self._rng = random.Random(self.seed)
        self._window = [0.0, 0.0]  # machine busy, sync busy as readings count it (core-seconds) since the last reading
        self._next_reading = self.interval_s
        self.latest = self._reading(0.0, 0.0, self.interval_s)

    def neighbour(self, t: float) -> float:
        share = 0.0
        for start, value in self.schedule:
            if t >= start:
                share = value
        return share * self.capacity

    def own_cpu(self) -> float:
        """The sync's CPU seconds as its governor's clock reads them."""
        return self.process_cpu + (self.database_cpu if self.database_counted else 0.0)

    def _reading(self, machine: float, own: float, window: float) -> Reading:
        cpu = 100 * machine / window / self.capacity + self._rng.uniform(-self.noise, self.noise)
        return Reading(
            at=self.now, source="simulated", rss_bytes=100 * 2**20, process_cpu_percent=100 * own / window / self.capacity,
            cpu_percent=min(max(cpu, 0.0), 100.0), cpu_capacity=self.capacity, memory_used_bytes=GB // 10,
            memory_limit_bytes=GB, cpu_scope="simulated, 2 CPUs", window_s=window,
        )

    def _step(self, working: bool, in_database: bool = False) -> float:
        """One dt; return the CPU the sync (or its backend) got."""
        neighbour = self.neighbour(self.now)
        sync = min(1.0, self.capacity - neighbour) if working else 0.0
        if neighbour + sync > self.capacity:  # the scheduler shares fairly
            sync = self.capacity * sync / (neighbour + sync)
        self.now += self.dt
        if in_database:
            self.database_cpu += sync * self.dt
        else:
            self.process_cpu += sync * self.dt
        self._window[0] += (neighbour + sync) * self.dt
        self._window[1] += sync * self.dt if self.database_counted or not in_database else 0.0
        self.trace.append((self.now, neighbour + sync, sync, neighbour))
        if self.now >= self._next_reading - 1e-9:
            self.latest = self._reading(*self._window, self.interval_s)
            self._window = [0.0, 0.0]
            self._next_reading += self.interval_s
        return sync * self.dt

    def query(self, cpu_seconds: float) -> None:
        """A statement: the database backend works `cpu_seconds` for the sync while it waits."""
        done = 0.0
        while done < cpu_seconds - 1e-12:
            done += self._step(True, in_database=True)

    def work(self, cpu_seconds: float) -> None:
        done = 0.0
        while done < cpu_seconds - 1e-12:
            done += self._step(True)

    def sleep(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-12:
            self._step(False)

    def windows(self, seconds: float = 5.0, start: float = 0.0):
        """(start, end, machine %, sync %, neighbour %) of each window of `seconds`, a second apart."""
        out, t = [], start
        while t + seconds <= self.now:
            rows = [r for r in self.trace if t < r[0] <= t + seconds]
            n = len(rows)
            out.append((t, t + seconds, *(100 * sum(r[i] for r in rows) / n / self.capacity for i in (1, 2, 3))))
            t += 1.0
        return out


def run_cpu_bound_sync(machine: Machine, seconds: float, policy: RoutePolicy = RoutePolicy(), batch_cpu_s: float = 0.02):
    """A CPU-bound step (one writer thread) under the real governor until `seconds` have passed."""
    recorder = ListRecorder()
    governor = Governor(
        policy, read=lambda: machine.latest, recorder=recorder, clock=lambda: machine.now, sleep=machine.sleep,
        cpu_clock=lambda: machine.process_cpu, collect=lambda: None, cpu_budget=CpuBudget(), cpu_share=CpuShare(),
    )
    caps = [(0.0, governor.resource_cap)]
    while machine.now < seconds:
        governor.before_batch()
        machine.work(batch_cpu_s)
        if governor.resource_cap != caps[-1][1]:
            caps.append((machine.now, governor.resource_cap))
    governor.close()
    return governor, recorder, caps


def run_statement_sync(machine: Machine, seconds: float, policy: RoutePolicy = RoutePolicy(), *, statement_cpu_s: float = 0.04,
                       python_cpu_s: float = 0.002):
    """A set-based step (relations) under the real governor until `seconds` have passed: each
    batch is a little Python and one statement that the database works on. The governor's CPU
    clock is the machine's own_cpu (the backend's counted when the machine sees it), and it may
    use two cores, the interpreter's and its backend's, as syncapp.governance gives a step
    whose database is here. Returns (governor, recorder, concurrency changes, statements)."""
    recorder = ListRecorder()
    governor = Governor(
        policy, read=lambda: machine.latest, recorder=recorder, clock=lambda: machine.now, sleep=machine.sleep,
        cpu_clock=machine.own_cpu, collect=lambda: None, cpu_budget=CpuBudget(), cpu_share=CpuShare(), usable_cores=2.0,
    )
    caps, statements = [(0.0, governor.resource_cap)], 0
    while machine.now < seconds:
        governor.before_batch()
        machine.work(python_cpu_s)
        machine.query(statement_cpu_s)
        statements += 1
        if governor.resource_cap != caps[-1][1]:
            caps.append((machine.now, governor.resource_cap))
    governor.close()
    return governor, recorder, caps, statements


@dataclass
class Provider:
    """Answers after `latency_s`, longer when more than `capacity` calls are in flight (it queues
    them); 429 above `quota` calls in any second (counting the calls it accepted, as Google's
    quotas and the loopback fake do); a 403 rateLimitExceeded for `pushback_share` of the calls
    at random, well under any quota (as Google answers now and then); a 5xx for `error_rate`."""

    latency_s: float = 0.02
    capacity: int | None = None
    quota: float | None = None
    pushback_share: float = 0.0
    error_rate: float = 0.0
    seed: int = 2
    accepted_at: list = field(default_factory=list)
    rejected: int = 0
    pushed_back: int = 0  # the sporadic ones
    errors: int = 0

    def __post_init__(self):
        self._rng = random.Random(self.seed)

    def answer(self, now: float, in_flight: int) -> tuple[float, Outcome]:
        latency = self.latency_s * max(1.0, in_flight / self.capacity) if self.capacity else self.latency_s
        if self.quota is not None:
            recent = sum(1 for t in self.accepted_at[-int(self.quota) - 1:] if t > now - 1.0)
            if recent >= self.quota:
                self.rejected += 1
                return latency, Outcome.PUSHBACK
        if self._rng.random() < self.pushback_share:
            self.pushed_back += 1
            return latency, Outcome.PUSHBACK
        if self._rng.random() < self.error_rate:
            self.errors += 1
            return latency, Outcome.ERROR
        self.accepted_at.append(now)
        return latency, Outcome.OK

    def refused_share(self) -> float:
        refused = self.rejected + self.pushed_back
        return refused / (len(self.accepted_at) + refused)


def run_calls(provider: Provider, calls: int, *, maximum: int = 32, cpu_s_per_call: float = 0.0, pushback_retry_s: float = 1.0,
              error_retry_s: float = 0.1, seed: int = 3):
    """`calls` provider calls under the real limiter, issued as the tokens step issues them (as
    many under way as the limiter says), each retried when it fails as the HTTP providers do:
    a push-back that persists after a jittered, doubling backoff from 1 s plus up to 1 s; a
    lone push-back or an error from 0.05-0.1 s. Each answer then costs the client
    `cpu_s_per_call` of its one core (parsing, writing: one interpreter lock), one answer at a
    time, and the call is under way until then. Returns (seconds, limiter, [(time, limit) at
    each change])."""
    rng = random.Random(seed)
    limiter = Limiter(AdaptiveLimit(maximum=maximum), Pacer(), clock=lambda: 0.0)
    events: list = []  # (time, order, kind, call, attempt)
    order = 0

    def push(at, kind, call, attempt=1):
        nonlocal order
        order += 1
        heapq.heappush(events, (at, order, kind, call, attempt))

    backlog = list(range(calls))
    waiting_room: list = []  # calls past their place in the pace, waiting for room in flight
    outstanding, on_the_wire, done, now, cpu_free_at, limits = 0, 0, 0, 0.0, 0.0, [(0.0, limiter.allowed())]

    def issue(at):
        nonlocal outstanding
        while backlog and outstanding < limiter.under_way():
            outstanding += 1
            push(at, "ready", backlog.pop())

    def enter(at, call, attempt):
        nonlocal on_the_wire
        ticket = limiter.try_enter(at)
        if ticket is None:
            waiting_room.append((call, attempt))
            return
        on_the_wire += 1
        latency, outcome = provider.answer(at, on_the_wire)
        push(at + latency, ("answer", ticket, outcome), call, attempt)

    issue(0.0)
    while done < calls:
        now, _, kind, call, attempt = heapq.heappop(events)
        if kind == "ready":  # wait for its place in the pace, then for room
            push(now + limiter.reserve_pace(now), "paced", call, attempt)
        elif kind == "paced":
            enter(now, call, attempt)
        elif kind == "processed":
            done += 1
            outstanding -= 1
            issue(now)
        else:
            _, ticket, outcome = kind
            on_the_wire -= 1
            pushback = limiter.release(ticket, now, outcome)
            if outcome is Outcome.OK:
                cpu_free_at = max(now, cpu_free_at) + cpu_s_per_call
                push(cpu_free_at, "processed", call)
            else:
                if outcome is Outcome.PUSHBACK and pushback.persisting:
                    backoff = pushback_retry_s * 2 ** (attempt - 1) + rng.uniform(0, pushback_retry_s)
                else:
                    backoff = error_retry_s * 2 ** (attempt - 1) * rng.uniform(0.5, 1.0)
                push(now + backoff, "ready", call, attempt + 1)
            while waiting_room and limiter.in_flight < limiter.allowed():
                enter(now, *waiting_room.pop(0))
            issue(now)
            if limiter.allowed() != limits[-1][1]:
                limits.append((now, limiter.allowed()))
    return now, limiter, limits
