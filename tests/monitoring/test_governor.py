"""The governor driven by fixed readings and a fake clock: nothing sleeps for real."""

from contextlib import ExitStack

import pytest

from monitoring.events import ListRecorder
from monitoring.governor import CpuBudget, Governor, GovernorStop
from monitoring.policy import RoutePolicy
from monitoring.readings.fake import FixedReader, reading


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
        cpu_clock=lambda: t.cpu, collect=lambda: None, cpu_budget=CpuBudget(), **kwargs,
    )
    return g, t, recorder


def test_calm_readings_change_nothing():
    g, t, recorder = governor(reading(10, 10), RoutePolicy(max_concurrency=3))
    for _ in range(5):
        decision = g.before_batch()
    assert decision.concurrency == 3 and g.stats.waited_s == 0
    assert recorder.kinds() == []


def test_concurrency_changes_are_recorded_with_the_reason():
    g, t, recorder = governor([reading(10, 10), reading(10, 10), reading(10, 65)], RoutePolicy(max_concurrency=3))
    g.tick()
    g.tick()
    [event] = [e for e in recorder.events if e.kind == "concurrency"]
    assert (event.before, event.after) == (3, 2)
    assert "memory 65%" in event.detail


def test_a_throttle_waits_for_recovery_in_short_sleeps():
    over, calm = reading(85, 10), reading(10, 10)
    g, t, recorder = governor([over, over, over, over, calm])
    g.before_batch()
    assert recorder.kinds()[:2] == ["concurrency", "throttle"] or "throttle" in recorder.kinds()
    assert "recovery" in recorder.kinds()
    assert t.slept[:2] == [0.5, 1.0]  # short, growing, resource-aware
    assert g.consecutive_throttles == 1


def test_without_recovery_it_goes_on_at_concurrency_one_never_deadlocks():
    g, t, recorder = governor(reading(85, 10), RoutePolicy(max_concurrency=3, max_wait_s=10, brake_after=99))
    decision = g.before_batch()
    assert sum(t.slept) == pytest.approx(10)
    assert recorder.kinds()[-1] == "pause" and g.concurrency == 1 and decision.concurrency == 1


def test_or_stops_when_configured_to():
    g, t, recorder = governor(reading(85, 10), RoutePolicy(max_wait_s=10, stop_after_wait=True, brake_after=99))
    with pytest.raises(GovernorStop, match="still overloaded after waiting 10 s"):
        g.before_batch()
    assert recorder.kinds()[-1] == "stop"


def test_brakes_pause_progressively_and_the_fourth_stops_the_run():
    g, t, recorder = governor(reading(85, 10), RoutePolicy(brake_after=3, max_wait_s=1, brake_pause_s=8))
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
        cpu_budget=CpuBudget(),
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


def test_samples_are_bounded_in_rate():
    g, t, recorder = governor(reading(10, 10), sample_every_s=1.0)
    for _ in range(10):
        g.tick()
        t.now += 0.25
    assert len(recorder.samples) == 3  # at 0.0, 1.0 and 2.0 (the constructor's first reading is not one)


def test_calls_feed_aimd_and_a_rejection_paces_them():
    g, t, recorder = governor(reading(10, 10), RoutePolicy(io_max_concurrency=16), io_bound=True)
    for _ in range(10):  # rounds of as many calls in flight as allowed: the limit is used, so it grows
        with ExitStack() as calls:
            for _ in range(g.io_limit()):
                calls.enter_context(g.call())
            t.now += 0.01
    assert g.io_limit() >= 5  # about +1 every two full windows
    grown = g.limit.limit
    with g.call() as outcome:
        t.now += 0.01
        outcome["rejected"] = True
    assert g.limit.limit < grown and g.pacer.rate is not None
    assert recorder.kinds()[-1] == "rate"


def test_a_known_quota_paces_from_the_start():
    g, t, _ = governor(reading(10, 10), calls_per_second=10.0)
    for _ in range(5):
        with g.call():
            pass
    assert sum(t.slept) == pytest.approx(0.4)  # 5 calls at 10/s: 0, 0.1, 0.2, 0.3, 0.4 s


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
