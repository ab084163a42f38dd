"""The governor driven by fixed readings and a fake clock: nothing sleeps for real."""

from contextlib import ExitStack

import pytest

from monitoring.governor.call_limits import Outcome
from monitoring.governor.events import ListRecorder
from monitoring.governor.policy import CpuShare, RoutePolicy
from monitoring.governor.readings.database import DatabaseCpu
from monitoring.governor.readings.fake import FixedReader, reading
from monitoring.governor.route import CpuBudget, Governor, GovernorStop, WaitClock


class FakeTime:
    def __init__(self):
        self.now, self.cpu, self.slept = 0.0, 0.0, []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def governor(readings, policy=RoutePolicy(), **kwargs):
    t = FakeTime()
    recorder = ListRecorder()
    g = Governor(
        policy, read=FixedReader(readings).read, recorder=recorder, clock=t.clock, sleep=t.sleep,
        cpu_clock=lambda: t.cpu, collect=lambda: None, cpu_budget=CpuBudget(), cpu_share=CpuShare(), **kwargs,
    )
    return g, t, recorder


class Clocked:
    """Readings that follow the fake clock: `cpu` and `own` are percentages of one core."""

    def __init__(self, t: FakeTime, cpu: float, own: float, memory: float = 10):
        self.t, self.cpu, self.own, self.memory = t, cpu, own, memory

    def read(self):
        return reading(self.cpu, self.memory, process_cpu=self.own, at=self.t.now)


def clocked(t: FakeTime, read, policy=RoutePolicy(), *, recorder=None, **kwargs) -> Governor:
    """A governor on the fake clock, its CPU clock the fake one too (and a budget and view of the
    neighbours of its own unless given)."""
    return Governor(policy, read=read, recorder=recorder if recorder is not None else ListRecorder(), clock=t.clock, sleep=t.sleep,
                    cpu_clock=lambda: t.cpu, collect=lambda: None, **{"cpu_budget": CpuBudget(), "cpu_share": CpuShare(), **kwargs})


def work_flat_out(g: Governor, t: FakeTime, batches: int, seconds: float) -> None:
    """Batches that each keep a whole core busy for `seconds`, as a CPU-bound step's do."""
    for _ in range(batches):
        t.cpu += seconds
        t.now += seconds
        g.before_batch()


def test_calm_readings_change_nothing():
    g, t, recorder = governor(reading(10, 10), RoutePolicy(max_concurrency=3))
    for _ in range(5):
        decision = g.before_batch()
    assert decision.concurrency == 3 and g.waits.seconds() == 0
    assert recorder.kinds() == []


def test_concurrency_changes_are_recorded_with_the_reason():
    g, t, recorder = governor([reading(10, 10), reading(10, 10), reading(10, 65)], RoutePolicy(max_concurrency=3))
    g.tick()
    g.tick()
    [event] = [e for e in recorder.events if e.kind == "concurrency"]
    assert (event.before, event.after) == (3, 2)
    assert "memory 65%" in event.detail


def test_memory_over_its_ceiling_is_one_throttle_episode_waiting_in_short_sleeps():
    over, calm = reading(10, 85), reading(10, 10)
    g, t, recorder = governor([over, over, over, over, calm])
    g.before_batch()
    assert t.slept[:2] == [0.5, 1.0]  # short, growing, resource-aware
    [episode] = [e for e in recorder.events if e.kind == "throttle"]
    assert "memory 85% over the 80% ceiling" in episode.detail
    assert episode.ended and episode.duration_s == pytest.approx(sum(t.slept))
    assert g.consecutive_throttles == 1


def test_without_recovery_it_goes_on_at_concurrency_one_never_deadlocks():
    g, t, recorder = governor(reading(10, 85), RoutePolicy(max_concurrency=3, max_wait_s=10, brake_after=99))
    decision = g.before_batch()
    assert sum(t.slept) == pytest.approx(10)
    assert recorder.kinds()[-1] == "pause" and g.concurrency == 1 and decision.concurrency == 1


def test_one_at_a_time_after_a_wait_lasts_only_until_memory_recovers():
    g, t, recorder = governor([reading(10, 85)] * 6 + [reading(10, 10)], RoutePolicy(max_concurrency=3, max_wait_s=1, brake_after=99))
    assert g.before_batch().concurrency == 1 and recorder.kinds()[-1] == "pause"
    for _ in range(3):
        decision = g.before_batch()
    assert decision.concurrency == 3 and not g.forced_sequential


def test_or_stops_when_configured_to():
    g, t, recorder = governor(reading(10, 85), RoutePolicy(max_wait_s=10, stop_after_wait=True, brake_after=99))
    with pytest.raises(GovernorStop, match="still overloaded after waiting 10 s"):
        g.before_batch()
    assert recorder.kinds()[-1] == "stop"


