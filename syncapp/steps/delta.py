"""The changes step for a provider with delta queries (Microsoft Graph): the users and delegated
permission grants that changed since the tenant's delta links, applied to users, tokens,
applications and relations, without reading the whole directory.

A delta query answers with state, not events: a new or changed grant whole, a removed one by
its id. A user's token for an app is the union of that user's grants to it (one per API), so
every grant is kept (DelegatedGrant, written by the full tokens step and here) and each token a
page touches is united again from them: applying a page twice leaves what applying it once did,
so a resumed step that reads a page again changes nothing. Each part's delta link moves only
after its whole round is applied. A link Graph no longer knows (410 Gone) is read again from
the whole state, and what that state lacks is removed, as a full sync would.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import chain

from django.db.models import Q

from ..models import Application, DelegatedGrant, DirectoryUser, Tenant, Token, UserAppRelation
from ..providers import DeltaExpired, Page
from ..records import USER_SOURCES, InvalidRecord, parse_listed_token, parse_user
from ..writers import Outcome, upsert_rows
from .changes import NoCursor
from .context import StepContext
from .tokens import user_ids
from .guard import guarded, unseen_grants
from .users import keep_seen, mark_unseen_deleted, write_users

log = logging.getLogger(__name__)

GRANT_FIELDS = ("user_key", "client_id", "client_object_id", "app_name", "resource_object_id", "resource", "scopes")
REMOVED = "@removed"


# --- the grants kept (also written by the full tokens step: see tokenlist.py) -----------------

def grant_rows(raw, row: dict) -> list[dict]:
    """The grants a listed token record carries (Microsoft's "grants"), as DelegatedGrant rows of
    the parsed record `row`. A grant without a usable id cannot be kept, and is left out."""
    grants = raw.get("grants") if isinstance(raw, dict) else None
    rows = []
    for grant in grants if isinstance(grants, list) else []:
        ident = grant.get("id") if isinstance(grant, dict) else None
        scopes = grant.get("scopes") if isinstance(grant, dict) else None
        if isinstance(ident, str) and 0 < len(ident) <= 255 and isinstance(scopes, list) and all(isinstance(s, str) for s in scopes):
            rows.append({"grant_id": ident, "user_key": row["user_key"], "client_id": row["client_id"],
                         "client_object_id": str(grant.get("clientObjectId") or "")[:255], "app_name": row["display_name"],
                         "resource_object_id": str(grant.get("resourceObjectId") or "")[:255],
                         "resource": str(grant.get("resource") or "")[:255], "scopes": sorted(set(scopes))})
    return rows


def remember_grants(tenant_id: int, rows: list[dict], now: datetime) -> Outcome:
    return upsert_rows(DelegatedGrant, tenant_id=tenant_id, rows=rows, key=("grant_id",), compare=GRANT_FIELDS, now=now)


def forget_unseen_grants(ctx: StepContext) -> None:
    """After a full tokens step's whole read of the grants: those it did not see are gone (the
    step revokes their tokens itself)."""
    unseen_grants(ctx.tenant.pk, ctx.seen_since).delete()


# --- reading a round -------------------------------------------------------------------------

def _round(ctx: StepContext, part: str, fetch: Callable[[str | None, str | None], Iterator[Page]], link: str) -> tuple[Iterator[Page], bool]:
    """The pages of `part`'s changes since `link` (from the checkpoint's page when the step
    resumes), and whether they are the whole state instead: Graph no longer knew the link."""
    resumed = ctx.resume.get("page") if ctx.resume.get("part") == part else None
    try:
        pages, whole = fetch(link, resumed), False
        first = next(pages, None)  # the first call is the one that finds the link unknown
    except DeltaExpired as exc:
        log.warning("%s %s: %s", ctx.label(), part, exc)
        pages, whole = fetch(None, None), True
        first = next(pages, None)
    return chain([first] if first else [], pages), whole


# --- users -----------------------------------------------------------------------------------

def _given(record: dict) -> tuple[str, ...]:
    """The stored fields a (partial) users record gives: a changed user comes with what changed."""
    return tuple(stored for stored, source in USER_SOURCES.items() if source.split(".")[0] in record)


def _write_user_changes(tenant_id: int, removed: list[str], groups: dict[tuple, list[dict]]) -> Callable[[datetime], Outcome]:
    def write(now: datetime) -> Outcome:
        outcome = Outcome(deactivated=DirectoryUser.objects.filter(tenant_id=tenant_id, external_id__in=removed, deleted_at__isnull=True)
                          .update(deleted_at=now)) if removed else Outcome()
        for fields, rows in groups.items():
            outcome += write_users(tenant_id, rows, fields)(now)
        return outcome

    return write


def _users(ctx: StepContext, link: str) -> str | None:
    """Apply the users' changes; returns the next delta link (None: the round did not end)."""
    tally, tenant_id = ctx.tally, ctx.tenant.pk
    pages, whole = _round(ctx, "users", ctx.provider.user_changes, link)
    next_link = None
    for page in pages:
        records = page.records
        keys = [r.get("id") for r in records if isinstance(r, dict) and isinstance(r.get("id"), str)]
        stored = dict(DirectoryUser.objects.filter(tenant_id=tenant_id, external_id__in=keys).values_list("external_id", "primary_email"))
        removed, groups, invalid_keys = [], defaultdict(list), []
        for record in records:
            tally.received += 1
            tally.done += 1
            if isinstance(record, dict) and REMOVED in record and isinstance(record.get("id"), str):
                removed.append(record["id"])
                continue
            try:
                if not isinstance(record, dict):
                    raise InvalidRecord("a user is not an object")
                # A changed user's email is its stored one unless the change says otherwise.
                known = {"primaryEmail": stored[record["id"]]} if record.get("id") in stored else {}
                row = parse_user({**known, **record})
            except InvalidRecord as exc:
                tally.note_invalid(exc)
                invalid_keys.append(exc.key)
                continue
            groups[_given(record)].append(row)
        if records:
            ctx.commit(_write_user_changes(tenant_id, removed, groups), len(records), {"part": "users", "page": page.token})
        if whole:
            keep_seen(tenant_id, invalid_keys)
        next_link = page.delta_link
    if whole and next_link and tally.read_whole_source:  # what the whole state lacks is gone, as after a full users step
        tally.deactivated += mark_unseen_deleted(ctx)
    return next_link


