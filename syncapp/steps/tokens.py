"""The tokens step: tokens.list for every user, as many calls in flight as the governor allows,
written in batches as the answers arrive; then the tokens not seen in a whole read are marked
revoked."""

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ..models import Application, DirectoryUser, Token
from ..providers import Page, Provider, ProviderError
from ..records import TOKEN_SOURCES, InvalidRecord, parse_token, parse_user
from ..timeline import seen_by
from ..writers import Outcome, inserted, upsert_rows
from .changes import start_feed_at
from .context import StepContext, Tally
from .guard import guarded, unseen_tokens

log = logging.getLogger(__name__)


def user_ids(tenant_id: int, users: list[tuple[str, str]]) -> dict[str, int]:
    """Map a page's users to row ids, creating placeholder rows for those the users step
    (running in parallel) has not stored yet. Most are stored already (always, on a second
    sync): one lookup finds them, and only the others are inserted."""
    def lookup(keys: list[str]) -> dict[str, int]:
        return dict(DirectoryUser.objects.filter(tenant_id=tenant_id, external_id__in=keys).values_list("external_id", "pk"))

    ids = lookup([uid for uid, _ in users])
    missing = [(uid, email) for uid, email in users if uid not in ids]
    if missing:
        now = timezone.now()
        DirectoryUser.objects.bulk_create(
            [DirectoryUser(tenant_id=tenant_id, external_id=uid, primary_email=email, first_seen=now) for uid, email in missing],
            ignore_conflicts=True,
        )
        inserted(DirectoryUser, len(missing))
        ids.update(lookup([uid for uid, _ in missing]))
    return ids


APP_FIELDS = ("display_name", "native_app")
TOKEN_FIELDS = ("scopes", "anonymous", "native_app")


def write_tokens(tenant_id: int, grants: list[tuple[int, dict]], app_ids: dict[str, int],
                 fields: tuple[str, ...] = tuple(TOKEN_SOURCES)) -> Callable[[datetime], Outcome]:
    """grants: (user row id, grant). app_ids holds the applications this step already wrote;
    each is upserted once per step. `fields`: the stored fields the source gives (a file without
    a column gives no value for it: what is stored stays)."""
    app_fields = tuple(f for f in APP_FIELDS if f in fields)
    token_fields = tuple(f for f in TOKEN_FIELDS if f in fields)

    def write(now: datetime) -> Outcome:
        new_apps = {g["client_id"]: g for _, g in grants if g["client_id"] not in app_ids}
        if new_apps:
            upsert_rows(
                Application,
                tenant_id=tenant_id,
                rows=[{"client_id": c, **{f: g[f] for f in app_fields}} for c, g in new_apps.items()],
                key=("client_id",),
                compare=app_fields,
                now=now,
            )
            # Only after the batch commits may these ids be trusted by later batches.
            found = dict(Application.objects.filter(tenant_id=tenant_id, client_id__in=new_apps).values_list("client_id", "pk"))
            transaction.on_commit(lambda: app_ids.update(found))
        else:
            found = {}
        rows = [
            {
                "user_id": user_id,
                "application_id": app_ids.get(g["client_id"]) or found[g["client_id"]],
                **{f: g[f] for f in token_fields},
                "revoked_at": None,
            }
            for user_id, g in grants
        ]
        return upsert_rows(
            Token,
            tenant_id=tenant_id,
            rows=rows,
            key=("user_id", "application_id"),
            compare=(*token_fields, "revoked_at"),
            now=now,
        )

    return write


@dataclass(frozen=True)
class PageOpened:
    """A page of users was read: its users' answers follow."""

    page: Page
    users: list


@dataclass(frozen=True)
class TokensAnswered:
    """One user's tokens.list answered: the items, or the error that stood for them."""

    user_key: str
    items: list[dict] | None
    error: str | None


