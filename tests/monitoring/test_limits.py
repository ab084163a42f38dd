"""Provider-call limits as pure objects: outcomes in, limits out. No threads, no clock."""

import pytest

from monitoring.limits import AdaptiveLimit, ErrorRate, Pacer


def rounds(limit: AdaptiveLimit, n: int, latency: float = 0.02, start: float = 0.0) -> float:
    """n round trips with the limit used in full; return the time after them."""
    now = start
    for _ in range(n):
        now += latency
        for _ in range(limit.current()):
            limit.on_sample(now, latency, in_flight=limit.current(), dropped=False)
    return now


def test_slow_start_doubles_every_round_trip_while_the_limit_is_used():
    limit = AdaptiveLimit(limit=1, maximum=64)
    seen = []
    for _ in range(6):
        rounds(limit, 1)
        seen.append(limit.current())
    assert seen == [2, 4, 8, 16, 32, 64]
    assert not limit.slow_start  # nothing more to find above the maximum


def test_slow_start_does_not_grow_a_limit_nobody_uses():
    limit = AdaptiveLimit(limit=4, maximum=64)
    for n in range(50):
        limit.on_sample(n * 0.02, 0.02, in_flight=1, dropped=False)
    assert limit.current() == 4


def test_slow_start_ends_at_the_first_push_back_with_half_the_limit():
    limit = AdaptiveLimit(limit=1, maximum=64)
    now = rounds(limit, 5)  # 32 by now
    limit.on_sample(now, 0.02, in_flight=32, dropped=True)
    assert not limit.slow_start and limit.current() == 16
    limit.on_sample(now + 0.001, 0.02, in_flight=32, dropped=True)  # an answer to a call sent before the cut
    assert limit.current() == 16


def test_slow_start_ends_when_latency_rises_and_aimd_carries_on():
    limit = AdaptiveLimit(limit=1, maximum=64)
    now = rounds(limit, 5)  # 32, at 20 ms
    rounds(limit, 1, latency=0.05, start=now)  # the provider queues: latency 2.5×
    assert not limit.slow_start and limit.current() == 16
    before = limit.limit
    rounds(limit, 3, start=now + 1)
    assert before + 2 <= limit.limit <= before + 4  # about +1 a round from here


def test_aimd_backs_off_on_push_back_once_per_round_trip():
    limit = AdaptiveLimit(limit=10, maximum=10)  # at its maximum: no slow start
    rounds(limit, 20)
    limit.on_sample(10.0, 0.02, in_flight=10, dropped=True)
    assert limit.limit == pytest.approx(9.0)
    limit.on_sample(10.001, 0.02, in_flight=10, dropped=True)  # same congestion
    assert limit.limit == pytest.approx(9.0)
    limit.on_sample(10.1, 0.02, in_flight=10, dropped=True)
    assert limit.limit == pytest.approx(8.1)


def test_aimd_backs_off_when_latency_jumps():
    limit = AdaptiveLimit(limit=8, maximum=8)
    for i in range(50):
        limit.on_sample(i * 0.02, 0.020 + 0.001 * (i % 3), in_flight=8, dropped=False)
    limit.on_sample(2.0, 0.5, in_flight=8, dropped=False)
    assert limit.limit < 8


def test_errors_persist_only_above_a_share_of_the_window():
    rate = ErrorRate(window=40, threshold=0.25)
    persisted = [rate.add(n % 37 == 0) for n in range(400)]  # 2.7%: lone faults
    assert not any(persisted)
    storm = ErrorRate(window=40, threshold=0.25)
    assert any(storm.add(n % 2 == 0) for n in range(20))  # half of the calls fail


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="minimum <= maximum"):
        AdaptiveLimit(minimum=5, maximum=2)


def test_the_pacer_settles_under_a_quota_it_discovers():
    """A simulated provider that pushes back on calls over 40 in any second."""
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