def test_brakes_pause_progressively_and_the_fourth_stops_the_run():
    g, t, recorder = governor(reading(10, 85), RoutePolicy(brake_after=3, max_wait_s=1, brake_pause_s=8))
    with pytest.raises(GovernorStop, match="system consistently overloaded"):
        for _ in range(100):
            g.before_batch()
    assert recorder.kinds().count("brake") == 3
    assert [s for s in t.slept if s >= 8] == [8, 16, 24]
    assert recorder.kinds()[-1] == "stop"
    assert g.brakes == 4


def test_emergency_drops_to_one_and_collects():
    collected = []
    t = FakeTime()
    recorder = ListRecorder()
    g = Governor(
        RoutePolicy(max_concurrency=3, max_wait_s=0), read=FixedReader([reading(10, 10), reading(10, 91)]).read,
        recorder=recorder, clock=t.clock, sleep=t.sleep, cpu_clock=lambda: 0.0, collect=lambda: collected.append(1),
        cpu_budget=CpuBudget(), cpu_share=CpuShare(),
    )
    g.before_batch()
    assert "emergency" in recorder.kinds() and "collect" in recorder.kinds()
    assert g.concurrency == 1 and collected == [1]


def test_batches_shrink_and_slow_down_with_memory():
    g, t, recorder = governor([reading(10, 10), reading(10, 72)], RoutePolicy(batch_size=100, batch_delay_s=1.0))
    decision = g.before_batch()
    assert (decision.batch_size, decision.delay_s) == (50, 3.0)
    assert t.slept[-1] == 3.0
    assert any(e.kind == "batch_size" and "100 -> 50" in e.detail for e in recorder.events)


def test_duty_cycle_sleeps_in_proportion_to_cpu_used():
    g, t, _ = governor(reading(10, 10), RoutePolicy(max_cpu_percent=50))
    t.now += 1.0
    t.cpu += 1.0  # a whole core for a second, on a 1-core capacity, against a 50% ceiling
    g.before_batch()
    assert t.slept[0] == pytest.approx(1.0)  # 1 s of CPU over 2 s of wall time = 50%


def test_busy_neighbours_shrink_the_share_never_stop_the_sync():
    t = FakeTime()
    machine = Clocked(t, cpu=95, own=0)  # the neighbours alone are over the 80% ceiling
    recorder = ListRecorder()
    g = clocked(t, machine.read, RoutePolicy(brake_after=2, max_wait_s=1), recorder=recorder)
    work_flat_out(g, t, 50, 0.05)  # a CPU-bound step: 50 ms of CPU per batch
    assert g.cpu.allowance.cores == pytest.approx(0.1)  # the floor: 10% of a core
    assert t.cpu / t.now == pytest.approx(0.1, rel=0.1)  # and it got that
    assert g.brakes == 0 and not any(e.kind in ("brake", "stop") for e in recorder.events)


def test_a_cpu_hold_is_one_episode_that_says_why_and_ends_with_its_figures():
    t = FakeTime()
    machine = Clocked(t, cpu=70, own=0)  # neighbours at 70% of one core: 10% left under the ceiling
    recorder = ListRecorder()
    g = clocked(t, machine.read, recorder=recorder)
    work_flat_out(g, t, 100, 0.02)
    [episode] = [e for e in recorder.events if e.kind == "throttle"]
    assert episode.detail == "held at 10% CPU: neighbours use 70% of the 80% ceiling"
    assert g.episodes.going["cpu"].event is episode and not episode.ended
    machine.cpu = 20  # the neighbours leave
    for _ in range(40):
        t.now += 0.1
        g.before_batch()  # idle batches: no CPU used
    assert episode.ended and episode.duration_s > 5 and episode.cpu_max == 70 and episode.cpu_min == 20
    assert not g.episodes.going and [e.kind for e in recorder.events].count("throttle") == 1


def test_a_cpu_hold_says_when_the_databases_cpu_is_elsewhere(tmp_path):
    t = FakeTime()
    remote = DatabaseCpu(tmp_path)
    remote.connected("postgresql", 4242, "db.internal")
    recorder = ListRecorder()
    g = clocked(t, Clocked(t, cpu=70, own=0).read, recorder=recorder, database=remote)
    work_flat_out(g, t, 20, 0.02)
    [episode] = [e for e in recorder.events if e.kind == "throttle"]
    assert episode.detail == "held at 10% CPU: neighbours use 70% of the 80% ceiling; the database's CPU is elsewhere, not counted"


def test_the_time_held_shrinks_concurrency_in_proportion_and_it_grows_back():
    t = FakeTime()
    machine = Clocked(t, cpu=40, own=0)
    g = clocked(t, machine.read, RoutePolicy(max_concurrency=2, io_max_concurrency=32), io_bound=True)
    assert g.resource_cap == 32
    work_flat_out(g, t, 800, 0.01)  # wants a whole core; 40% is left under the ceiling
    assert g.cpu.held_share == pytest.approx(0.6, abs=0.1)
    assert 13 <= g.resource_cap <= 16  # shrunk in steps, down to 32 × 0.4 at most
    machine.cpu = 0
    for _ in range(60):
        t.now += 1.0
        g.before_batch()
    assert g.resource_cap == 32