def _fetch_tokens(provider: Provider, user_key: str) -> TokensAnswered:
    try:
        return TokensAnswered(user_key, provider.user_tokens(user_key), None)
    except ProviderError as exc:
        return TokensAnswered(user_key, None, str(exc))


def _merge_grants(tally: Tally, user_key: str, items: list) -> list[tuple[str, dict]]:
    """Validate one user's tokens; the same app listed twice becomes one grant with the scopes united."""
    merged: dict[str, dict] = {}
    for raw in items:
        tally.received += 1
        try:
            grant = parse_token(raw)
        except InvalidRecord as exc:
            tally.note_invalid(exc)
            continue
        if grant["client_id"] in merged:
            grant["scopes"] = sorted(set(grant["scopes"]) | set(merged[grant["client_id"]]["scopes"]))
        merged[grant["client_id"]] = grant
    return [(user_key, grant) for grant in merged.values()]


def _page_users(page: Page) -> list[tuple[str, str]]:
    """(id, email) of a page's valid users; the invalid ones are counted by the users step."""
    users = []
    for raw in page.records:
        try:
            user = parse_user(raw)
        except InvalidRecord:
            continue
        users.append((user["external_id"], user["primary_email"]))
    return users


RESULTS_QUEUED = 256  # answers waiting for the batch writer before the issuer stops asking for more


