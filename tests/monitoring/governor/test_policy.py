"""The policy as tables: readings in, decisions out. No database, no clock, no sleeping."""

import math

import pytest

from monitoring.governor.policy import CpuShare, RoutePolicy, State, SteadyValue, batch_plan, cpu_concurrency, decide, memory_cap, optimal_concurrency, pressure
from monitoring.governor.readings.fake import reading

USERS = RoutePolicy(max_concurrency=3, sequential_above=75, brake_after=5)
TOKENS = RoutePolicy(max_concurrency=2, io_max_concurrency=32, sequential_above=70, brake_after=3)


@pytest.mark.parametrize("memory, maximum, cap", [(85, 3, 1), (80.5, 3, 1), (80, 3, 2), (60, 3, 2), (59.9, 3, 3), (10, 32, 32), (70, 1, 1)])
def test_memory_caps_concurrency(memory, maximum, cap):
    assert memory_cap(memory, maximum) == cap


@pytest.mark.parametrize("usage, maximum, expected", [(80, 3, 1), (76, 3, 1), (75, 3, 2), (45, 3, 2), (44, 3, 3), (60, 2, 2), (60, 32, 17)])
def test_optimal_concurrency_by_usage(usage, maximum, expected):
    assert optimal_concurrency(usage, maximum) == expected


@pytest.mark.parametrize("memory, plan", [(71, (50, 3.0)), (70, (75, 2.0)), (50, (75, 2.0)), (49, (100, 1.0))])
def test_batch_size_and_delay_by_memory(memory, plan):
    assert batch_plan(memory, 100, 1.0) == plan


def test_the_memory_steps_follow_the_configured_ceiling_and_sequential_threshold():
    assert [memory_cap(m, 3, ceiling=90) for m in (91, 85, 67, 60)] == [1, 2, 3, 3]  # 1 over 90, 2 from 67.5
    assert [batch_plan(m, 100, 1.0, ceiling=90) for m in (79, 78, 57, 56)] == [(50, 3.0), (75, 2.0), (75, 2.0), (100, 1.0)]
    assert [optimal_concurrency(u, 3, sequential_above=85) for u in (86, 85, 51, 50)] == [1, 2, 2, 3]
    lenient = RoutePolicy(max_concurrency=3, max_memory_percent=90, sequential_above=85)
    assert (decide(reading(10, 82), USERS).concurrency, decide(reading(10, 82), lenient).concurrency) == (1, 2)


@pytest.mark.parametrize("cpu, memory, state", [
    (10, 10, State.OK), (10, 76, State.BUSY), (10, 81, State.OVERLOADED), (10, 90, State.EMERGENCY),
    (99, 10, State.OK),  # CPU never throttles: the CpuShare shrinks the sync's share instead
])
def test_states_come_from_memory(cpu, memory, state):
    assert decide(reading(cpu, memory), USERS).state == state


def test_busy_or_worse_runs_one_at_a_time():
    assert decide(reading(10, 10), USERS).concurrency == 3
    assert decide(reading(10, 50), USERS).concurrency == 2
    assert decide(reading(10, 76), USERS).concurrency == 1
    assert decide(reading(10, 71), TOKENS).concurrency == 1  # tokens go sequential above 70


def test_io_bound_work_has_its_own_maximum_capped_by_memory_and_cpu():
    assert decide(reading(10, 10), TOKENS, io_bound=True).concurrency == 32
    assert decide(reading(10, 10), TOKENS).concurrency == 2  # CPU-bound batches keep the seeds' maximum
    assert decide(reading(10, 65), TOKENS, io_bound=True).concurrency == 2  # memory 60–80%
    assert decide(reading(10, 10), TOKENS, io_bound=True, cpu_cap=9).concurrency == 9


def test_an_rss_ceiling_reads_as_the_memory_ceiling():
    policy = RoutePolicy(rss_limit_mb=256)
    p = pressure(reading(10, 5, rss_mb=256), policy)
    assert p.memory == pytest.approx(80) and "RSS 256 MB of 256 MB" in p.reason
    assert decide(reading(10, 5, rss_mb=270), policy).state == State.OVERLOADED
    assert decide(reading(10, 5, rss_mb=290), policy).state == State.EMERGENCY  # 90% of the RSS budget
    emergency = RoutePolicy(emergency_rss_mb=1800)
    assert decide(reading(10, 5, rss_mb=1800), emergency).state == State.EMERGENCY


def test_batches_fit_the_memory_headroom():
    policy = RoutePolicy(batch_size=1000, rss_limit_mb=256)
    # 56 MB left under the RSS ceiling, half of it for batches, 2 at once (memory 62%), 1 MB per record
    assert decide(reading(10, 5, rss_mb=200), policy, bytes_per_record=1024 * 1024).batch_size == 14
    assert decide(reading(10, 5, rss_mb=200), policy).batch_size == 750  # memory 50–70%: 75% size


@pytest.mark.parametrize("bad, message", [
    ({"max_concurrency": 0}, "max_concurrency must be a whole number >= 1"),
    ({"max_cpu_percent": 120}, "max_cpu_percent must be between 1 and 100"),
    ({"batch_delay_s": -1}, "batch_delay_s must not be negative"),
    ({"rss_limit_mb": 0}, "rss_limit_mb must be positive"),
])
def test_bad_limits_are_refused_once(bad, message):
    with pytest.raises(ValueError, match=message):
        RoutePolicy(**bad)
    with pytest.raises(ValueError, match="unknown governor settings: bogus"):
        RoutePolicy().with_overrides(bogus=1)


