"""Alerts: a tenant's rules (AlertRule) raised by the steps that change grants — the changes
feed, full syncs and imports — each condition once, and delivered by webhook and e-mail apart
from the sync, with retries.

Each condition has a key, unique per rule: a new grant at or above a risk level is its timeline
entry (written once per change, never twice on overlapping feed windows or resumed steps); an
application reaching N users and an admin consent are the application (and the consent's
scopes). The first full read of a tenant, and a state rule's first evaluation (users, consent),
record what they find as known without delivering it: alerts tell of changes, not of the
inventory as it was.

Delivery runs in a task of its own (deliver_due, queued after the run's commit, and again, as a
one-off schedule, when the next retry is due):
a webhook gets a JSON body signed with HMAC-SHA256 of the rule's secret in X-Ballast-Signature;
any answer but 2xx, or none, is tried again with exponential backoff, up to MAX_ATTEMPTS, each
attempt recorded on the delivery (admin: Alert deliveries)."""

import hashlib
import hmac
import json
import logging
import random
from datetime import timedelta

import urllib3
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from .inventory import iso
from .models import Alert, AlertDelivery, AlertRule, Application, GrantEvent, SyncRun, SyncStep

log = logging.getLogger(__name__)
NEW_GRANTS = (GrantEvent.Kind.GRANTED, GrantEvent.Kind.REGRANTED, GrantEvent.Kind.WIDENED, GrantEvent.Kind.CHANGED)
MAX_ATTEMPTS = 8
BACKOFF_S, MAX_BACKOFF_S = 30, 3600
TIMEOUT_S = 10
_http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=TIMEOUT_S))


def _first_read(run: SyncRun) -> bool:
    """Whether this run is the tenant's first to complete a full tokens read."""
    return not SyncStep.objects.filter(run__tenant_id=run.tenant_id, name="tokens", run_id__lt=run.pk,
                                       status__in=["completed", "completed_with_errors"]).exists()


def _conditions(rule: AlertRule, run: SyncRun):
    """(key, subject, facts) of what the rule sees after this run."""
    if rule.kind == AlertRule.Kind.RISKY_GRANT:
        events = (GrantEvent.objects.filter(run=run, kind__in=NEW_GRANTS, token__risk__gte=rule.min_risk)
                  .select_related("user", "application", "token").order_by("id"))
        for event in events:
            yield (f"event:{event.pk}", f"{event.get_kind_display()}: {event.user} → {event.application} ({event.token.get_risk_display()} risk)",
                   {"user": event.user.primary_email, "application": event.application.client_id, "name": event.application.display_name,
                    "change": event.kind, "scopes": event.scopes, "added": event.added, "risk": event.token.get_risk_display(),
                    "at": iso(event.at), "run": run.pk})
    elif rule.kind == AlertRule.Kind.MANY_USERS:
        for app in Application.objects.filter(tenant_id=run.tenant_id, users__gte=rule.min_users):
            yield (f"users:{app.pk}", f"{app} is held by {app.users:,} users",
                   {"application": app.client_id, "name": app.display_name, "users": app.users, "risk": app.get_risk_display()})
    else:
        for app in Application.objects.filter(tenant_id=run.tenant_id).exclude(org_scopes=[]):
            scopes = sorted(app.org_scopes)
            digest = hashlib.sha256(json.dumps(scopes).encode()).hexdigest()[:16]
            yield (f"consent:{app.pk}:{digest}", f"Admin consent for {app}",
                   {"application": app.client_id, "name": app.display_name, "scopes": scopes, "risk": app.get_risk_display()})