# --- grants ----------------------------------------------------------------------------------

def _applications(ctx: StepContext, grants: list[dict], known: dict[str, tuple[str, str]]) -> None:
    """Fill `known` (service principal object id → (client id, name)) for the apps and APIs these
    grants name: from the grants kept, else from Graph (apps new to the tenant, 15 a call)."""
    wanted = {g.get(f) for g in grants for f in ("clientId", "resourceId") if isinstance(g.get(f), str)} - known.keys()
    if not wanted:
        return
    kept = DelegatedGrant.objects.filter(tenant_id=ctx.tenant.pk)
    for obj, client, name in kept.filter(client_object_id__in=wanted).values_list("client_object_id", "client_id", "app_name").distinct():
        known[obj] = (client, name)
    for obj, name in kept.filter(resource_object_id__in=wanted - known.keys()).values_list("resource_object_id", "resource").distinct():
        known[obj] = (None, name)
    if wanted - known.keys():
        known |= ctx.provider.service_principals(sorted(wanted - known.keys()))


def _reunite(tenant_id: int, pairs: set[tuple[str, str]], now: datetime) -> Outcome:
    """Each (user_key, client id) token, or ("", client id) admin consent, as its kept grants
    make it: their scopes united; a token none holds any more is revoked. A few set-based
    statements for the whole page, whatever the number of tokens it touches."""
    united, names = defaultdict(set), {}
    kept = DelegatedGrant.objects.filter(tenant_id=tenant_id, client_id__in={c for _, c in pairs}, user_key__in={u for u, _ in pairs})
    for user_key, client_id, name, scopes in kept.values_list("user_key", "client_id", "app_name", "scopes"):
        if (user_key, client_id) in pairs:
            united[(user_key, client_id)].update(scopes)
            names[client_id] = name
    apps = _application_ids(tenant_id, {c for _, c in pairs}, names, now)
    for client_id in {c for u, c in pairs if not u}:  # admin consents: the applications' org-wide scopes, no token
        Application.objects.filter(pk=apps[client_id]).update(org_scopes=sorted(united[("", client_id)]), last_seen=now)
    tokens = sorted((u, c) for u, c in pairs if u)
    if not tokens:
        return Outcome()
    users = user_ids(tenant_id, sorted({(u, "") for u, _ in tokens}))
    wanted = {(users[u], apps[c]): sorted(united[(u, c)]) for u, c in tokens}
    return _put_tokens(tenant_id, wanted, now)


