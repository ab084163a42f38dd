"""The changes step: the provider's feed of token grants and revocations since the tenant's
cursor, applied to tokens, applications and relations without calling tokens.list.

The feed is read from the cursor less CHANGES_OVERLAP_S (events arrive late), newest first;
its events are applied oldest first, each once: an event a changes step applied is remembered
(AppliedChange) and skipped when an overlapping read brings it again. A full tokens step that
completed sets the cursor to its start; each changes step moves it to the newest event it read,
never back. Full syncs reconcile whatever the feed missed.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q

from ..directory import users_by_key
from ..models import Application, AppliedChange, Tenant, Token, UserAppRelation
from ..providers import ConfigError
from ..records import InvalidRecord, clipped_text, scope_list, text_field, timestamp
from ..writers import Outcome
from .context import StepContext

APPLIED = ("authorize", "revoke")  # events that change a token
USED = "activity"  # a token used: sets its last use, nothing else (most of a real feed)
# Applied events are forgotten once they are this many overlaps older than where the next read
# starts (the new cursor less one overlap): none can come again by then.
REMEMBER_OVERLAPS = 2
USES_PER_BATCH = 2_000  # (user, app) pairs whose last use is set per read of their tokens


class NoCursor(ConfigError):
    """The tenant has no cursor: no full tokens step completed yet."""


@dataclass(frozen=True)
class Change:
    time: datetime
    qualifier: str
    name: str  # authorize | revoke | activity
    user_id: str | None
    email: str | None
    client_id: str
    app_name: str
    client_type: str  # the feed's kind of client: WEB, NATIVE_ANDROID, NATIVE_IOS, NATIVE_DESKTOP… ("": not said)
    scopes: tuple[str, ...]

    @property
    def user_words(self) -> str:
        return self.email or self.user_id or "?"

    @property
    def native(self) -> bool:
        """An installed application (tokens.list's nativeApp): every NATIVE_ client type, of any platform."""
        return self.client_type.startswith("NATIVE_")


def _list(raw, name: str, key: str | None) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRecord(f"{name} is not a list", key)
    return raw


def parse_activity(item) -> tuple[datetime, list[Change]]:
    """A Reports API token activity → its time, and its authorize, revoke and activity (a use)
    events; others are neither changes nor uses."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), dict):
        raise InvalidRecord("activity without an id")
    ident, actor = item["id"], item.get("actor") if isinstance(item.get("actor"), dict) else {}
    time = timestamp(ident.get("time"), "id.time")
    if time is None:
        raise InvalidRecord("activity without an id.time")
    qualifier = text_field(ident.get("uniqueQualifier"), "id.uniqueQualifier", 64, required=True)
    email = text_field(actor.get("email"), "actor.email", 254) or None
    user_id = text_field(actor.get("profileId"), "actor.profileId", 64, key=email) or None
    changes = []
    for event in _list(item.get("events"), "events", email):
        if not isinstance(event, dict) or event.get("name") not in (*APPLIED, USED):
            continue
        parameters = _list(event.get("parameters"), "parameters", email)
        values = {p.get("name"): p.get("multiValue", p.get("value")) for p in parameters if isinstance(p, dict)}
        client_id = text_field(values.get("client_id"), "client_id", 255, required=True, key=email)
        scopes = scope_list(values.get("scope"), "scope", client_id)
        changes.append(Change(time, qualifier, event["name"], user_id, email, client_id, clipped_text(values.get("app_name"), 255),
                              clipped_text(values.get("client_type"), 40), tuple(sorted(set(scopes)))))
    return time, changes


def _apply(tenant_id: int, change: Change, user_id: int, now: datetime) -> Outcome:
    """One event on the token (created, updated, deactivated or unchanged), its application and
    its relation, leaving them as a full sync would."""
    if change.name == "revoke":
        app_id = Application.objects.filter(tenant_id=tenant_id, client_id=change.client_id).values_list("pk", flat=True).first()
        return _revoke_token(tenant_id, user_id, app_id, change.time) if app_id else Outcome(unchanged=1)
    told = {"display_name": change.app_name} if change.app_name else {}
    if change.client_type:  # an event that says the kind of client says whether it is installed
        told |= {"client_type": change.client_type, "native_app": change.native}
    app, made = Application.objects.get_or_create(
        tenant_id=tenant_id, client_id=change.client_id, defaults={**told, "first_seen": now, "last_seen": now},
    )
    if not made and any(getattr(app, f) != v for f, v in told.items()):
        Application.objects.filter(pk=app.pk).update(**told, last_seen=now)
    native = change.native if change.client_type else app.native_app
    return _grant_token(tenant_id, user_id, app.pk, change.scopes, now, native=native)


def _grant_token(tenant_id: int, user_id: int, app_id: int, scopes, now: datetime, *, native: bool) -> Outcome:
    """The user's token for the app is active with these scopes added to those it held while
    active, and so is their relation; counted created, updated or unchanged."""
    outcome = Outcome()
    token = Token.objects.filter(tenant_id=tenant_id, user_id=user_id, application_id=app_id).first()
    if token is None:
        token = Token.objects.create(tenant_id=tenant_id, user_id=user_id, application_id=app_id, scopes=sorted(set(scopes)),
                                     native_app=native, first_seen=now, last_seen=now)
        outcome.created += 1
    else:
        kept = set(token.scopes) if token.revoked_at is None else set()
        united = sorted(set(scopes) | kept)
        if united != token.scopes or token.revoked_at is not None or token.native_app != native:
            outcome.updated += 1
        else:
            outcome.unchanged += 1
        Token.objects.filter(pk=token.pk).update(scopes=united, native_app=native, revoked_at=None, last_seen=now)
        token.scopes = united
    relation, made = UserAppRelation.objects.get_or_create(
        tenant_id=tenant_id, user_id=user_id, application_id=app_id,
        defaults={"scopes": token.scopes, "active": True, "first_seen": now, "last_seen": now},
    )
    if not made:
        UserAppRelation.objects.filter(pk=relation.pk).update(scopes=token.scopes, active=True, last_seen=now)
    return outcome


def _revoke_token(tenant_id: int, user_id: int, app_id: int, at: datetime) -> Outcome:
    """The user's active token for the app is revoked (at `at`), their relation inactive: tokens
    are one per user and app, so no active token holds it. Counted deactivated, else unchanged."""
    revoked = Token.objects.filter(tenant_id=tenant_id, user_id=user_id, application_id=app_id, revoked_at__isnull=True).update(revoked_at=at)
    if not revoked:
        return Outcome(unchanged=1)  # never seen, or revoked already: nothing to change
    UserAppRelation.objects.filter(tenant_id=tenant_id, user_id=user_id, application_id=app_id).update(active=False)
    return Outcome(deactivated=1)


def _write(tenant_id: int, batch: list[tuple[Change, int]]) -> Callable[[datetime], Outcome]:
    def write(now: datetime) -> Outcome:
        total = sum((_apply(tenant_id, change, user_id, now) for change, user_id in batch), Outcome())
        AppliedChange.objects.bulk_create(
            [AppliedChange(tenant_id=tenant_id, event_time=c.time, unique_qualifier=c.qualifier) for c, _ in batch], ignore_conflicts=True
        )
        return total

    return write


def _note_uses(tenant_id: int, uses: dict[tuple[int, str], datetime]) -> int:
    """(user id, client id) → the latest use the feed told of: each token's last_used_at moves
    forward to it, in one read and one bulk update per batch of tokens, never a row per event.
    The feed's windows overlap: a use read twice moves nothing. Returns the tokens moved."""
    moved = 0
    pairs = list(uses)
    for start in range(0, len(pairs), USES_PER_BATCH):
        batch = pairs[start : start + USES_PER_BATCH]
        tokens = (Token.objects.filter(tenant_id=tenant_id, user_id__in={u for u, _ in batch}, application__client_id__in={c for _, c in batch})
                  .only("pk", "user_id", "last_used_at").annotate(client_id=F("application__client_id")))
        later = []
        for token in tokens:
            used = uses.get((token.user_id, token.client_id))
            if used is not None and (token.last_used_at is None or token.last_used_at < used):
                token.last_used_at = used
                later.append(token)
        with transaction.atomic():
            Token.objects.bulk_update(later, ["last_used_at"], batch_size=500)  # CASE per row: 500 a statement
        moved += len(later)
    return moved


def _read(ctx: StepContext, since: datetime) -> tuple[list[Change], datetime | None]:
    """Every authorize, revoke and activity in the feed since `since`, oldest first, and the
    newest event time read (of any event)."""
    tally, changes, newest = ctx.tally, [], None
    for page in ctx.provider.token_changes(since):
        for item in page.records:
            events = item.get("events") if isinstance(item, dict) else None
            tally.received += len(events) if isinstance(events, list) and events else 1
            try:
                moment, found = parse_activity(item)
            except InvalidRecord as exc:
                tally.note_invalid(exc)
                continue
            changes.extend(found)
            newest = moment if newest is None or moment > newest else newest
    changes.sort(key=lambda c: (c.time, c.qualifier))
    return changes, newest


def sync_changes(ctx: StepContext) -> None:
    tally, tenant_id, provider = ctx.tally, ctx.tenant.pk, ctx.provider
    if not provider.has_changes_feed:
        raise ConfigError(f"the {provider.name} provider has no feed of token changes: full syncs keep its tokens")
    cursor = Tenant.objects.values_list("changes_cursor", flat=True).get(pk=tenant_id)
    if cursor is None:
        raise NoCursor("no changes cursor yet: a full sync must complete first (its tokens step sets where the feed starts)")
    overlap = timedelta(seconds=settings.BALLAST_CHANGES_OVERLAP_S)
    changes, newest = _read(ctx, cursor - overlap)
    applied = set(AppliedChange.objects.filter(tenant_id=tenant_id, event_time__gte=cursor - overlap)
                  .values_list("event_time", "unique_qualifier"))
    users = users_by_key(tenant_id, (key for c in changes for key in (c.user_id, c.email)))
    todo, uses = [], {}
    for change in changes:
        if change.name == USED:  # a use of a token of a user not in the directory tells nothing
            if user_id := users.get(change.user_id) or users.get(change.email):
                uses[(user_id, change.client_id)] = max(change.time, uses.get((user_id, change.client_id), change.time))
            continue
        if (change.time, change.qualifier) in applied:
            tally.unchanged += 1  # applied by an earlier changes step (the windows overlap)
            continue
        user_id = users.get(change.user_id) or users.get(change.email)
        if user_id is None:  # counted by every run that reads it, until the user is in the directory
            tally.note_invalid(InvalidRecord(f"{change.name} by {change.user_words}: not a user of the directory", change.client_id))
            continue
        todo.append((change, user_id))
    ctx.expect(len(todo))
    for batch in ctx.batches(todo):
        tally.done += len(batch)
        ctx.commit(_write(tenant_id, batch), len(batch), {"applied_through": batch[-1][0].time.isoformat()})
    _note_uses(tenant_id, uses)  # after the grants: a token granted and used in one window has its use
    if newest is not None and tally.read_whole_source:  # a failed batch's events are read again next time
        Tenant.objects.filter(pk=tenant_id).filter(Q(changes_cursor__lt=newest)).update(changes_cursor=newest)
    forget_before = (newest or cursor) - REMEMBER_OVERLAPS * overlap - overlap
    AppliedChange.objects.filter(tenant_id=tenant_id, event_time__lt=forget_before).delete()


def start_feed_at(ctx: StepContext) -> None:
    """After a full tokens step read a whole directory with a feed: the feed starts at the step's
    start (the first of a resumed chain's), or stays later if a changes step moved it since."""
    if ctx.tally.read_whole_source and ctx.provider.whole_directory and ctx.provider.has_changes_feed:
        Tenant.objects.filter(pk=ctx.tenant.pk).filter(Q(changes_cursor__isnull=True) | Q(changes_cursor__lt=ctx.seen_since)).update(
            changes_cursor=ctx.seen_since
        )