def _tokens_as_they_arrive(ctx: StepContext, callers: int) -> Iterator[PageOpened | TokensAnswered]:
    """Read the user pages and call tokens.list for their users, with as many calls in flight as
    the governor allows at each moment, across page boundaries (a slow call at the end of one
    page never idles the next). Yields a PageOpened before the answers for that page's users,
    then a TokensAnswered for each as it comes.

    Pages and calls are issued from a thread of their own, so committing a batch never leaves the
    provider idle (under a quota, every idle moment is throughput lost for good); `callers`
    threads make the calls and hand their answers straight to a bounded queue, so a writer held
    by the governor holds the calls too. (No futures: waiting on a set of them cost a pass over
    every call in flight for each answer.)
    """
    results: queue.Queue = queue.Queue(maxsize=RESULTS_QUEUED * ctx.batch_scale)
    calls: queue.SimpleQueue = queue.SimpleQueue()  # users to call tokens.list for; None: stop
    ended: queue.SimpleQueue = queue.SimpleQueue()  # one item per call that ended
    stop = threading.Event()
    done = object()

    def put(item) -> None:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def call() -> None:
        while (user_key := calls.get()) is not None:
            try:
                if not stop.is_set():  # once stopped, what is left is not called
                    put(_fetch_tokens(ctx.provider, user_key))
            except BaseException as exc:  # handed to the consumer, never lost
                put(exc)
            finally:
                ended.put(None)

    def issue() -> None:
        pages = iter(ctx.provider.user_pages(ctx.resume.get("page_token")))  # a stopped page is read again
        waiting: deque[str] = deque()
        in_flight, more = 0, True
        try:
            while not stop.is_set():
                room = ctx.governor.calls_under_way()
                if more and len(waiting) < room:  # less than a round left: read the next page now
                    page = next(pages, None)
                    if page is None:
                        more = False
                    else:
                        users = _page_users(page)
                        put(PageOpened(page, users))
                        waiting.extend(uid for uid, _ in users)
                    continue
                while in_flight < room and waiting:
                    calls.put(waiting.popleft())
                    in_flight += 1
                if not in_flight:
                    break
                ended.get()  # one call ended (its answer is queued already)
                in_flight -= 1
        except BaseException as exc:  # handed to the consumer, never lost
            put(exc)
        finally:
            put(done)

    threads = [threading.Thread(target=call, name=f"tokens-{n}", daemon=True) for n in range(callers)]
    threads.append(threading.Thread(target=issue, name="tokens-issuer", daemon=True))
    for thread in threads:
        thread.start()
    try:
        while (item := results.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        for _ in range(callers):
            calls.put(None)
        for thread in threads:
            thread.join()


@dataclass
class _PageWork:
    token: str | None
    user_ids: dict[str, int]
    left: int  # users whose tokens are not answered yet
    unwritten: int = 0  # grants read but not committed yet

    @property
    def finished(self) -> bool:
        return self.left == 0 and self.unwritten == 0


class _OpenPages:
    """Pages whose users' tokens are being read, oldest first. The checkpoint is the oldest page
    not fully written: everything before it is committed, so a resumed step reads from there."""

    def __init__(self, token: str | None):
        self.pages: deque[_PageWork] = deque()
        self.by_user: dict[str, deque[_PageWork]] = {}  # a user listed twice is called twice
        self.last_token = self.next_token = token

    def opened(self, page: Page, users: list[tuple[str, str]], user_ids: dict[str, int]) -> None:
        work = _PageWork(page.token, user_ids, left=len(users))
        self.pages.append(work)
        for user_key, _ in users:
            self.by_user.setdefault(user_key, deque()).append(work)
        self.last_token, self.next_token = page.token, page.next_token

    def answered(self, user_key: str) -> _PageWork:
        works = self.by_user[user_key]
        work = works.popleft()
        if not works:
            del self.by_user[user_key]
        work.left -= 1
        return work

    def checkpoint(self) -> dict:
        while self.pages and self.pages[0].finished:
            self.pages.popleft()
        if self.pages:
            return {"page_token": self.pages[0].token}
        return {"page_token": self.next_token or self.last_token}


def sync_tokens(ctx: StepContext) -> None:
    tally, tenant_id, governor = ctx.tally, ctx.tenant.pk, ctx.governor
    app_ids: dict[str, int] = {}
    pages = _OpenPages(ctx.resume.get("page_token"))
    pending: list[tuple[_PageWork, int, dict]] = []
    ctx.expect_users()  # one call per user

    def flush(at_least: int) -> None:
        nonlocal pending
        while pending and len(pending) >= at_least:
            size = ctx.next_batch_size()
            batch, pending = pending[:size], pending[size:]
            for work, _, _ in batch:
                work.unwritten -= 1
            write = write_tokens(tenant_id, [(user_id, grant) for _, user_id, grant in batch], app_ids)
            ctx.commit(write, len(batch), pages.checkpoint())

    calls = governor.policy.io_max_concurrency
    for item in _tokens_as_they_arrive(ctx, callers=calls + max(4, calls // 4)):
        if isinstance(item, PageOpened):
            pages.opened(item.page, item.users, user_ids(tenant_id, item.users))
            continue
        user_key, items, error = item.user_key, item.items, item.error
        work = pages.answered(user_key)
        tally.done += 1
        if error is not None:
            tally.failed += 1
            tally.read_whole_source = False
            log.warning("%s tokens of user %s not read: %s", ctx.label(), user_key, error)
            continue
        for _, grant in _merge_grants(tally, user_key, items):
            pending.append((work, work.user_ids[user_key], grant))
            work.unwritten += 1
        if len(pending) >= (ready := governor.batch_size * ctx.batch_scale):
            flush(ready)
    flush(1)
    revoke_unseen(ctx)
    start_feed_at(ctx)


def revoke_unseen(ctx: StepContext) -> bool:
    """After a whole read of a whole directory: the tokens it did not list are revoked, unless
    the guard holds them. Whether they were (or none were to be)."""
    if not (ctx.tally.read_whole_source and ctx.provider.whole_directory):
        return False
    unseen = unseen_tokens(ctx.tenant.pk, ctx.seen_since)
    total = Token.objects.filter(tenant_id=ctx.tenant.pk, revoked_at__isnull=True).count()

    def revoke() -> int:
        with transaction.atomic(), seen_by(ctx.step.run_id, ctx.via):
            return unseen.update(revoked_at=timezone.now())

    revoked = guarded(ctx, "tokens' revocations", unseen.count(), total, revoke)
    ctx.tally.deactivated = revoked or 0
    return revoked is not None