def _application_ids(tenant_id: int, clients: set[str], names: dict[str, str], now: datetime) -> dict[str, int]:
    def stored() -> dict[str, int]:
        return dict(Application.objects.filter(tenant_id=tenant_id, client_id__in=clients).values_list("client_id", "pk"))

    apps = stored()
    if clients - apps.keys():
        Application.objects.bulk_create([Application(tenant_id=tenant_id, client_id=c, display_name=names.get(c, ""), first_seen=now, last_seen=now)
                                         for c in clients - apps.keys()], ignore_conflicts=True)
        apps = stored()
    return apps


def _put_tokens(tenant_id: int, wanted: dict[tuple[int, int], list[str]], now: datetime) -> Outcome:
    """(user id, app id) → the scopes the token holds now ([]: none, revoked); tokens and their
    relations written so, each counted once (created, updated, unchanged or deactivated)."""
    users, apps = {u for u, _ in wanted}, {a for _, a in wanted}
    tokens = {(t.user_id, t.application_id): t for t in Token.objects.filter(tenant_id=tenant_id, user_id__in=users, application_id__in=apps)
              if (t.user_id, t.application_id) in wanted}
    relations = {(r.user_id, r.application_id): r for r in UserAppRelation.objects.filter(
        tenant_id=tenant_id, user_id__in=users, application_id__in=apps) if (r.user_id, r.application_id) in wanted}
    outcome, new_tokens, changed_tokens, new_relations, changed_relations = Outcome(), [], [], [], []
    for (user_id, app_id), scopes in wanted.items():
        token, relation = tokens.get((user_id, app_id)), relations.get((user_id, app_id))
        if not scopes:
            if token is not None and token.revoked_at is None:
                token.revoked_at = now
                changed_tokens.append(token)
                outcome.deactivated += 1
                if relation is not None:
                    relation.active = False
                    changed_relations.append(relation)
            else:
                outcome.unchanged += 1  # never held, or revoked already
            continue
        if token is None:
            new_tokens.append(Token(tenant_id=tenant_id, user_id=user_id, application_id=app_id, scopes=scopes, first_seen=now, last_seen=now))
            outcome.created += 1
        else:
            if token.scopes != scopes or token.revoked_at is not None:
                outcome.updated += 1
            else:
                outcome.unchanged += 1
            token.scopes, token.revoked_at, token.last_seen = scopes, None, now
            changed_tokens.append(token)
        if relation is None:
            new_relations.append(UserAppRelation(tenant_id=tenant_id, user_id=user_id, application_id=app_id, scopes=scopes, active=True,
                                                 first_seen=now, last_seen=now))
        else:
            relation.scopes, relation.active, relation.last_seen = scopes, True, now
            changed_relations.append(relation)
    Token.objects.bulk_create(new_tokens)
    Token.objects.bulk_update(changed_tokens, ["scopes", "revoked_at", "last_seen"])
    UserAppRelation.objects.bulk_create(new_relations)
    UserAppRelation.objects.bulk_update(changed_relations, ["scopes", "active", "last_seen"])
    return outcome


