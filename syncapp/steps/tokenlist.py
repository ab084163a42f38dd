"""The tokens step for a source that lists every token at once (Microsoft's permission grants, a
token export) instead of answering for one user at a time.

One user's grants to one application may stand anywhere in such a list (Graph lists a grant per
resource), and a token is written once per run with all its scopes, or its counts would not be
exact. So the step reads the whole list into a stage first (StagedToken, committed page by page
with the checkpoint), then walks the stage in (user, application) order, unites each token's
scopes and writes it as the per-user tokens step does; then, after a whole read, revokes the
tokens the list no longer holds. Memory holds one batch, whatever the list's size.
"""

from collections.abc import Callable, Iterator
from datetime import datetime

from django.db.models import Q

from ..directory import users_by_key
from ..exportfiles import GAM_COMMANDS
from ..models import Application, DirectoryUser, StagedToken, Status, SyncStep, Tenant
from ..providers import IncompleteExport
from ..records import TOKEN_SOURCES, InvalidRecord, parse_listed_token, stored_fields
from ..writers import Outcome, append_rows, upsert_rows
from .changes import start_feed_at
from .context import StepContext
from .delta import forget_unseen_grants, grant_rows, remember_grants
from .tokens import revoke_unseen, user_ids, write_tokens

STAGED_FIELDS = ("user_key", "email", "client_id", "display_name", "native_app", "anonymous", "scopes")


def _stage(tenant_id: int, stage: int, rows: list[dict], grants: list[dict]) -> Callable[[datetime], Outcome]:
    def write(now: datetime) -> Outcome:
        # (The writer keeps the stage's statistics up to date as it grows: without them, each
        # batch of the walk sorted the rest of the stage, with them it reads an index range.)
        append_rows(StagedToken, [{"tenant_id": tenant_id, "stage": stage, "pair": _pair(row["user_key"], row["client_id"]), **row} for row in rows])
        if grants:
            remember_grants(tenant_id, grants, now)
        return Outcome()  # nothing is in the directory yet: the writes are counted when they are

    return write


def _read(ctx: StepContext, stage: int) -> str | None:
    """The whole list into the stage; the checkpoint is the page and the records of it staged.
    Returns the list's delta link, if it ends with one."""
    tenant_id = ctx.tenant.pk
    skip, delta_link = ctx.resume.get("done_in_page", 0), None
    for page in ctx.provider.token_pages(ctx.resume.get("page_token")):
        rows, _ = ctx.validated(page, skip, parse_listed_token)
        skip = 0
        for batch in ctx.batches(rows):
            checkpoint = {"stage": stage, "phase": "read", "page_token": page.token, "done_in_page": batch[-1][0]}
            grants = [g for position, row in batch for g in grant_rows(page.records[position - 1], row)]
            ctx.commit(_stage(tenant_id, stage, [row for _, row in batch], grants), len(batch), checkpoint)
        delta_link = page.delta_link
    return delta_link


def _united(rows: list[dict]) -> Iterator[dict]:
    """Rows in pair order → one record per (user_key, client_id), scopes united (the last row's
    name and flags: a list names an application the same way throughout)."""
    record = None
    for row in rows:
        if record is not None and row["pair"] == record["pair"]:
            record = {**row, "scopes": sorted(set(record["scopes"]) | set(row["scopes"])), "email": row["email"] or record["email"]}
            continue
        if record is not None:
            yield record
        record = row
    if record is not None:
        yield record


PAIR_SEPARATOR = "\x1f"  # the unit separator: in no user key or client id (they are checked text)


def _pair(user_key: str, client_id: str) -> str:
    return f"{user_key}{PAIR_SEPARATOR}{client_id}"


def _staged_batches(ctx: StepContext, stage: int, after: str | None) -> Iterator[tuple[list[dict], int]]:
    """The stage in (user_key, client_id) order after the pair `after`, as lists of united records
    (with the staged rows they unite), each pair whole: a batch ends before its last pair, which
    the next batch starts with (a pair with more rows than a batch is read whole on its own)."""
    staged = StagedToken.objects.filter(stage=stage).order_by("pair", "id")
    while True:
        rest = staged if after is None else staged.filter(pair__gt=after)
        size = ctx.next_batch_size()
        rows = list(rest.values("pair", *STAGED_FIELDS)[: size + 1])
        if not rows:
            return
        last = rows[-1]["pair"]
        if len(rows) > size:  # the last pair may go on past this read
            rows = [r for r in rows if r["pair"] != last] or list(rest.filter(pair=last).values("pair", *STAGED_FIELDS))
        records = list(_united(rows))
        yield records, len(rows)
        after = records[-1]["pair"]


def _resolve_users(ctx: StepContext, records: list[dict]) -> dict[str, int]:
    """user_key → the user's row id (syncapp.directory.users_by_key), else a placeholder made by
    id, to be filled in by the users step. An email that matches nobody cannot make one (the
    row's key is the id) and is counted invalid by the caller."""
    keys = {r["user_key"]: r["email"] for r in records}
    ids = users_by_key(ctx.tenant.pk, keys)
    placeholders = [(k, email) for k, email in keys.items() if k not in ids and "@" not in k]
    if placeholders:
        ids.update(user_ids(ctx.tenant.pk, placeholders))
    return ids


