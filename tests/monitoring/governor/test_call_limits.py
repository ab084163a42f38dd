"""Provider-call limits as pure objects: outcomes in, limits out. No threads, no clock."""

import pytest

from monitoring.governor.call_limits import AdaptiveLimit, Outcome, Pacer, error_share, pushback_share


def rounds(limit: AdaptiveLimit, n: int, latency: float = 0.02, start: float = 0.0) -> float:
    """n round trips with the limit used in full; return the time after them."""
    now = start
    for _ in range(n):
        now += latency
        for _ in range(limit.current()):
            limit.on_sample(now, latency, in_flight=limit.current(), dropped=False)
    return now


def test_slow_start_grows_by_two_fifths_every_round_trip_while_the_limit_is_used():
    limit = AdaptiveLimit(limit=1, maximum=64)
    seen = []
    for _ in range(13):
        rounds(limit, 1)
        seen.append(limit.current())
    assert seen == [1, 1, 2, 3, 5, 7, 10, 14, 20, 28, 40, 56, 64]  # 1.4^n
    assert not limit.slow_start  # nothing more to find above the maximum


def test_slow_start_does_not_grow_a_limit_nobody_uses():
    limit = AdaptiveLimit(limit=4, maximum=64)
    for n in range(50):
        limit.on_sample(n * 0.02, 0.02, in_flight=1, dropped=False)
    assert limit.current() == 4


def test_slow_start_ends_at_the_first_push_back_with_half_the_limit():
    limit = AdaptiveLimit(limit=1, maximum=64)
    now = rounds(limit, 10)  # 28.9 by now
    limit.on_sample(now, 0.02, in_flight=28, dropped=True)
    assert not limit.slow_start and limit.current() == 14
    limit.on_sample(now + 0.001, 0.02, in_flight=28, dropped=True)  # an answer to a call sent before the cut
    assert limit.current() == 14


def test_slow_start_ends_when_latency_rises_and_aimd_carries_on():
    limit = AdaptiveLimit(limit=1, maximum=64)
    now = rounds(limit, 10)  # 28, at 20 ms
    rounds(limit, 1, latency=0.05, start=now)  # the provider queues: latency 2.5×
    assert not limit.slow_start and limit.current() == 14  # half what held
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
    rate = error_share()
    persisted = [rate.add(n % 37 == 0) for n in range(400)]  # 2.7%: lone faults
    assert not any(persisted)
    storm = error_share()
    assert any(storm.add(n % 2 == 0) for n in range(20))  # half of the calls fail


def test_sporadic_push_back_never_persists_and_a_quota_persists_within_a_few_answers():
    import random

    rng = random.Random(5)
    sporadic = pushback_share()
    assert not any(sporadic.add(rng.random() < 0.01) for _ in range(100_000))  # 1% at random: lone, every one
    quota = pushback_share()
    for _ in range(40):
        quota.add(False)
    verdicts = [quota.add(True) for _ in range(10)]  # over the quota: every answer refused
    assert verdicts.index(True) <= 4  # by the fifth refusal


def test_after_slow_start_a_lone_push_back_costs_a_tenth_of_the_limit():
    limit = AdaptiveLimit(limit=1, maximum=64)
    now = rounds(limit, 10)  # 28.9 by now
    limit.on_sample(now, 0.02, in_flight=28, dropped=True)  # the first ends slow start
    assert not limit.slow_start and limit.current() == 14
    now = rounds(limit, 20, start=now + 0.1)
    before = limit.limit
    assert before >= 14 + 18  # about +1 a round
    limit.on_sample(now, 0.02, in_flight=32, dropped=True)
    assert limit.limit == pytest.approx(0.9 * before)
    rounds(limit, 4, start=now + 0.1)
    assert limit.limit >= before  # made up within a few round trips


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="minimum <= maximum"):
        AdaptiveLimit(minimum=5, maximum=2)


def quota_answer(accepted: list, now: float, quota: int = 40) -> Outcome:
    """A provider that pushes back on calls over `quota` in any second (counting those it took)."""
    if sum(1 for t in accepted if t > now - 1.0) >= quota:
        return Outcome.PUSHBACK
    accepted.append(now)
    return Outcome.OK


def test_the_pacer_settles_under_a_quota_it_discovers():
    pacer, share, now, accepted, rejected = Pacer(), pushback_share(), 0.0, [], 0
    while now < 120:
        now += pacer.next_delay(now) + 0.001  # 1 ms calls: unpaced this would be 1,000/s
        pacer.on_sent(now)
        outcome = quota_answer(accepted, now)
        rejected += outcome is Outcome.PUSHBACK
        pacer.on_result(now, outcome, sent_at=now, persisting=share.add(outcome is Outcome.PUSHBACK))
    late = [t for t in accepted if t > 60]
    assert len(late) / 60 >= 0.95 * 40  # sustained at 95% of the quota or more
    assert rejected / (len(accepted) + rejected) < 0.02


def test_a_persisting_push_back_paces_at_what_was_accepted_and_waits_out_the_burst():
    pacer = Pacer()
    for n in range(60):  # a burst: 60 calls in 0.1 s, the first 40 accepted
        pacer.on_sent(n / 600)
    for n in range(60):
        pacer.on_result(0.02 + n / 600, Outcome.OK if n < 40 else Outcome.PUSHBACK, sent_at=n / 600, persisting=n >= 45)
    assert pacer.rate == pytest.approx(0.975 * 40)  # what the provider took in the last second, less a little
    first = pacer.next_delay(0.13)
    assert first == pytest.approx(1 + 1 / 600 - 0.13)  # not before enough of the accepted 40 are a second old
    assert pacer.next_delay(0.13) == pytest.approx(first + 1 / pacer.rate)  # then one every 1/rate


def test_a_lone_push_back_sets_no_pace():
    pacer = Pacer()
    pacer.on_sent(0.0)
    pacer.on_result(0.02, Outcome.PUSHBACK, sent_at=0.0, persisting=False)
    assert pacer.rate is None and pacer.next_delay(0.03) == 0.0


def test_a_known_quota_is_never_exceeded():
    pacer = Pacer(maximum=5.0)
    delays = [pacer.next_delay(0.0) for _ in range(6)]
    assert delays == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_unpaced_calls_are_remembered_for_a_second_only():
    """A million calls of an unpaced step must not pile up (nor a refusal search them all)."""
    pacer = Pacer()
    for n in range(100_000):
        pacer.on_sent(n * 0.001)
    assert len(pacer._sent) <= 1000