def remove_grants(tenant_id: int, removed: list[str], now: datetime, rows: list[dict] = ()) -> Outcome:
    """Grants removed (by id) and changed (rows), and the tokens they belong to united again."""
    touched = DelegatedGrant.objects.filter(tenant_id=tenant_id, grant_id__in=list(removed) + [r["grant_id"] for r in rows])
    pairs = set(touched.values_list("user_key", "client_id")) | {(r["user_key"], r["client_id"]) for r in rows}
    DelegatedGrant.objects.filter(tenant_id=tenant_id, grant_id__in=removed).delete()
    if rows:
        remember_grants(tenant_id, list(rows), now)
    return _reunite(tenant_id, pairs, now)


def _write_grant_changes(tenant_id: int, removed: list[str], rows: list[dict]) -> Callable[[datetime], Outcome]:
    return lambda now: remove_grants(tenant_id, removed, now, rows)


def _forget_unseen(ctx: StepContext) -> None:
    """After the whole state was read: the grants it lacks are removed, their tokens united
    again, unless the guard holds them (a grants list that came back short)."""
    unseen = unseen_grants(ctx.tenant.pk, ctx.seen_since)
    total = DelegatedGrant.objects.filter(tenant_id=ctx.tenant.pk).count()

    def forget() -> int:
        ids = list(unseen.values_list("grant_id", flat=True))
        for start in range(0, len(ids), 1000):
            ctx.commit(_write_grant_changes(ctx.tenant.pk, ids[start : start + 1000], []), len(ids[start : start + 1000]), {"part": "grants"})
        return len(ids)

    guarded(ctx, "grants' removals", unseen.count(), total, forget)


def _grants(ctx: StepContext, link: str) -> str | None:
    tally, tenant_id = ctx.tally, ctx.tenant.pk
    pages, whole = _round(ctx, "grants", ctx.provider.grant_changes, link)
    known: dict[str, tuple[str, str]] = {}
    next_link = None
    for page in pages:
        removed = [g["id"] for g in page.records if isinstance(g, dict) and REMOVED in g and isinstance(g.get("id"), str)]
        changed = [g for g in page.records if not (isinstance(g, dict) and REMOVED in g)]
        tally.received += len(removed)
        tally.done += len(removed)
        _applications(ctx, [g for g in changed if isinstance(g, dict)], known)
        rows = []
        for record in ctx.provider.listed_grants(changed, known):
            tally.received += 1
            tally.done += 1
            try:
                rows += grant_rows(record, parse_listed_token(record))
            except InvalidRecord as exc:
                tally.note_invalid(exc)
        if page.records:
            ctx.commit(_write_grant_changes(tenant_id, removed, rows), len(page.records), {"part": "grants", "page": page.token})
        next_link = page.delta_link
    if whole and next_link and tally.read_whole_source:
        _forget_unseen(ctx)
    return next_link


# --- the step --------------------------------------------------------------------------------

def sync_delta(ctx: StepContext) -> None:
    tenant_id = ctx.tenant.pk
    links = Tenant.objects.values_list("users_delta_link", "grants_delta_link").get(pk=tenant_id)
    if not all(links):
        raise NoCursor("no delta links yet: a full sync must complete first (its users and tokens steps set where the changes start)")
    ctx.expect(None)  # a delta round does not say its length before it is read
    if ctx.resume.get("part", "users") == "users":
        users_link = _users(ctx, links[0])
        if users_link and ctx.tally.read_whole_source:
            Tenant.objects.filter(pk=tenant_id).update(users_delta_link=users_link)
    grants_link = _grants(ctx, links[1])
    if grants_link and ctx.tally.read_whole_source:
        Tenant.objects.filter(pk=tenant_id).update(grants_delta_link=grants_link)
        # The cursor says how fresh the tenant's changes are (its lag, its schedule), never back.
        Tenant.objects.filter(pk=tenant_id).filter(Q(changes_cursor__isnull=True) | Q(changes_cursor__lt=ctx.started_at)).update(
            changes_cursor=ctx.started_at)
