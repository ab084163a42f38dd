"""The relations step: a user↔application relation for every active token, read from the
database in keyset pages; then the relations no active token holds are marked inactive."""

from collections.abc import Callable
from datetime import datetime

from ..models import Token, UserAppRelation
from ..writers import Outcome, upsert_rows
from .context import StepContext


def _write_relations(tenant_id: int, tokens: list[tuple]) -> Callable[[datetime], Outcome]:
    """A token is unique per user and application, so each relation is one token's: its scopes
    (sorted and without repeats since the tokens step stored them) are the relation's."""

    def write(now: datetime) -> Outcome:
        rows = [{"user_id": u, "application_id": a, "scopes": scopes, "active": True} for _, u, a, scopes in tokens]
        return upsert_rows(
            UserAppRelation,
            tenant_id=tenant_id,
            rows=rows,
            key=("user_id", "application_id"),
            compare=("scopes", "active"),
            now=now,
        )

    return write


def sync_relations(ctx: StepContext) -> None:
    """Relations come from the active tokens, read in keyset pages (never the whole table at once)."""
    tally, tenant_id, last_pk = ctx.tally, ctx.tenant.pk, ctx.resume.get("last_token_pk", 0)
    while True:
        size = ctx.next_batch_size()
        tokens = list(
            Token.objects.filter(tenant_id=tenant_id, revoked_at__isnull=True, pk__gt=last_pk)
            .order_by("pk")
            .values_list("pk", "user_id", "application_id", "scopes")[:size]
        )
        if not tokens:
            break
        tally.received += len(tokens)
        last_pk = tokens[-1][0]
        ctx.commit(_write_relations(tenant_id, tokens), len(tokens), {"last_token_pk": last_pk})
    if tally.read_whole_source:
        tally.deactivated = UserAppRelation.objects.filter(
            tenant_id=tenant_id, active=True, last_seen__lt=ctx.seen_since
        ).update(active=False)
