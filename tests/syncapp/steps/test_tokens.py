"""The tokens step (syncapp.steps.tokens): its checkpoint across pages in flight, resuming, page tokens that expired."""

from datetime import timedelta

import pytest
from django.utils import timezone

from syncapp.models import Status, SyncStep, Token
from syncapp.providers import Page
from syncapp.steps.tokens import _OpenPages

from ...conftest import demo_org, sync_here
from ...fakegoogle import USERS_PATH, google_error

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("batches_as_the_governor_sizes_them")]


def test_the_tokens_checkpoint_is_the_oldest_page_not_yet_written():
    pages = _OpenPages(None)
    first, second = Page([], token=None, next_token="p2"), Page([], token="p2", next_token="p3")
    pages.opened(first, [("a", ""), ("b", "")], {"a": 1, "b": 2})
    pages.opened(second, [("c", ""), ("a", "")], {"c": 3, "a": 1})  # a listed on both pages: called twice
    assert pages.checkpoint() == {"page_token": None}
    for user in ("c", "a", "b"):  # the second page's c and the first's a and b answer
        pages.answered(user)
    assert pages.checkpoint() == {"page_token": "p2"}  # the first page is done, the second waits for its a
    work = pages.answered("a")
    work.unwritten = 2  # its grants are read, not yet committed
    assert pages.checkpoint() == {"page_token": "p2"}
    work.unwritten = 0
    assert pages.checkpoint() == {"page_token": "p3"}  # everything read is written: go on from the next


def test_a_tokens_step_that_stops_between_pages_resumes_exactly(google_tenant, fake_google, settings):
    settings.BALLAST_GOVERNOR = {"batch_size": 20}
    users, tokens = demo_org(120)
    fake_google.load(users, tokens)
    fake_google.max_page = 25
    fake_google.fail_next(USERS_PATH, 400, google_error(400, "Bad Request", "badRequest"), after=3)  # the 4th page fails
    stopped = sync_here(google_tenant, steps="tokens").step_records.get()
    assert stopped.status == Status.FAILED and "400 Bad Request" in stopped.error
    assert stopped.checkpoint["page_token"] in (None, "25", "50", "75")  # a page whose users were not all written
    resumed = sync_here(google_tenant, steps="tokens").step_records.get()
    assert resumed.status == Status.COMPLETED and resumed.resumed_from_id == stopped.pk
    expected = {(u, t["clientId"]) for u, ts in tokens.items() for t in ts}
    stored = set(Token.objects.values_list("user__external_id", "application__client_id"))
    assert stored == expected and Token.objects.count() == len(expected)  # exactly, no duplicate
    assert Token.objects.filter(revoked_at__isnull=False).count() == 0


def _stopped_tokens_step(google_tenant, fake_google, settings):
    settings.BALLAST_GOVERNOR = {"batch_size": 20}
    users, tokens = demo_org(120)
    fake_google.load(users, tokens)
    fake_google.max_page = 25
    fake_google.fail_next(USERS_PATH, 500, google_error(500, "Backend Error", "backendError"), after=3)
    google_tenant.provider_config = {**google_tenant.provider_config, "max_attempts": 1}
    google_tenant.save()
    stopped = sync_here(google_tenant, steps="tokens").step_records.get()
    assert stopped.status == Status.FAILED and stopped.checkpoint["page_token"] in ("25", "50", "75")
    google_tenant.provider_config = {**google_tenant.provider_config, "max_attempts": 4}
    google_tenant.save()
    return stopped, {(u, t["clientId"]) for u, ts in tokens.items() for t in ts}


def test_a_page_token_the_provider_refuses_restarts_the_read_from_the_start(google_tenant, fake_google, settings):
    stopped, expected = _stopped_tokens_step(google_tenant, fake_google, settings)
    fake_google.fail_next(USERS_PATH, 400, google_error(400, "Invalid page token", "invalid"))  # expired at Google
    step = sync_here(google_tenant, steps="tokens").step_records.get()
    assert step.status == Status.COMPLETED and step.resumed_from_id == stopped.pk
    assert step.received == len(expected)  # the whole source, read again from its first page
    assert set(Token.objects.values_list("user__external_id", "application__client_id")) == expected
    assert Token.objects.count() == len(expected) and not Token.objects.filter(revoked_at__isnull=False).exists()


def test_a_checkpoint_older_than_a_page_token_lives_is_not_resumed(google_tenant, fake_google, settings):
    stopped, expected = _stopped_tokens_step(google_tenant, fake_google, settings)
    three_days_ago = (timezone.now() - timedelta(days=3)).isoformat()
    SyncStep.objects.filter(pk=stopped.pk).update(checkpoint={**stopped.checkpoint, "at": three_days_ago})
    before = len(fake_google.requests)
    step = sync_here(google_tenant, steps="tokens").step_records.get()
    assert step.status == Status.COMPLETED and step.resumed_from_id is None
    first_page = next(query for _, path, query in fake_google.requests[before:] if path == USERS_PATH)
    assert "pageToken" not in first_page  # a full read, from the first page
    assert step.received == len(expected)
    assert set(Token.objects.values_list("user__external_id", "application__client_id")) == expected