def share_after(*readings) -> CpuShare:
    share = CpuShare(tau_s=3.0)
    for r in readings:
        share.observe(r)
    return share


def test_the_allowance_is_the_headroom_the_neighbours_leave():
    # Two cores; the machine at 70% of which this process 10%: the neighbours use 60%.
    share = share_after(reading(70, 10, process_cpu=10, at=1.0, cpu_capacity=2.0))
    allowance = share.allowance(RoutePolicy(max_cpu_percent=80), capacity=2.0, usable=1.0)
    assert allowance.neighbours == pytest.approx(60)
    assert allowance.cores == pytest.approx(0.4)  # (80% − 60%) of 2 cores
    assert allowance.held and allowance.fraction == pytest.approx(0.4)
    assert allowance.describe() == "held at 20% CPU: neighbours use 60% of the 80% ceiling"


def test_the_allowance_has_a_floor_and_never_exceeds_what_the_process_can_use():
    busy = share_after(reading(100, 10, process_cpu=5, at=1.0))
    assert busy.allowance(RoutePolicy(cpu_floor_percent=10), capacity=2.0, usable=1.0).cores == pytest.approx(0.1)
    quiet = share_after(reading(3, 10, process_cpu=1, at=1.0))
    allowance = quiet.allowance(RoutePolicy(), capacity=2.0, usable=1.0)
    assert allowance.cores == 1.0 and not allowance.held  # one Python process: about one core
    assert quiet.allowance(RoutePolicy(), capacity=0.5, usable=1.0).cores == pytest.approx(0.39)  # a 0.5-CPU quota: (80 − 2)% of it


def test_neighbours_are_smoothed_over_seconds_and_a_reading_counts_once():
    share = share_after(*(reading(10, 10, process_cpu=10, at=n * 0.5) for n in range(30)))  # 15 quiet seconds
    assert share.neighbours.value == 0
    spike = reading(90, 10, process_cpu=10, at=15.0)  # one 0.5 s reading: 80% neighbours
    share.observe(spike)
    share.observe(spike)  # the same reading seen by a second governor
    risen = 80 * (1 - math.exp(-0.5 / 0.3))
    assert share.neighbours.value == pytest.approx(risen, abs=0.5)  # rises: followed within a reading or two
    share.observe(reading(10, 10, process_cpu=10, at=15.5))
    fallen = risen * math.exp(-0.5 / 1.0)
    assert share.neighbours.value == pytest.approx(fallen, abs=0.5)  # a jump down: followed over a second
    share.observe(reading(10 + fallen - 3, 10, process_cpu=10, at=16.0))  # jitter, 3 points under it
    assert share.neighbours.value == pytest.approx(fallen - 3 * (1 - math.exp(-0.5 / 3.0)), abs=0.1)  # over seconds
    for n in range(1, 30):  # the neighbour stays: the average gets there in seconds
        share.observe(reading(90, 10, process_cpu=10, at=15.0 + n * 0.5))
    assert share.neighbours.value == pytest.approx(80, abs=1)


def test_a_first_reading_over_a_moment_does_not_stand_for_the_past():
    share = share_after(reading(10, 10, process_cpu=10, at=0.0, window_s=0.001))  # a reader's first: 1 ms
    share.observe(reading(70, 10, process_cpu=10, at=0.5))
    assert share.neighbours.value == pytest.approx(60, abs=0.5)


@pytest.mark.parametrize("fraction, maximum, expected", [(1.0, 32, 32), (0.5, 32, 16), (0.01, 32, 1), (0.6, 2, 2), (0.5, 2, 1)])
def test_cpu_concurrency_is_in_proportion(fraction, maximum, expected):
    share = share_after(reading(0, 10, process_cpu=0, at=1.0))
    allowance = share.allowance(RoutePolicy(max_cpu_percent=100 * fraction, cpu_floor_percent=1), capacity=1.0, usable=1.0)
    assert cpu_concurrency(allowance, maximum) == expected


def test_a_steady_value_goes_down_on_a_clear_step_and_up_one_step_a_window():
    value = SteadyValue(20, dwell_s=2.0, window_s=5.0, deadband=0.15)
    assert not value.propose(18, now=0.0)  # within the deadband: no change
    assert value.propose(12, now=0.0) and value.value == 12
    assert not value.propose(8, now=1.0)  # within the dwell
    assert value.propose(8, now=2.5) and value.value == 8
    for t in range(3, 8):
        value.propose(32, now=float(t))
    assert value.value == 8  # headroom seen for less than a window since it appeared
    assert value.propose(32, now=8.0) and value.value == 12  # one step (×1.5)
    value.propose(32, now=9.0)
    value.propose(11, now=10.0)  # a dip back under: the headroom was not really there
    for t in range(11, 15):
        value.propose(32, now=float(t))
    assert value.value == 12
    assert value.propose(1, now=15.0, urgent=True) and value.value == 1


def test_a_steady_value_changes_a_few_times_a_minute_under_a_jittering_target():
    value, changes = SteadyValue(20), 0
    for n in range(1200):  # a minute of readings every 50 ms around 20
        changes += value.propose(20 + (-1, 0, 1, 2, -2)[n % 5], now=n * 0.05)
    assert changes <= 3
