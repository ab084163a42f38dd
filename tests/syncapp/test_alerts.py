"""Alerts (syncapp.alerts): a real HTTP webhook receiver on loopback gets exactly one signed
delivery per new risky grant the changes feed applies, none for an overlapping re-read, and the
delivery is tried again after 500s; e-mail through Django's locmem backend; an unreachable
webhook never fails the sync and is shown as tried."""

import hashlib
import hmac
import json
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from syncapp.alerts import deliver_due
from syncapp.models import Alert, AlertDelivery, AlertRule, Status

from ..conftest import demo_org, sync_here
from ..loopback import LoopbackJsonServer

pytestmark = [pytest.mark.django_db(transaction=True)]
GMAIL = "https://www.googleapis.com/auth/gmail.readonly"
READER = {"clientId": "reader.apps", "displayText": "Mail Reader", "anonymous": False, "nativeApp": False, "scopes": ["openid", GMAIL]}


class WebhookReceiver(LoopbackJsonServer):
    name = "webhook-receiver"

    def __init__(self):
        super().__init__()
        self.received: list[tuple[dict, bytes]] = []
        self._lock = threading.Lock()

    def default_fault(self, status: int) -> dict:
        return {"error": status}

    def _answer(self, method, path, query, headers, body):
        with self._lock:
            self.received.append((dict(headers), body))
            return self.scripted_answer(path) or (200, {"ok": True}, {})


@pytest.fixture
def receiver():
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def watched(google_tenant, fake_google, receiver, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    rule = AlertRule.objects.create(tenant=google_tenant, name="risky", kind=AlertRule.Kind.RISKY_GRANT, min_risk=4,
                                    webhook_url=f"{receiver.url}/hook", webhook_secret="s3cret", emails="soc@example.org")
    users, tokens = demo_org(30, apps=6)
    fake_google.load(users, tokens)
    assert sync_here(google_tenant).status == Status.COMPLETED
    return rule, users


def test_one_signed_delivery_per_new_risky_grant_none_for_a_reread_and_retries_after_500s(google_tenant, fake_google, receiver, watched):
    rule, users = watched
    assert not AlertDelivery.objects.exists()  # the first full read is known, not news
    fake_google.grant(users[0]["id"], READER, timezone.now() - timedelta(seconds=5))
    fake_google.grant(users[1]["id"], {**READER, "clientId": "harmless.apps", "scopes": ["openid"]}, timezone.now() - timedelta(seconds=4))
    assert sync_here(google_tenant, steps="changes").status == Status.COMPLETED
    [alert] = Alert.objects.filter(rule=rule, baseline=False)
    assert alert.facts["application"] == "reader.apps" and alert.facts["risk"] == "high"

    receiver.fail_next("/hook", 500, times=2)
    later = timezone.now()
    for _ in range(3):  # two 500s, then accepted: each try waits for its backoff
        later += timedelta(hours=2)
        deliver_due(later)
    webhook = AlertDelivery.objects.get(channel="webhook")
    assert (webhook.status, webhook.attempts, webhook.last_result) == ("delivered", 3, "HTTP 200")
    assert len(receiver.received) == 3
    headers, body = receiver.received[-1]
    assert headers["X-Ballast-Signature"] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert json.loads(body)["facts"]["user"] == users[0]["primaryEmail"]
    assert [m.to for m in mail.outbox] == [["soc@example.org"]] and "Mail Reader" in mail.outbox[0].subject

    assert sync_here(google_tenant, steps="changes").status == Status.COMPLETED  # the same window read again
    deliver_due(later + timedelta(hours=2))
    assert Alert.objects.filter(baseline=False).count() == 1 and len(receiver.received) == 3


def test_an_unreachable_webhook_never_fails_the_sync_and_is_shown_as_tried(google_tenant, fake_google, watched):
    rule, users = watched
    AlertRule.objects.filter(pk=rule.pk).update(webhook_url="http://127.0.0.1:9/hook", emails="")
    fake_google.grant(users[2]["id"], READER, timezone.now() - timedelta(seconds=5))
    assert sync_here(google_tenant, steps="changes").status == Status.COMPLETED
    deliver_due(timezone.now() + timedelta(hours=1))
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 1) and delivery.last_result.startswith("no answer")
    assert delivery.next_attempt_at > timezone.now()


def test_an_app_reaching_n_users_and_an_admin_consent_are_raised_once(google_tenant, fake_google, watched):
    from syncapp.alerts import raise_alerts
    from syncapp.models import Application

    _, users = watched
    many = AlertRule.objects.create(tenant=google_tenant, name="popular", kind=AlertRule.Kind.MANY_USERS, min_users=3, emails="a@example.org")
    raise_alerts(google_tenant.runs.order_by("id").last())  # its first evaluation: the apps already that big are known
    assert Alert.objects.filter(rule=many).exists() and not Alert.objects.filter(rule=many, baseline=False).exists()
    for user in users[:3]:
        fake_google.grant(user["id"], {**READER, "clientId": "popular.apps", "scopes": ["openid"]}, timezone.now() - timedelta(seconds=5))
    run = sync_here(google_tenant, steps="changes")
    popular = Application.objects.get(client_id="popular.apps")
    [alert] = Alert.objects.filter(rule=many, baseline=False)
    assert (alert.key, alert.facts["users"]) == (f"users:{popular.pk}", 3)
    assert AlertDelivery.objects.filter(alert=alert, channel="email").count() == 1
    raised = Alert.objects.count()
    assert raise_alerts(run) == 0 and Alert.objects.count() == raised  # the same state again: nothing new

    consent = AlertRule.objects.create(tenant=google_tenant, name="consent", kind=AlertRule.Kind.ADMIN_CONSENT, emails="a@example.org")
    assert raise_alerts(run) == 0  # its first evaluation: no consent yet
    Application.objects.filter(pk=popular.pk).update(org_scopes=["openid"])
    assert raise_alerts(run) == 1 and raise_alerts(run) == 0
    Application.objects.filter(pk=popular.pk).update(org_scopes=["openid", GMAIL])  # consent widened: news again
    assert raise_alerts(run) == 1 and Alert.objects.filter(rule=consent).count() == 2
