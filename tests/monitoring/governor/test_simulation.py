"""The real governor and limiter against a simulated machine and a simulated provider, on a fake
clock: ranges, not exact figures (as Vector tests its adaptive concurrency)."""

import pytest

from monitoring.governor.policy import RoutePolicy

from .simulation import Machine, Provider, run_calls, run_cpu_bound_sync, run_statement_sync

CEILING = 80.0
USABLE = 50.0  # one Python process: one core of the two


@pytest.fixture(scope="module", params=[1, 2])
def neighbour_steps(request):
    """A neighbour at 0%, then 70%, then 20% of the machine, a minute each (stepping between readings)."""
    machine = Machine(schedule=[(0, 0.0), (60.25, 0.7), (120.25, 0.2)], seed=request.param)
    governor, recorder, caps = run_cpu_bound_sync(machine, 180)
    return machine, governor, recorder, caps


def test_the_machine_stays_under_the_ceiling_whenever_the_neighbour_alone_is(neighbour_steps):
    machine, *_ = neighbour_steps
    windows = machine.windows(5.0)
    assert len(windows) > 170
    over = [(start, round(total, 1)) for start, _, total, _, _ in windows if total > CEILING + 5]
    assert over == []


@pytest.mark.parametrize("start, end, neighbour", [(10, 60, 0), (70, 120, 70), (130, 180, 20)])
def test_the_sync_takes_the_headroom_the_neighbour_leaves(neighbour_steps, start, end, neighbour):
    machine, *_ = neighbour_steps
    steady = [w for w in machine.windows(5.0) if w[0] >= start and w[1] <= end]
    sync = sum(w[3] for w in steady) / len(steady)
    headroom = min(CEILING - neighbour, USABLE)
    assert 0.75 * headroom <= sync <= 1.25 * headroom


def test_concurrency_changes_a_few_times_a_minute_and_cpu_never_brakes(neighbour_steps):
    machine, governor, recorder, caps = neighbour_steps
    assert len(caps) - 1 <= 3 * 6  # at most six a minute over the three minutes
    assert [cap for _, cap in caps][-1] == 2  # back to the route's maximum once the headroom is back
    kinds = [e.kind for e in recorder.events]
    assert "brake" not in kinds and "stop" not in kinds
    holds = [e for e in recorder.events if e.kind == "throttle"]
    assert 1 <= len(holds) <= 3 and all(e.ended for e in holds)  # an episode, not a flood
    assert any("neighbours use 7" in e.detail for e in holds)  # says why: the neighbour's ~70%


def test_a_neighbour_alone_over_the_ceiling_leaves_the_sync_its_floor():
    machine = Machine(schedule=[(0, 0.95)])
    governor, recorder, _ = run_cpu_bound_sync(machine, 60, RoutePolicy(cpu_floor_percent=10))
    tail = [w for w in machine.windows(5.0) if w[0] >= 10]
    sync = sum(w[3] for w in tail) / len(tail)
    assert sync == pytest.approx(5.0, abs=1.5)  # 10% of one core is 5% of the machine: still moving
    assert not any(e.kind in ("brake", "stop") for e in recorder.events)


def test_slow_start_reaches_the_providers_capacity_within_a_few_round_trips():
    provider = Provider(latency_s=0.02, capacity=16)
    seconds, limiter, limits = run_calls(provider, 3000)
    reached = next(t for t, limit in limits if limit >= 0.8 * 16)
    assert reached <= 10 * 0.02  # ten round trips at the unloaded latency
    late = [limit for t, limit in limits if t <= 1.0][-1:] + [limit for t, limit in limits if t > 1.0]  # in force after 1 s
    assert max(late) <= 2 * 16 and min(late) >= 16 / 2
    assert seconds <= 1.3 * 3000 / 16 * 0.02  # within 30% of the capacity's best


def test_latency_bound_calls_run_many_times_faster_than_one_at_a_time():
    seconds, _, _ = run_calls(Provider(latency_s=0.02), 1000)
    assert 1000 * 0.02 / seconds >= 15