def test_a_step_that_starts_while_the_duty_cycle_holds_its_process_starts_in_proportion():
    t, budget, share = FakeTime(), CpuBudget(), CpuShare()
    read = Clocked(t, cpu=40, own=0).read

    def make(recorder):
        return clocked(t, read, RoutePolicy(io_max_concurrency=32), recorder=recorder, cpu_budget=budget, cpu_share=share, io_bound=True)

    first = make(ListRecorder())
    assert first.resource_cap == 32  # nothing held this process yet
    work_flat_out(first, t, 10, 0.1)  # the duty cycle holds it at 40% of the core
    second = make(recorder := ListRecorder())  # a step beside it, in the same process
    assert second.resource_cap == 13  # 40% of one core left: 32 × 0.4, rounded up
    second.tick()
    assert recorder.kinds() == []  # and no change a moment after it started


def test_samples_are_bounded_in_rate():
    g, t, recorder = governor(reading(10, 10), sample_every_s=1.0)
    for _ in range(10):
        g.tick()
        t.now += 0.25
    assert len(recorder.samples) == 3  # at 0.0, 1.0 and 2.0 (the constructor's first reading is not one)


def test_calls_start_slowly_and_double_and_push_back_that_persists_paces_them():
    g, t, recorder = governor(reading(10, 10), RoutePolicy(io_max_concurrency=32), io_bound=True)
    assert g.io_limit() == 1
    for _ in range(11):  # rounds of as many calls in flight as allowed
        with ExitStack() as calls:
            for _ in range(g.io_limit()):
                calls.enter_context(g.call())
            t.now += 0.02
    assert g.io_limit() == 32  # 1, 1, 2, 3, 5, 7, 10, 14, 20, 28, 32: slow start, ×1.4 a round
    verdicts = []
    for _ in range(6):
        with g.call() as call:
            t.now += 0.02
            call.outcome = Outcome.PUSHBACK
        verdicts.append(call.persisting)
    assert verdicts[0] is False and verdicts[-1] is True  # a lone one first; then the provider's limit is reached
    assert g.limiter.pacer.rate is not None and g.io_limit() < 32
    [episode] = [e for e in recorder.events if e.kind == "rate"]
    assert "provider pushed back persistently" in episode.detail and "rate" in g.episodes


def test_a_lone_push_back_is_retried_soon_and_costs_no_pace():
    g, t, recorder = governor(reading(10, 10), RoutePolicy(io_max_concurrency=8), io_bound=True)
    for _ in range(30):
        with g.call():
            t.now += 0.02
    with g.call() as call:
        call.outcome = Outcome.PUSHBACK
    assert call.persisting is False and g.limiter.pacer.rate is None
    [episode] = [e for e in recorder.events if e.kind == "rate"]
    assert "lone call" in episode.detail


def test_a_lone_provider_error_costs_no_pace():
    g, t, recorder = governor(reading(10, 10), RoutePolicy(io_max_concurrency=8), io_bound=True)
    with g.call() as outcome:
        outcome.outcome = Outcome.ERROR
    assert g.limiter.pacer.rate is None and recorder.kinds() == []


def test_a_known_quota_paces_from_the_start():
    g, t, _ = governor(reading(10, 10), calls_per_second=10.0)
    for _ in range(5):
        with g.call():
            pass
    assert sum(t.slept) == pytest.approx(0.4)  # 5 calls at 10/s: 0, 0.1, 0.2, 0.3, 0.4 s


def test_waits_of_several_threads_at_once_count_once():
    t = FakeTime()
    clock = WaitClock(t.clock)
    with clock.waiting():
        t.now += 1.0
        with clock.waiting():  # a second thread waits too, for part of that time
            t.now += 2.0
        t.now += 1.0
    t.now += 5.0  # nobody waits
    assert clock.seconds() == pytest.approx(4.0)  # never more than the time that passed


def test_governors_in_one_process_share_one_cpu_budget():
    budget = CpuBudget()
    assert budget.delay(0.0, 0.0, 0.5) == 0.0
    # 1 s of process CPU in 1 s: whoever checks first sleeps 1 s; a second check at the same
    # moment, with no more CPU used, must not sleep for the same CPU seconds again.
    assert budget.delay(1.0, 1.0, 0.5) == pytest.approx(1.0)
    assert budget.delay(1.0, 1.0, 0.5) == pytest.approx(1.0)  # sleep until the same moment, not 1 s more
    assert budget.delay(2.0, 1.0, 0.5) == 0.0  # after that moment: back in budget


def test_idle_time_banks_only_a_little_credit():
    budget = CpuBudget(burst_s=0.2)  # the default banks less: 0.02 s
    budget.delay(0.0, 0.0, 0.5)
    budget.delay(10.0, 0.0, 0.5)  # ten idle seconds
    assert budget.delay(11.0, 1.0, 0.5) == pytest.approx(0.8)  # 2 s of budget used, only 0.2 s banked
