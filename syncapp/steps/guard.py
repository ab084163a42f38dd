"""The accidental-delete guard: a whole read that would mark more than DELETE_GUARD_PERCENT of a
tenant's users deleted, or of its tokens revoked (and at least DELETE_GUARD_MIN_ROWS of them),
holds those, completes the rest, and says so on the step and in the log; a person confirms them
(the run's admin action, or `manage.py sync SLUG --confirm-deletes RUN`). A source that answers
short — an export cut off, a grants list Graph truncated — then cannot empty a tenant. The anchor:
Entra Connect's "prevent accidental deletes" (500 objects by default).

What is held is not written down row by row: it is what the step's whole read did not see
(last seen before the read began). Confirming applies exactly that, less whatever a later read
saw again (syncapp/steps/confirm.py)."""

import logging
from collections.abc import Callable

from django.conf import settings
from django.db.models import Q, QuerySet

from ..models import DelegatedGrant, DirectoryUser, Token

log = logging.getLogger(__name__)


def unseen_users(tenant_id: int, since) -> QuerySet:
    return DirectoryUser.objects.filter(tenant_id=tenant_id, deleted_at__isnull=True).filter(Q(last_seen__lt=since) | Q(last_seen__isnull=True))


def unseen_tokens(tenant_id: int, since) -> QuerySet:
    return Token.objects.filter(tenant_id=tenant_id, revoked_at__isnull=True, last_seen__lt=since)


def unseen_grants(tenant_id: int, since) -> QuerySet:
    """Microsoft Graph's grants kept that a whole read since `since` did not see."""
    return DelegatedGrant.objects.filter(tenant_id=tenant_id).filter(Q(last_seen__lt=since) | Q(last_seen__isnull=True))


def too_many(unseen: int, total: int) -> bool:
    """Whether marking `unseen` of `total` rows would pass the guard's threshold."""
    minimum = getattr(settings, "BALLAST_DELETE_GUARD_MIN_ROWS", 50)
    percent = getattr(settings, "BALLAST_DELETE_GUARD_PERCENT", 10.0)
    return unseen >= minimum and unseen * 100 > percent * total


def guarded(ctx, what: str, unseen: int, total: int, apply: Callable[[], int]) -> int | None:
    """apply() (which marks the unseen rows and says how many) unless the guard holds them: then
    they are counted held on the step, said in one log line, and None is returned."""
    if not too_many(unseen, total):
        return apply()
    words = held_words(what, unseen, total)
    ctx.tally.held += unseen
    ctx.tally.held_what.append(words)
    log.warning("%s holds %s: more than DELETE_GUARD_PERCENT=%s%% of them; confirm with `manage.py sync %s --confirm-deletes %d`",
                ctx.label(), words, getattr(settings, "BALLAST_DELETE_GUARD_PERCENT", 10.0), ctx.tenant.slug, ctx.step.run_id)
    return None


def held_words(what: str, unseen: int, total: int) -> str:
    return f"{unseen:,} of {total:,} {what} ({unseen * 100 / max(total, 1):.0f}%)"
