"""The step registry (syncapp.step_registry): every surface reads its entries, so a new step is one entry."""

import pytest
from django.core.exceptions import ValidationError

from monitoring.governor import profiles
from monitoring.governor.profiles import route_policy
from syncapp.forms import StartRunForm, clean_steps
from syncapp.models import Status
from syncapp.progress import _unit
from syncapp.providers import provider_class
from syncapp.step_registry import FULL_SYNC, STEPS, Step, supported_steps

from ..conftest import demo_org, sync_here
from ..factories import TenantFactory
from ..fakegoogle import USERS_PATH, google_error

AUDITED: list[int] = []


def audit(ctx) -> None:
    """A step of this test's own: it records that it ran, and what the tokens step had done by then."""
    AUDITED.append(ctx.step.run.step_records.get(name="tokens").status)


AUDIT = Step(
    "audit", "who holds what, after the tokens", unit="grants looked at", carry_out="tests.syncapp.test_step_registry.audit",
    governor={"max_concurrency": 1, "io_max_concurrency": 1}, needs=("tokens",), full_sync=False, reads_provider=False,
)


@pytest.fixture
def audit_step(monkeypatch):
    monkeypatch.setitem(STEPS, "audit", AUDIT)
    monkeypatch.setattr(profiles, "ROUTES", dict(profiles.ROUTES))
    profiles.add_routes({"audit": AUDIT.governor})
    AUDITED.clear()
    return AUDIT


def test_every_step_is_carried_out_and_governed_on_a_route_of_its_own():
    for name, step in STEPS.items():
        assert callable(step.function()), name
        assert route_policy(name).max_concurrency == step.governor["max_concurrency"]
    assert FULL_SYNC == ("users", "tokens", "relations")


def test_a_provider_is_offered_the_steps_it_has():
    assert supported_steps(provider_class("demo")) == ["users", "tokens", "relations"]
    assert supported_steps(provider_class("google")) == ["users", "tokens", "relations", "changes"]


def test_a_step_that_runs_alone_is_refused_beside_another_with_its_reason():
    with pytest.raises(ValidationError, match="changes runs alone: it applies the feed"):
        clean_steps("changes,users")


def test_a_bad_route_default_fails_when_it_is_added(monkeypatch):
    monkeypatch.setattr(profiles, "ROUTES", dict(profiles.ROUTES))
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        profiles.add_routes({"broken": {"batch_size": 0}})
    assert "broken" not in profiles.ROUTES


@pytest.mark.django_db(transaction=True)
def test_a_new_step_is_one_entry(audit_step):
    tenant = TenantFactory(provider="demo", provider_config={"users": 5, "apps": 3, "seed": 7})
    assert clean_steps("audit,tokens") == ["tokens", "audit"]  # in the registry's order
    form = StartRunForm({"steps": "tokens,audit"}, provider="demo")
    assert form.is_valid(), form.errors
    assert "audit" in form.supported
    run = sync_here(tenant, steps="tokens,audit")
    assert run.status == Status.COMPLETED, run.error
    assert AUDITED == [Status.COMPLETED]  # it waited for what it needs
    audited = run.step_records.get(name="audit")
    assert audited.status == Status.COMPLETED
    assert _unit(audited) == "grants looked at"


@pytest.mark.django_db(transaction=True)
def test_a_new_step_is_skipped_when_what_it_needs_failed(audit_step, google_tenant, fake_google):
    fake_google.load(*demo_org(5))
    fake_google.fail_next(USERS_PATH, 401, google_error(401, "Invalid Credentials", "authError"))
    run = sync_here(google_tenant, steps="tokens,audit")
    audited = run.step_records.get(name="audit")
    assert run.step_records.get(name="tokens").status == Status.FAILED
    assert (audited.status, audited.error) == (Status.SKIPPED, "tokens step failed")
    assert AUDITED == []
