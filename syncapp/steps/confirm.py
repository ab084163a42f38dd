"""Confirming what the accidental-delete guard held (syncapp/steps/guard.py): the run's admin
action and `manage.py sync SLUG --confirm-deletes RUN` call confirm_held()."""

import logging

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from ..models import SyncRun, SyncStep, Token, UserAppRelation
from ..risk import refresh_risk
from ..timeline import seen_by, seen_via
from .delta import remove_grants
from .guard import unseen_grants, unseen_tokens, unseen_users

log = logging.getLogger(__name__)


class NothingHeld(ValueError):
    """The run holds no deletions to confirm (none were held, or they were confirmed already)."""


def _deactivate_relations(tenant_id: int) -> int:
    """Relations whose token is no longer active, as the relations step leaves them."""
    active = Token.objects.filter(tenant_id=tenant_id, user_id=OuterRef("user_id"), application_id=OuterRef("application_id"),
                                  revoked_at__isnull=True)
    return UserAppRelation.objects.filter(tenant_id=tenant_id, active=True).exclude(Exists(active)).update(active=False)


def confirm_held(run: SyncRun, *, by: str) -> dict[str, int]:
    """Apply what the run's steps held: step name → rows marked. Raises NothingHeld."""
    steps = list(run.step_records.filter(held__gt=0, held_confirmed_at__isnull=True))
    if not steps:
        raise NothingHeld(f"run {run.pk} holds no deletions to confirm")
    tenant_id, now, done = run.tenant_id, timezone.now(), {}
    for step in steps:
        since = step.seen_since or step.started_at
        with transaction.atomic(), seen_by(run.pk, seen_via(step)):
            if step.name == "users":
                marked = unseen_users(tenant_id, since).update(deleted_at=now)
            elif step.name == "tokens":
                marked = unseen_tokens(tenant_id, since).update(revoked_at=now)
                unseen_grants(tenant_id, since).delete()
            else:  # a changes step's whole re-read of Graph's grants
                ids = list(unseen_grants(tenant_id, since).values_list("grant_id", flat=True))
                marked = remove_grants(tenant_id, ids, now).deactivated
            if step.name != "users":  # revoked tokens: their relations go inactive, as the relations step leaves them
                _deactivate_relations(tenant_id)
            SyncStep.objects.filter(pk=step.pk).update(deactivated=step.deactivated + marked, held_confirmed_at=now, held_confirmed_by=by[:150])
        done[step.name] = marked
        log.info("%s: %s confirmed the held %s: %d marked", run, by, step.name, marked)
    refresh_risk(tenant_id)
    return done
