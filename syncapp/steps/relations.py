"""The relations step: a user↔application relation for every active token, read from the
database in keyset pages; then the relations no active token holds are marked inactive."""

from collections.abc import Callable
from datetime import datetime

from django.db.models import QuerySet, Value

from ..models import Token, UserAppRelation
from ..writers import Outcome, upsert_query
from .context import StepContext


def _write_relations(tenant_id: int, tokens: QuerySet) -> Callable[[datetime], Outcome]:
    """A token is unique per user and application, so each relation is one token's: its scopes
    (sorted and without repeats since the tokens step stored them) are the relation's."""

    def write(now: datetime) -> Outcome:
        return upsert_query(
            UserAppRelation,
            tenant_id=tenant_id,
            source=tokens.annotate(active=Value(True)),
            key=("user_id", "application_id"),
            compare=("scopes", "active"),
            now=now,
        )

    return write


def sync_relations(ctx: StepContext) -> None:
    """Relations come from the active tokens, walked by primary key (keyset) a batch at a time:
    the batch's last key is read first, then its tokens are written as relations by one query
    (on PostgreSQL they never leave the database)."""
    tally, tenant_id, last_pk = ctx.tally, ctx.tenant.pk, ctx.resume.get("last_token_pk", 0)
    active = Token.objects.filter(tenant_id=tenant_id, revoked_at__isnull=True)
    ctx.expect(active.filter(pk__gt=last_pk).count())
    while True:
        size = ctx.next_batch_size()
        keys = list(active.filter(pk__gt=last_pk).order_by("pk").values_list("pk", flat=True)[:size])
        if not keys:
            break
        tally.received += len(keys)
        tally.done += len(keys)
        batch = active.filter(pk__gt=last_pk, pk__lte=keys[-1])
        ctx.commit(_write_relations(tenant_id, batch), len(keys), {"last_token_pk": keys[-1]})
        last_pk = keys[-1]
    if tally.read_whole_source:
        tally.deactivated = UserAppRelation.objects.filter(
            tenant_id=tenant_id, active=True, last_seen__lt=ctx.seen_since
        ).update(active=False)
