import pytest

from monitoring.observability.eta import Estimate, duration_words, estimate, remaining_s, run_remaining_s


@pytest.mark.parametrize("done, expected, elapsed, ended, rate, eta, percent", [
    (250, 1000, 5.0, False, 50.0, 15.0, 25),  # 750 left at 50 a second
    (0, 1000, 5.0, False, 0.0, None, 0),  # nothing done yet: no rate, no ETA
    (250, None, 5.0, False, 50.0, None, None),  # the source gives no total
    (1200, 1000, 10.0, False, 120.0, 0.0, 99),  # more than an earlier sync's total: nearly done, not 120%
    (990, 1000, 10.0, True, 99.0, 0.0, 99),  # ended short of an estimate: 0 s left
    (1000, 1000, 10.0, True, 100.0, 0.0, 100),
    (5, 10, None, False, 0.0, None, 50),  # not started
])
def test_estimates_come_from_the_rate_and_the_work_left(done, expected, elapsed, ended, rate, eta, percent):
    guess = estimate(done=done, expected=expected, elapsed_s=elapsed, ended=ended)
    assert (guess.rate, guess.eta_s, guess.percent) == (rate, eta, percent)


def test_work_side_by_side_ends_with_its_slowest_part():
    fast, slow = Estimate(10, 20, 10.0, 1.0), Estimate(10, 100, 1.0, 90.0)
    assert remaining_s([fast, slow]) == 90.0
    assert remaining_s([fast, Estimate(10, None, 1.0, None)]) is None
    assert remaining_s([]) is None


@pytest.mark.parametrize("seconds, words", [(4.4, "4 s"), (125, "2 min 05 s"), (3780, "1 h 03 min")])
def test_durations_in_words(seconds, words):
    assert duration_words(seconds) == words


def test_a_running_estimate_reckons_with_the_recent_rate():
    """250 of 1,000 in 10 s is 25 a second on average, but 10 a second lately: 75 s left, not 30."""
    guess = estimate(done=250, expected=1000, elapsed_s=10.0, ended=False, recent_rate=10.0)
    assert (guess.rate, guess.eta_s) == (10.0, 75.0)
    ended = estimate(done=1000, expected=1000, elapsed_s=40.0, ended=True, recent_rate=10.0)
    assert ended.rate == 25.0  # an ended step's rate is its whole time's


def test_a_runs_end_is_its_running_parts_then_the_parts_to_come():
    running = [Estimate(10, 20, 1.0, 10.0), Estimate(10, 100, 1.0, 30.0)]
    assert run_remaining_s(running, [12.0, 5.0]) == 47.0
    assert run_remaining_s([], [12.0]) == 12.0
    assert run_remaining_s(running, [None]) is None
