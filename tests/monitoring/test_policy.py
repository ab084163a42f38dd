"""The policy as tables: readings in, decisions out. No database, no clock, no sleeping."""

import pytest

from monitoring.policy import (
    AIMDLimit, Pacer, RoutePolicy, State, batch_plan, decide, memory_cap, optimal_concurrency, pressure,
)
from monitoring.readings.fake import reading

USERS = RoutePolicy(max_concurrency=3, sequential_above=75, brake_after=5)
TOKENS = RoutePolicy(max_concurrency=2, io_max_concurrency=32, sequential_above=70, brake_after=3)


@pytest.mark.parametrize("memory, maximum, cap", [(85, 3, 1), (80.5, 3, 1), (80, 3, 2), (60, 3, 2), (59.9, 3, 3), (10, 32, 32), (70, 1, 1)])
def test_memory_caps_concurrency(memory, maximum, cap):
    assert memory_cap(memory, maximum) == cap


@pytest.mark.parametrize("cpu, memory, maximum, expected", [
    (80, 10, 3, 1), (10, 76, 3, 1), (75, 10, 3, 2), (45, 10, 3, 2), (44, 44, 3, 3), (60, 10, 2, 2), (60, 10, 32, 17),
])
def test_optimal_concurrency_follows_the_busier_resource(cpu, memory, maximum, expected):
    assert optimal_concurrency(cpu, memory, maximum) == expected


@pytest.mark.parametrize("memory, plan", [(71, (50, 3.0)), (70, (75, 2.0)), (50, (75, 2.0)), (49, (100, 1.0))])
def test_batch_size_and_delay_by_memory(memory, plan):
    assert batch_plan(memory, 100, 1.0) == plan


@pytest.mark.parametrize("cpu, memory, state", [
    (10, 10, State.OK), (76, 10, State.BUSY), (81, 10, State.OVERLOADED), (10, 81, State.OVERLOADED), (10, 90, State.EMERGENCY),
])
def test_states(cpu, memory, state):
    assert decide(reading(cpu, memory), USERS).state == state


def test_busy_or_worse_runs_one_at_a_time():
    assert decide(reading(10, 10), USERS).concurrency == 3
    assert decide(reading(50, 10), USERS).concurrency == 2
    assert decide(reading(76, 10), USERS).concurrency == 1
    assert decide(reading(10, 71), TOKENS).concurrency == 1  # tokens go sequential above 70


def test_io_bound_work_climbs_past_the_seeds_table_only_as_far_as_aimd_allows():
    assert decide(reading(10, 10), TOKENS, io_bound=True, limit=20).concurrency == 20
    assert decide(reading(10, 10), TOKENS, io_bound=True, limit=50).concurrency == 32
    assert decide(reading(10, 10), TOKENS).concurrency == 2  # CPU-bound batches keep the seeds' maximum
    assert decide(reading(10, 65), TOKENS, io_bound=True, limit=20).concurrency == 2  # memory 60–80%


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


def test_aimd_adds_one_per_window_and_backs_off_on_rejection():
    limit = AIMDLimit(limit=1, maximum=10)
    for _ in range(20):
        limit.on_sample(0.02, in_flight=limit.current(), rejected=False)
    assert 5 <= limit.current() <= 7
    before = limit.limit
    limit.on_sample(0.02, in_flight=limit.current(), rejected=True)
    assert limit.limit == pytest.approx(before * 0.9)
    for _ in range(200):
        limit.on_sample(0.02, in_flight=10, rejected=False)
    assert limit.current() == 10  # clamped


def test_aimd_does_not_grow_while_the_limit_is_not_used():
    limit = AIMDLimit(limit=4, maximum=10)
    for _ in range(50):
        limit.on_sample(0.02, in_flight=1, rejected=False)
    assert limit.current() == 4


def test_aimd_backs_off_when_latency_jumps():
    limit = AIMDLimit(limit=8, maximum=10)
    for i in range(50):
        limit.on_sample(0.020 + 0.001 * (i % 3), in_flight=8, rejected=False)
    grown = limit.limit
    limit.on_sample(0.5, in_flight=8, rejected=False)
    assert limit.limit < grown


def test_the_pacer_settles_under_a_quota_it_discovers():
    """A simulated provider that rejects calls over 40 in any second."""
    pacer, now, sent, rejected = Pacer(), 0.0, [], 0
    while now < 120:
        now += pacer.next_delay(now) + 0.001  # 1 ms calls: unpaced this would be 1,000/s
        window = [t for t in sent if t > now - 1.0]
        is_rejected = len(window) >= 40
        rejected += is_rejected
        if not is_rejected:
            sent.append(now)
        pacer.on_result(now, is_rejected)
    late = [t for t in sent if t > 60]
    assert len(late) / 60 >= 0.95 * 40  # sustained at 95% of the quota or more
    assert rejected / (len(sent) + rejected) < 0.02


def test_a_known_quota_is_never_exceeded():
    pacer = Pacer(maximum=5.0)
    delays = [pacer.next_delay(0.0) for _ in range(6)]
    assert delays == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
