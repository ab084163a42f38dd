"""Revocation requests: the dry run (what exactly would be revoked), the request, its approval,
and the run that carries it out (syncapp.steps.revoke). The admin, `manage.py revoke` and the
API are shells over these functions; each checks its caller's right (syncapp.revoke_token)."""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import Application, DirectoryUser, Revocation, RevocationItem, Status, SyncRun, Tenant, Token
from .providers import provider_class
from .runs import start_revocation_run

log = logging.getLogger(__name__)
PERMISSION = "syncapp.revoke_token"
SHOWN_USERS = 20  # a dry run names this many users, then counts the rest


@dataclass(frozen=True)
class Plan:
    """What a revocation would revoke, read now: nothing is changed by making one."""

    tenant: Tenant
    client_id: str
    user_email: str
    unused_days: int | None
    tokens: list[Token]

    @property
    def users(self) -> list[str]:
        return [token.user.primary_email for token in self.tokens]

    @property
    def scopes(self) -> list[str]:
        return sorted({scope for token in self.tokens for scope in token.scopes})

    def as_dict(self) -> dict:
        return {
            "tenant": self.tenant.slug, "application": self.client_id, "user": self.user_email or None, "unused_days": self.unused_days,
            "count": len(self.tokens), "users": self.users[:SHOWN_USERS], "more_users": max(0, len(self.tokens) - SHOWN_USERS),
            "scopes": self.scopes,
        }

    def words(self) -> str:
        if not self.tokens:
            return f"nothing to revoke: no live grant of {self.client_id} matches"
        more = f" and {len(self.tokens) - SHOWN_USERS} more" if len(self.tokens) > SHOWN_USERS else ""
        return (f"{len(self.tokens)} grant(s) of {self.client_id} would be revoked, of {', '.join(self.users[:SHOWN_USERS])}{more}; "
                f"scopes: {', '.join(self.scopes) or 'none'}")


def may_revoke(user) -> bool:
    return bool(user) and user.has_perm(PERMISSION)


def plan_revocation(*, tenant: Tenant, client_id: str, user_email: str = "", unused_days: int | None = None) -> Plan:
    """The live grants of one application (of one user, or unused for so many days) that a
    revocation would revoke. Bad input: ValidationError keyed by field."""
    provider = provider_class(tenant.provider)
    if not provider.revocable:
        raise ValidationError({"tenant": f"{tenant.slug} ({tenant.provider}): {provider.not_revocable}"})
    application = Application.objects.filter(tenant=tenant, client_id=client_id).first()
    if application is None:
        raise ValidationError({"app": f"{tenant.slug} has no application {client_id!r} (a sync lists what it finds)"})
    tokens = Token.objects.filter(tenant=tenant, application=application, revoked_at__isnull=True)
    if user_email:
        user = DirectoryUser.objects.filter(tenant=tenant, primary_email__iexact=user_email, deleted_at__isnull=True).first()
        if user is None:
            raise ValidationError({"user": f"{tenant.slug} has no user {user_email!r}"})
        tokens = tokens.filter(user=user)
    if unused_days is not None:
        if not isinstance(unused_days, int) or unused_days < 1:
            raise ValidationError({"unused_days": "a whole number of days, 1 or more"})
        tokens = tokens.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=timezone.now() - timedelta(days=unused_days)))
    return Plan(tenant, client_id, user_email, unused_days, list(tokens.select_related("user").order_by("user__primary_email")))


def request_revocation(plan: Plan, *, requested_by: str) -> Revocation:
    """Record the request with the grants the plan names, as they stand now; it waits for approval."""
    if not plan.tokens:
        raise ValidationError({"app": plan.words()})
    key = provider_class(plan.tenant.provider).revocation_key
    with transaction.atomic():
        revocation = Revocation.objects.create(
            tenant=plan.tenant, client_id=plan.client_id, user_email=plan.user_email, unused_days=plan.unused_days, requested_by=requested_by,
        )
        RevocationItem.objects.bulk_create(
            RevocationItem(revocation=revocation, token=token, user_key=key(token.user.primary_email, token.user.external_id), scopes=token.scopes)
            for token in plan.tokens
        )
    return revocation


def _unfinished():
    """Approved revocations whose run ended with grants still pending (the run was stopped, or its
    process died): those a new run carries on."""
    return Revocation.objects.filter(
        state__in=[Revocation.State.APPROVED, Revocation.State.INCOMPLETE], items__outcome=RevocationItem.Outcome.PENDING,
    ).exclude(run__status__in=[Status.QUEUED, Status.RUNNING])


def unfinished_revocation(plan: Plan) -> Revocation | None:
    """An unfinished revocation of the same grants: asking again carries it on rather than asking anew."""
    return _unfinished().filter(
        tenant=plan.tenant, client_id=plan.client_id, user_email=plan.user_email, unused_days=plan.unused_days,
    ).order_by("-pk").first()


def _start(revocation: Revocation, *, enqueue: bool, **recorded) -> SyncRun:
    """Queue (or, without enqueue, only record) the run that revokes the revocation's pending
    grants; `recorded`: more of the revocation's fields, saved with it."""
    with transaction.atomic():
        run = start_revocation_run(tenant=revocation.tenant, enqueue=enqueue)
        for name, value in {"run": run, "state": Revocation.State.APPROVED, **recorded}.items():
            setattr(revocation, name, value)
        revocation.save(update_fields=["run", "state", *recorded])
    return run


def resume_revocation(revocation: Revocation, *, resumed_by: str, enqueue: bool = True) -> SyncRun:
    """Carry on an unfinished revocation: a new run takes the pending grants. A grant whose answer
    was lost with its batch is asked again and found gone."""
    if not _unfinished().filter(pk=revocation.pk).exists():
        still = f"; its run {revocation.run_id} is still {revocation.run.status}" if revocation.run and revocation.run.status in (Status.QUEUED, Status.RUNNING) else ""
        raise ValidationError({"state": f"revocation {revocation.pk} is {revocation.get_state_display()}, with nothing left to carry on{still}"})
    run = _start(revocation, enqueue=enqueue)
    log.info("revocation %s carried on by %s in run %s", revocation.pk, resumed_by, run.pk)
    return run


def approve_revocation(revocation: Revocation, *, approved_by: str, enqueue: bool = True) -> SyncRun:
    """Approve a pending request and queue the run that revokes its grants. With
    REVOCATION_SECOND_APPROVER, the requester may not approve their own request."""
    if revocation.state != Revocation.State.PENDING:
        raise ValidationError({"state": f"revocation {revocation.pk} is {revocation.get_state_display()}, not waiting for approval"})
    if getattr(settings, "BALLAST_REVOCATION_SECOND_APPROVER", False) and approved_by == revocation.requested_by:
        raise PermissionDenied(f"revocation {revocation.pk} needs another person's approval than its requester's ({approved_by})")
    return _start(revocation, enqueue=enqueue, approved_by=approved_by, approved_at=timezone.now())