def _write_batch(tenant_id: int, consents: list[dict], grants: list[tuple[int, dict]], app_ids: dict[str, int],
                 fields: tuple[str, ...]) -> Callable[[datetime], Outcome]:
    """A batch of the stage: applications an administrator consented to for everyone (their
    org-wide scopes: not tokens, so not counted), then the tokens."""
    tokens = write_tokens(tenant_id, grants, app_ids, fields) if grants else None

    def write(now: datetime) -> Outcome:
        if consents:
            upsert_rows(
                Application, tenant_id=tenant_id,
                rows=[{"client_id": c["client_id"], "display_name": c["display_name"], "org_scopes": c["scopes"]} for c in consents],
                key=("client_id",), compare=("display_name", "org_scopes"), now=now,
            )
        return tokens(now) if tokens else Outcome()

    return write


def _write(ctx: StepContext, stage: int, delta_link: str | None) -> None:
    """The stage into the directory, a batch of (user, application) pairs at a time."""
    tally, tenant_id = ctx.tally, ctx.tenant.pk
    app_ids: dict[str, int] = {}
    after = ctx.resume.get("after") if ctx.resume.get("phase") == "write" else None
    staged = StagedToken.objects.filter(stage=stage)
    fields = stored_fields(TOKEN_SOURCES, ctx.provider.given_fields("tokens"))
    # Progress: the records read, then the staged rows written.
    ctx.expect(tally.done + (staged if after is None else staged.filter(pair__gt=after)).count())
    for records, rows in _staged_batches(ctx, stage, after):
        tally.done += rows
        consents = [r for r in records if not r["user_key"]]
        grants = [r for r in records if r["user_key"] and r["client_id"]]  # not a user's line that says "no tokens"
        ids = _resolve_users(ctx, grants)
        known = []
        for grant in grants:
            if grant["user_key"] in ids:
                known.append((ids[grant["user_key"]], grant))
            else:
                tally.note_invalid(InvalidRecord(f"user {grant['user_key']} is not in the directory, and a token without the user's id cannot add it", grant["client_id"]))
        checkpoint = {"stage": stage, "phase": "write", "after": records[-1]["pair"], "delta_link": delta_link}
        ctx.commit(_write_batch(tenant_id, consents, known, app_ids, fields), len(records), checkpoint)


EXAMPLES = 5  # users named in a refusal


def _check_covered(ctx: StepContext, stage: int) -> None:
    """Before a whole list revokes what it lacks: a source that may leave users out (GAM's `all
    users` leaves out the suspended) must name at least one of the suspended users who hold
    tokens, or all of their tokens would be revoked, and put back by the next sync from the
    provider. Raises IncompleteExport naming them; nothing is written."""
    if not (ctx.provider.may_leave_out_users and ctx.provider.whole_directory and ctx.tally.read_whole_source):
        return
    keys = StagedToken.objects.filter(stage=stage).exclude(user_key="")
    holders = DirectoryUser.objects.filter(
        tenant_id=ctx.tenant.pk, deleted_at__isnull=True, is_suspended=True,
        pk__in=ctx.tenant.tokens.filter(revoked_at__isnull=True).values("user_id"),
    )
    named = Q(external_id__in=keys.values("user_key")) | Q(primary_email__in=keys.values("user_key")) | Q(primary_email__in=keys.values("email"))
    if holders.filter(named).exists():
        return
    missing = list(holders.order_by("primary_email").values_list("primary_email", flat=True)[: EXAMPLES + 1])
    if not missing:
        return
    count = holders.count()
    shown = ", ".join(missing[:EXAMPLES]) + (", …" if count > EXAMPLES else "")
    raise IncompleteExport(
        f"the tokens file lists none of the {count:,} suspended user{'s' if count != 1 else ''} who hold tokens ({shown}), "
        f"so as a whole export (--complete) it would revoke all their tokens: `gam all users print tokens` leaves suspended users out; "
        f"write it with `{GAM_COMMANDS['tokens']}`, or import it without --complete. Nothing was written."
    )


def sync_token_list(ctx: StepContext) -> None:
    tenant_id = ctx.tenant.pk
    stage = ctx.resume.get("stage", ctx.step.pk)
    # What an abandoned read left (a step that stopped and was not resumed) goes; a read under way
    # in another run of the tenant keeps its stage.
    running = SyncStep.objects.filter(run__tenant_id=tenant_id, name="tokens", status=Status.RUNNING).values_list("pk", "checkpoint")
    in_use = {stage} | {checkpoint.get("stage", pk) for pk, checkpoint in running}
    StagedToken.objects.filter(tenant_id=tenant_id).exclude(stage__in=in_use).delete()
    ctx.expect(None)  # a list does not say its length before it is read (then: see _write)
    if ctx.resume.get("phase") != "write":
        delta_link = _read(ctx, stage)
        _check_covered(ctx, stage)
    else:
        delta_link = ctx.resume.get("delta_link")
    _write(ctx, stage, delta_link)
    revoked = revoke_unseen(ctx)
    if revoked:
        # Consents the list no longer holds were withdrawn.
        consented = StagedToken.objects.filter(stage=stage, user_key="").values("client_id")
        Application.objects.filter(tenant_id=tenant_id).exclude(client_id__in=consented).update(org_scopes=[])
        if ctx.provider.tracks_deltas:
            forget_unseen_grants(ctx)
            if delta_link:
                Tenant.objects.filter(pk=tenant_id).update(grants_delta_link=delta_link)
            start_feed_at(ctx)
    StagedToken.objects.filter(stage=stage).delete()
