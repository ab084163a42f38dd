"""The limiter enforces whatever limit it is given: a fixed one is enough to test it."""

import threading

import pytest

from monitoring.governor.call_limiter import Limiter
from monitoring.governor.call_limits import AdaptiveLimit, Outcome, Pacer


def fixed(n: int) -> AdaptiveLimit:
    return AdaptiveLimit(limit=n, minimum=n, maximum=n)


def test_room_in_flight_is_the_smaller_of_the_limit_and_the_resource_cap():
    limiter = Limiter(fixed(4), Pacer())
    tickets = [limiter.try_enter(0.0) for _ in range(5)]
    assert all(tickets[:4]) and tickets[4] is None
    limiter.set_cap(2)
    limiter.release(tickets[0], 0.02, Outcome.OK)
    assert limiter.in_flight == 3 and limiter.try_enter(0.02) is None  # 3 in flight, 2 allowed now
    for ticket in tickets[1:3]:
        limiter.release(ticket, 0.03, Outcome.OK)
    assert limiter.try_enter(0.03) is not None


def test_a_lone_error_changes_neither_pace_nor_limit():
    limiter = Limiter(AdaptiveLimit(limit=8, maximum=8), Pacer())
    ticket = limiter.try_enter(0.0)
    assert limiter.release(ticket, 0.02, Outcome.ERROR) is None
    assert limiter.pacer.rate is None and limiter.limit.limit == 8 and limiter.in_flight == 0


def test_a_lone_push_back_cuts_the_limit_a_tenth_and_sets_no_pace():
    limiter = Limiter(AdaptiveLimit(limit=8, maximum=8), Pacer())
    for n in range(30):
        limiter.release(limiter.try_enter(n * 0.01), n * 0.01 + 0.02, Outcome.OK)
    change = limiter.release(limiter.try_enter(0.5), 0.52, Outcome.PUSHBACK)
    assert not change.persisting and change.rate_after is None
    assert change.limit_after == pytest.approx(0.9 * change.limit_before)
    assert limiter.reserve_pace(0.6) == 0.0 and limiter.reserve_pace(0.6) == 0.0  # still unpaced


def test_push_back_that_persists_paces_at_what_was_accepted_and_says_so():
    limiter = Limiter(AdaptiveLimit(limit=8, maximum=8), Pacer())
    for n in range(30):
        assert limiter.reserve_pace(n * 0.01) == 0.0  # unpaced
        limiter.release(limiter.try_enter(n * 0.01), n * 0.01 + 0.02, Outcome.OK)
    changes = [limiter.release(limiter.try_enter(0.5 + n * 0.001), 0.52 + n * 0.001, Outcome.PUSHBACK) for n in range(8)]
    first = next(c for c in changes if c.persisting)
    assert changes.index(first) <= 4  # by the fifth in a row
    assert first.rate_before is None and first.rate_after == pytest.approx(0.975 * 30)  # what was accepted in the last second, less a little
    assert first.limit_after < 8
    assert limiter.reserve_pace(0.6) > 0  # paced from now on: the 30 accepted went out within the last second


def test_errors_that_persist_are_push_back():
    limiter = Limiter(AdaptiveLimit(limit=8, maximum=8), Pacer())
    changes = [limiter.release(limiter.try_enter(n * 0.05), n * 0.05 + 0.02, Outcome.ERROR if n % 2 else Outcome.OK) for n in range(40)]
    assert any(changes) and limiter.pacer.rate is not None


def test_once_paced_enough_stay_in_flight_to_keep_the_pace():
    limiter = Limiter(AdaptiveLimit(limit=2, maximum=32), Pacer(maximum=100.0))
    for n in range(20):
        limiter.release(limiter.try_enter(n * 0.01), n * 0.01 + 0.2, Outcome.OK)  # 200 ms calls
    assert limiter.allowed() >= 100 * 0.2  # Little's law: rate × latency


def test_acquire_waits_for_room_and_gets_it_when_a_call_ends():
    limiter = Limiter(fixed(1), Pacer())
    first = limiter.acquire()
    entered = threading.Event()
    waiter = threading.Thread(target=lambda: (limiter.acquire(), entered.set()))
    waiter.start()
    assert not entered.wait(0.2)  # no room: it waits
    limiter.release(first, 0.1, Outcome.OK)
    assert entered.wait(5)
    waiter.join()
    assert limiter.in_flight == 1


def test_acquire_sleeps_for_its_place_in_the_pace():
    slept = []
    limiter = Limiter(fixed(8), Pacer(maximum=10.0), clock=lambda: 0.0)
    for _ in range(3):
        limiter.release(limiter.acquire(slept.append), 0.0, Outcome.OK)
    assert slept == pytest.approx([0.1, 0.2])  # the first goes at once
