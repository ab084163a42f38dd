"""How a run's steps are governed: the policy of a route for a run (its profile, else the
tenant's, and the tenant's overrides) and the governor a step runs under. Below both runs and
steps, so neither imports the other for it."""

from monitoring.governor.events import DatabaseRecorder
from monitoring.governor.profiles import route_policy
from monitoring.governor.readings.database import database_cpu
from monitoring.governor.route import Governor
from monitoring.governor.sampler import get_sampler
from monitoring.ledger.owners import run_owner
from monitoring.ledger.quotas import limits_for

from .models import SyncRun, SyncStep, Tenant
from .step_registry import STEPS


def run_policy(run: SyncRun, route: str):
    """A route's policy for this run: its profile (else the tenant's) and the tenant's overrides.
    Raises ValueError naming a bad profile or setting."""
    return route_policy(route, profile=run.profile or run.tenant.sync_profile or None, overrides=run.tenant.governor_settings)


def step_label(step: SyncStep) -> str:
    return f"[{step.name} run {step.run_id}]"


def governor_for(step: SyncStep, tenant: Tenant) -> Governor:
    """The step's governor: its route's policy for the run's profile and the tenant's overrides."""
    policy = run_policy(step.run, step.name)
    quota = limits_for(tenant.pk)  # the tenant's share caps whatever the profile allows
    caps = {}
    if quota.max_concurrency:
        caps["max_concurrency"] = min(policy.max_concurrency, quota.max_concurrency)
        caps["io_max_concurrency"] = min(policy.io_max_concurrency, quota.max_concurrency)
    if quota.max_memory_mb:
        caps["rss_limit_mb"] = min(policy.rss_limit_mb or quota.max_memory_mb, quota.max_memory_mb)
    return Governor(
        policy.with_overrides(**caps),
        read=get_sampler().latest,
        recorder=DatabaseRecorder(
            owner=run_owner(step.run_id), route=step.name, label=step_label(step),
            context={"run": step.run_id, "step": step.name, "tenant": tenant.slug},
        ),
        io_bound=STEPS[step.name].io_bound,
        calls_per_second=quota.provider_calls_per_second,
        usable_cores=database_cpu.usable_cores(),
    )
