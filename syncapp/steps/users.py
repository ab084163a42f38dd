"""The users step: users.list pages → validated users → batches → upserts; then the users not
seen in a whole read are marked deleted."""

from collections.abc import Callable
from datetime import datetime

from django.utils import timezone

from ..models import DirectoryUser, Tenant
from ..records import USER_SOURCES, parse_user, stored_fields
from ..writers import Outcome, upsert_rows
from .context import StepContext
from .guard import guarded, unseen_users


def write_users(tenant_id: int, rows: list[dict], fields: tuple[str, ...]) -> Callable[[datetime], Outcome]:
    """Upsert the users' `fields` (the ones the source gives; the others keep what is stored)."""
    def write(now: datetime) -> Outcome:
        return upsert_rows(
            DirectoryUser,
            tenant_id=tenant_id,
            rows=[{"external_id": row["external_id"], **{f: row[f] for f in fields}, "deleted_at": None} for row in rows],
            key=("external_id",),
            compare=(*fields, "deleted_at"),
            now=now,
            new_if_null="last_seen",  # a row the tokens step made first is new to the directory
        )

    return write


def keep_seen(tenant_id: int, keys: list[str | None]) -> None:
    """A record that is malformed today still exists: keep its row from being marked deleted."""
    DirectoryUser.objects.filter(tenant_id=tenant_id, external_id__in=[k for k in keys if k]).update(last_seen=timezone.now())


def mark_unseen_deleted(ctx: StepContext) -> int:
    """After a whole read of the users: those it did not see are marked deleted, unless the guard
    holds them; how many were marked."""
    unseen = unseen_users(ctx.tenant.pk, ctx.seen_since)
    total = DirectoryUser.objects.filter(tenant_id=ctx.tenant.pk, deleted_at__isnull=True).count()
    return guarded(ctx, "users' deletions", unseen.count(), total, lambda: unseen.update(deleted_at=timezone.now())) or 0


def sync_users(ctx: StepContext) -> None:
    tally, tenant_id = ctx.tally, ctx.tenant.pk
    skip = ctx.resume.get("done_in_page", 0)  # records of the first page a stopped step already wrote
    fields = stored_fields(USER_SOURCES, ctx.provider.given_fields("users"))
    ctx.expect_users()
    delta_link = None
    for page in ctx.provider.user_pages(ctx.resume.get("page_token")):
        delta_link = page.delta_link
        rows, invalid_keys = ctx.validated(page, skip, parse_user)
        skip = 0
        for batch in ctx.batches(rows):
            checkpoint = {"page_token": page.token, "done_in_page": batch[-1][0]}
            ctx.commit(write_users(tenant_id, [row for _, row in batch], fields), len(batch), checkpoint)
        keep_seen(tenant_id, invalid_keys)
    if tally.read_whole_source and ctx.provider.whole_directory:
        tally.deactivated = mark_unseen_deleted(ctx)
        if delta_link:  # where the changes step reads users' changes from (Microsoft Graph)
            Tenant.objects.filter(pk=tenant_id).update(users_delta_link=delta_link)