def raise_alerts(run: SyncRun) -> int:
    """The tenant's rules after a run that changed grants: a new Alert per condition not seen
    before, with a delivery per channel (none on the first full read). Returns how many were raised."""
    rules = list(AlertRule.objects.filter(tenant_id=run.tenant_id, active=True))
    if not rules:
        return 0
    first_read, raised = _first_read(run), 0
    for rule in rules:
        baseline = first_read or (rule.evaluated_at is None and rule.kind != AlertRule.Kind.RISKY_GRANT)
        known = set(Alert.objects.filter(rule=rule).values_list("key", flat=True))
        for key, subject, facts in _conditions(rule, run):
            if key in known:
                continue
            try:
                with transaction.atomic():
                    alert = Alert.objects.create(rule=rule, key=key, subject=subject[:300], facts=facts, run=run, baseline=baseline)
                    if not baseline:
                        AlertDelivery.objects.bulk_create(
                            [AlertDelivery(alert=alert, channel=AlertDelivery.Channel.WEBHOOK, target=rule.webhook_url)] * bool(rule.webhook_url)
                            + [AlertDelivery(alert=alert, channel=AlertDelivery.Channel.EMAIL, target=rule.emails)] * bool(rule.emails))
            except IntegrityError:  # raised meanwhile by a run beside this one
                continue
            raised += not baseline
        AlertRule.objects.filter(pk=rule.pk).update(evaluated_at=timezone.now())
    if raised:
        transaction.on_commit(_enqueue_delivery)
    return raised


def _enqueue_delivery() -> None:
    from django_q.tasks import async_task

    async_task("syncapp.alerts.deliver_due", task_name="ballast-alerts")


def payload(alert: Alert) -> bytes:
    rule = alert.rule
    return json.dumps({"id": alert.pk, "tenant": rule.tenant.slug, "rule": rule.name, "kind": rule.kind, "subject": alert.subject,
                       "facts": alert.facts, "raised_at": iso(alert.created_at)}, sort_keys=True).encode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _send(delivery: AlertDelivery) -> tuple[bool, str]:
    alert = delivery.alert
    if delivery.channel == AlertDelivery.Channel.EMAIL:
        recipients = [a.strip() for a in delivery.target.split(",") if a.strip()]
        send_mail(f"[Ballast] {alert.subject}", json.dumps(alert.facts, indent=2), None, recipients)
        return True, f"sent to {len(recipients)}"
    body = payload(alert)
    headers = {"Content-Type": "application/json", "User-Agent": "ballast-alerts", "X-Ballast-Delivery": str(delivery.pk),
               "X-Ballast-Signature": signature(alert.rule.webhook_secret, body)}
    try:
        response = _http.request("POST", delivery.target, body=body, headers=headers)
    except urllib3.exceptions.HTTPError as exc:
        return False, f"no answer: {exc.__class__.__name__}"
    return 200 <= response.status < 300, f"HTTP {response.status}"


def deliver_due(now=None) -> int:
    """Send every delivery that is due; a failure is tried again later. Returns how many were sent."""
    now, sent = now or timezone.now(), 0
    for delivery in AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING, next_attempt_at__lte=now).select_related("alert__rule__tenant"):
        try:
            ok, detail = _send(delivery)
        except Exception as exc:  # a mail server down, a bad address: recorded, tried again, never raised into the sync
            ok, detail = False, f"{exc.__class__.__name__}: {exc}"[:300]
        delivery.attempts += 1
        delivery.last_result = detail[:300]
        if ok:
            delivery.status, delivery.delivered_at = AlertDelivery.Status.DELIVERED, timezone.now()
            sent += 1
        elif delivery.attempts >= MAX_ATTEMPTS:
            delivery.status = AlertDelivery.Status.FAILED
            log.warning("alert %s to %s failed %d times, last: %s", delivery.alert_id, delivery.target, delivery.attempts, detail)
        else:
            wait = min(BACKOFF_S * 2 ** (delivery.attempts - 1), MAX_BACKOFF_S) * random.uniform(0.8, 1.2)
            delivery.next_attempt_at = timezone.now() + timedelta(seconds=wait)
        delivery.save(update_fields=["attempts", "last_result", "status", "delivered_at", "next_attempt_at"])
    _schedule_retry()
    return sent


RETRY_SCHEDULE = "ballast-alert-retries"


def _schedule_retry() -> None:
    """A one-off schedule for when the next pending delivery is due (none: none)."""
    from django_q.models import Schedule

    due = AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING).order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()
    if due is None:
        Schedule.objects.filter(name=RETRY_SCHEDULE).delete()
        return
    Schedule.objects.update_or_create(name=RETRY_SCHEDULE, defaults={
        "func": "syncapp.alerts.deliver_due", "schedule_type": Schedule.ONCE, "next_run": due, "repeats": 1})