CPU_S_PER_CALL = 1 / 640  # a tokens step on this machine: about 640 calls/s before the provider is the limit


@pytest.mark.parametrize("calls", [800, 5000])
def test_a_hidden_quota_is_found_from_cold_and_used_with_few_refusals(calls):
    """A provider that answers 429 above 40 calls/s: the first push-back ends slow start, the
    pace is what was accepted, and the burst that found the quota is waited out."""
    provider = Provider(latency_s=0.02, quota=40)
    run_calls(provider, calls, cpu_s_per_call=CPU_S_PER_CALL)
    span = provider.accepted_at[-1] - provider.accepted_at[0]
    assert len(provider.accepted_at) / span >= 0.95 * 40  # of the quota, first call to last
    assert provider.refused_share() <= 0.03


@pytest.mark.parametrize("calls", [1000, 5000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sporadic_push_back_costs_its_calls_a_retry_not_the_step_its_pace(calls, seed):
    """Google's 403 rateLimitExceeded for 1% of calls at random, far under any quota."""
    clean, _, _ = run_calls(Provider(latency_s=0.02, seed=seed), calls, cpu_s_per_call=CPU_S_PER_CALL, seed=seed)
    provider = Provider(latency_s=0.02, pushback_share=0.01, seed=seed)
    faulty, limiter, _ = run_calls(provider, calls, cpu_s_per_call=CPU_S_PER_CALL, seed=seed)
    assert provider.pushed_back >= calls // 200  # they happened
    assert faulty <= 1.3 * clean
    assert limiter.pacer.rate is None  # never a pace: each was a lone one


def test_lone_5xx_answers_cost_little_throughput():
    clean, _, _ = run_calls(Provider(latency_s=0.02), 2000)
    faulty_provider = Provider(latency_s=0.02, error_rate=0.027)
    faulty, limiter, _ = run_calls(faulty_provider, 2000)
    assert faulty_provider.errors > 30  # they happened
    assert faulty <= 1.2 * clean
    assert limiter.pacer.rate is None  # and never set a pace


@pytest.fixture(scope="module")
def statements_beside_a_hog():
    """A set-based step whose CPU is its database's, beside a neighbour that takes one core of
    two: under the default ceiling, and uncapped (MAX_CPU_PERCENT=100) beside the same hog."""
    runs = {}
    for name, ceiling in (("capped", CEILING), ("uncapped", 100.0)):
        machine = Machine(schedule=[(0, 0.5)])
        runs[name] = (machine, *run_statement_sync(machine, 120, RoutePolicy(max_cpu_percent=ceiling)))
    return runs


def test_the_database_working_for_the_sync_is_held_under_the_ceiling(statements_beside_a_hog):
    machine, governor, recorder, caps, statements = statements_beside_a_hog["capped"]
    worst = max(total for _, _, total, _, _ in machine.windows(5.0))
    assert worst <= 85.0
    _, _, _, _, uncapped = statements_beside_a_hog["uncapped"]
    assert statements >= 0.5 * uncapped  # the ceiling leaves 60% of a core; uncapped it had all of one
    assert len(caps) - 1 <= 6 * 2  # at most six changes a minute


def test_uncounted_the_database_would_take_the_machine_over_the_ceiling():
    """The same step where the database's CPU is not seen (elsewhere, or before it was counted):
    its statements count as a neighbour's and the sync's own process has nothing to hold."""
    machine = Machine(schedule=[(0, 0.5)], database_counted=False)
    run_statement_sync(machine, 60, RoutePolicy(max_cpu_percent=CEILING))
    assert max(total for _, _, total, _, _ in machine.windows(5.0)) > 90.0


def test_a_ceiling_of_100_percent_never_holds_whatever_the_neighbours_use():
    machine = Machine(schedule=[(0, 0.65)])
    governor, recorder, caps = run_cpu_bound_sync(machine, 30, RoutePolicy(max_cpu_percent=100.0))
    assert governor.waits.seconds() == 0.0 and not any(e.kind == "throttle" for e in recorder.events)
    assert [cap for _, cap in caps] == [2]
