"""The three sync steps: pages → validated records → batches → upserts.

Each batch commits in its own transaction together with the step's counters and
checkpoint. Deletion detection runs only after a step read the whole source
without a failed call or batch, and only marks rows (deleted, revoked,
inactive): nothing is ever hard-deleted.
"""

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from monitoring import metrics
from monitoring.events import DatabaseRecorder
from monitoring.governor import Governor, GovernorStop
from monitoring.ledger import drop, hold, watch
from monitoring.models import Allocation
from monitoring.process import stop_request, working
from monitoring.quotas import limits_for
from monitoring.sampler import get_sampler

from .database import DatabaseLost, fresh_connection, with_retries
from .models import COUNTERS, Application, DirectoryUser, Status, StopReason, SyncRun, SyncStep, Tenant, Token, UserAppRelation
from .providers import ConfigError, Page, PageTokenRefused, Provider, ProviderError, get_provider
from .records import InvalidRecord, parse_token, parse_user
from .runs import run_owner, run_policy, stop_run
from .secrets import scrub
from .writers import Outcome, upsert_rows, writer

log = logging.getLogger(__name__)


# Rows per governor batch-size unit: COPY's per-statement cost is small next to its per-row cost.
BATCH_SCALE = {"copy": 10, "orm": 1}


class StepCancelled(Exception):
    """The run was cancelled or interrupted; the step stops after its last committed batch."""


class StepStopped(Exception):
    """This process was asked to stop (a signal, a lost supervisor); the step stops after its last committed batch."""


@dataclass
class Tally:
    received: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0
    invalid: int = 0
    failed: int = 0
    invalid_samples: list = field(default_factory=list)
    # False once a call or a batch failed: then nothing may be marked deleted.
    read_whole_source: bool = True

    def note_invalid(self, exc: InvalidRecord) -> None:
        self.invalid += 1
        if len(self.invalid_samples) < getattr(settings, "BALLAST_INVALID_SAMPLES", 5):
            self.invalid_samples.append({"key": exc.key, "reason": exc.reason})

    def add(self, outcome: Outcome) -> None:
        for f in fields(Outcome):
            setattr(self, f.name, getattr(self, f.name) + getattr(outcome, f.name))

    def as_fields(self) -> dict:
        return {name: getattr(self, name) for name in (*COUNTERS, "invalid_samples")}


@dataclass
class StepContext:
    step: SyncStep
    tenant: Tenant
    provider: Provider | None
    started_at: datetime
    governor: Governor | None  # made once the step is claimed
    tally: Tally = field(default_factory=Tally)
    resume: dict = field(default_factory=dict)  # the checkpoint this step continues from
    seen_since: datetime | None = None  # rows stamped since then were seen by this read

    def __post_init__(self):
        self.seen_since = self.seen_since or self.started_at
        # Rows per governor batch-size unit for this database's writer (fixed for the step).
        self.batch_scale = BATCH_SCALE[writer().kind]

    def label(self) -> str:
        return step_label(self.step)

    def next_batch_size(self) -> int:
        """As many rows as the governor allows now (it may wait first), scaled for the writer:
        a COPY batch costs little more than a small one, so it carries many more rows."""
        return self.governor.before_batch().batch_size * self.batch_scale

    def batches(self, items: list) -> Iterator[list]:
        """Split items into batches as large as the governor allows now; it may wait before each."""
        start = 0
        while start < len(items):
            size = self.next_batch_size()
            yield items[start : start + size]
            start += size

    def commit(self, write: Callable[[datetime], Outcome], size: int, checkpoint: dict) -> None:
        """Run one batch's writes, counters and checkpoint in one transaction. A batch the database
        refuses is counted as failed, not fatal; one it fails on for a passing reason (a lost
        connection, a deadlock) is tried again on a fresh connection before the step gives up."""
        if stop_request().is_set():
            raise StepStopped
        checkpoint = {**checkpoint, "at": timezone.now().isoformat(), "resumes": self.resume.get("resumes", -1) + 1 if self.resume else 0}
        rss_before = self.governor.read().rss_bytes

        def attempt() -> Outcome:
            with transaction.atomic():
                outcome = write(timezone.now())
                after = replace(self.tally)
                after.add(outcome)
                # The checkpoint is saved only while the run still runs: one statement for both.
                saved = SyncStep.objects.filter(pk=self.step.pk, run__status=Status.RUNNING).update(
                    checkpoint=checkpoint, **after.as_fields()
                )
                if not saved:  # cancelled or interrupted meanwhile: this batch is rolled back, unsaved
                    raise StepCancelled
            return outcome

        try:
            outcome = with_retries(attempt, what=f"{self.label()} batch of {size}", log=log)
        except DatabaseError as exc:  # not a passing one (those end as DatabaseLost)
            self.tally.failed += size
            self.tally.read_whole_source = False
            log.warning("%s batch of %d failed: %s", self.label(), size, exc)
            return
        self.tally.add(outcome)
        self.governor.after_batch(size, rss_before)


def step_label(step: SyncStep) -> str:
    return f"[{step.name} run {step.run_id}]"


def governor_for(step: SyncStep, tenant: Tenant) -> Governor:
    """The step's governor: its route's policy for the run's profile and the tenant's overrides."""
    policy = run_policy(step.run, step.name)
    quota = limits_for(tenant.pk)  # the tenant's share caps whatever the profile allows
    caps = {}
    if quota.max_concurrency:
        caps["max_concurrency"] = min(policy.max_concurrency, quota.max_concurrency)
        caps["io_max_concurrency"] = min(policy.io_max_concurrency, quota.max_concurrency)
    if quota.max_memory_mb:
        caps["rss_limit_mb"] = min(policy.rss_limit_mb or quota.max_memory_mb, quota.max_memory_mb)
    return Governor(
        policy.with_overrides(**caps),
        read=get_sampler().latest,
        recorder=DatabaseRecorder(
            owner=run_owner(step.run_id), route=step.name, label=step_label(step),
            context={"run": step.run_id, "step": step.name, "tenant": tenant.slug},
        ),
        io_bound=step.name == "tokens",
        calls_per_second=quota.provider_calls_per_second,
    )


# --- users ------------------------------------------------------------------

USER_FIELDS = ("primary_email", "full_name", "is_admin", "is_suspended", "org_unit", "last_login_at", "created_at_source", "deleted_at")


def _write_users(tenant_id: int, rows: list[dict]) -> Callable[[datetime], Outcome]:
    def write(now: datetime) -> Outcome:
        return upsert_rows(
            DirectoryUser,
            tenant_id=tenant_id,
            rows=[{**row, "deleted_at": None} for row in rows],
            key=("external_id",),
            compare=USER_FIELDS,
            now=now,
            new_if_null="last_seen",  # a row the tokens step made first is new to the directory
        )

    return write


def sync_users(ctx: StepContext) -> None:
    tally, tenant_id = ctx.tally, ctx.tenant.pk
    skip = ctx.resume.get("done_in_page", 0)  # records of the first page a stopped step already wrote
    for page in ctx.provider.user_pages(ctx.resume.get("page_token")):
        rows, invalid_keys = [], []
        for position, raw in enumerate(page.records[skip:], start=skip + 1):
            tally.received += 1
            try:
                rows.append((position, parse_user(raw)))
            except InvalidRecord as exc:
                tally.note_invalid(exc)
                invalid_keys.append(exc.key)
        skip = 0
        for batch in ctx.batches(rows):
            checkpoint = {"page_token": page.token, "done_in_page": batch[-1][0]}
            ctx.commit(_write_users(tenant_id, [row for _, row in batch]), len(batch), checkpoint)
        # A record that is malformed today still exists: keep its row from being marked deleted.
        DirectoryUser.objects.filter(tenant_id=tenant_id, external_id__in=[k for k in invalid_keys if k]).update(
            last_seen=timezone.now()
        )
    if tally.read_whole_source:
        tally.deactivated = (
            DirectoryUser.objects.filter(tenant_id=tenant_id, deleted_at__isnull=True)
            .filter(Q(last_seen__lt=ctx.seen_since) | Q(last_seen__isnull=True))
            .update(deleted_at=timezone.now())
        )


# --- tokens -----------------------------------------------------------------


def _user_ids(tenant_id: int, users: list[tuple[str, str]]) -> dict[str, int]:
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
        ids.update(lookup([uid for uid, _ in missing]))
    return ids


def _write_tokens(tenant_id: int, grants: list[tuple[int, dict]], app_ids: dict[str, int]) -> Callable[[datetime], Outcome]:
    """grants: (user row id, grant). app_ids holds the applications this step already wrote;
    each is upserted once per step."""

    def write(now: datetime) -> Outcome:
        new_apps = {g["client_id"]: g for _, g in grants if g["client_id"] not in app_ids}
        if new_apps:
            upsert_rows(
                Application,
                tenant_id=tenant_id,
                rows=[{"client_id": c, "display_name": g["display_name"], "native_app": g["native_app"]} for c, g in new_apps.items()],
                key=("client_id",),
                compare=("display_name", "native_app"),
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
                "scopes": g["scopes"],
                "anonymous": g["anonymous"],
                "native_app": g["native_app"],
                "revoked_at": None,
            }
            for user_id, g in grants
        ]
        return upsert_rows(
            Token,
            tenant_id=tenant_id,
            rows=rows,
            key=("user_id", "application_id"),
            compare=("scopes", "anonymous", "native_app", "revoked_at"),
            now=now,
        )

    return write


def _fetch_tokens(provider: Provider, user_key: str) -> tuple[str, list[dict] | None, str | None]:
    try:
        return user_key, provider.user_tokens(user_key), None
    except ProviderError as exc:
        return user_key, None, str(exc)


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


def _tokens_as_they_arrive(ctx: StepContext, pool: ThreadPoolExecutor) -> Iterator[tuple]:
    """Read the user pages and call tokens.list for their users, with as many calls in flight as
    the governor allows at each moment, across page boundaries (a slow call at the end of one
    page never idles the next). Yields ("page", page, users) before the answers for that page's
    users, then (user_key, items, error) as they come.

    Pages and calls are issued from a thread of their own, so committing a batch never leaves the
    provider idle (under a quota, every idle moment is throughput lost for good); the answers
    wait in a bounded queue, so a writer held by the governor holds the calls too.
    """
    results: queue.Queue = queue.Queue(maxsize=RESULTS_QUEUED)
    stop = threading.Event()
    done = object()

    def put(item) -> None:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def issue() -> None:
        pages = iter(ctx.provider.user_pages(ctx.resume.get("page_token")))  # a stopped page is read again
        waiting: deque[str] = deque()
        running: set = set()
        more = True
        try:
            while not stop.is_set():
                room = ctx.governor.calls_under_way()
                if more and len(waiting) < room:  # less than a round left: read the next page now
                    page = next(pages, None)
                    if page is None:
                        more = False
                    else:
                        users = _page_users(page)
                        put(("page", page, users))
                        waiting.extend(uid for uid, _ in users)
                    continue
                while len(running) < room and waiting:
                    running.add(pool.submit(_fetch_tokens, ctx.provider, waiting.popleft()))
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    put(future.result())
        except BaseException as exc:  # handed to the consumer, never lost
            put(exc)
        finally:
            put(done)

    issuer = threading.Thread(target=issue, name="tokens-issuer", daemon=True)
    issuer.start()
    try:
        while (item := results.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        issuer.join()


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

    def flush(at_least: int) -> None:
        nonlocal pending
        while pending and len(pending) >= at_least:
            size = ctx.next_batch_size()
            batch, pending = pending[:size], pending[size:]
            for work, _, _ in batch:
                work.unwritten -= 1
            write = _write_tokens(tenant_id, [(user_id, grant) for _, user_id, grant in batch], app_ids)
            ctx.commit(write, len(batch), pages.checkpoint())

    calls = governor.policy.io_max_concurrency
    with ThreadPoolExecutor(max_workers=calls + max(4, calls // 4), thread_name_prefix="tokens") as pool:
        for item in _tokens_as_they_arrive(ctx, pool):
            if item[0] == "page":
                _, page, users = item
                pages.opened(page, users, _user_ids(tenant_id, users))
                continue
            user_key, items, error = item
            work = pages.answered(user_key)
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
    if tally.read_whole_source:
        tally.deactivated = Token.objects.filter(
            tenant_id=tenant_id, revoked_at__isnull=True, last_seen__lt=ctx.seen_since
        ).update(revoked_at=timezone.now())


# --- relations --------------------------------------------------------------


def _write_relations(tenant_id: int, tokens: list[tuple]) -> Callable[[datetime], Outcome]:
    def write(now: datetime) -> Outcome:
        scopes: dict[tuple[int, int], set] = {}
        for _, user_id, app_id, token_scopes in tokens:
            scopes.setdefault((user_id, app_id), set()).update(token_scopes)
        rows = [
            {"user_id": u, "application_id": a, "scopes": sorted(s), "active": True} for (u, a), s in scopes.items()
        ]
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


STEPS: dict[str, Callable[[StepContext], None]] = {
    "users": sync_users,
    "tokens": sync_tokens,
    "relations": sync_relations,
}


MAX_RESUMES = 3  # a checkpoint that keeps failing is dropped for a full read
# Google's page tokens live about three days: an older checkpoint cannot resume its read.
PAGE_TOKEN_MAX_AGE = timedelta(hours=60)


def _resume_point(step: SyncStep) -> SyncStep | None:
    """The tenant's last step of this name, if it stopped part-way with a checkpoint to continue from."""
    previous = (
        SyncStep.objects.filter(run__tenant_id=step.run.tenant_id, name=step.name, run_id__lt=step.run_id)
        .exclude(status__in=[Status.PENDING, Status.QUEUED, Status.RUNNING, Status.SKIPPED])
        .order_by("-run_id")
        .first()
    )
    stopped = (Status.FAILED, Status.INTERRUPTED, Status.CANCELLED)
    if not (previous and previous.status in stopped and previous.checkpoint and previous.checkpoint.get("resumes", 0) < MAX_RESUMES):
        return None
    written = previous.checkpoint.get("at")
    written = datetime.fromisoformat(written) if written else previous.finished_at or previous.started_at
    if previous.checkpoint.get("page_token") and written and timezone.now() - written > PAGE_TOKEN_MAX_AGE:
        log.info("%s run %s's checkpoint is from %s: its page token has expired; reading from the start",
                 step_label(step), previous.run_id, written.isoformat(timespec="seconds"))
        return None
    return previous


def _resource_fields(governor: Governor | None) -> dict:
    if governor is None:
        return {}
    stats = governor.stats
    return {
        "peak_rss_bytes": stats.peak_rss_bytes,
        "mean_cpu_percent": round(stats.mean_cpu_percent, 1),
        "peak_cpu_percent": round(stats.peak_cpu_percent, 1),
        "governor_wait_s": round(governor.waits.seconds(), 3),
    }


def _claim(step_id: int, started_at: datetime):
    """queued → running, with this process recorded as the step's holder of its run's slot, in one
    transaction: from its first moment, a running step has a process that others can see die.
    Returns the holder, or None when the step is not this process's to run."""
    step = SyncStep.objects.only("run_id", "name").get(pk=step_id)
    with transaction.atomic():
        slot = Allocation.objects.filter(owner=run_owner(step.run_id), resource="run_slot", state="granted").first()
        if slot is None:  # delivered twice, cancelled while queued, or the run lost its slot
            return None
        claimed = SyncStep.objects.filter(pk=step_id, status=Status.QUEUED, run__status=Status.RUNNING).update(
            status=Status.RUNNING, started_at=started_at
        )
        return hold(slot, step.name) if claimed else None


def _resume(ctx: StepContext) -> None:
    """Continue from where the tenant's last such step stopped, if it left a checkpoint."""
    step = ctx.step
    previous = _resume_point(step)
    if previous is not None:
        ctx.resume, ctx.seen_since = previous.checkpoint, previous.seen_since or previous.started_at
        log.info("%s resumes run %s's %s step from %s", ctx.label(), previous.run_id, step.name, previous.checkpoint)
    SyncStep.objects.filter(pk=step.pk).update(resumed_from=previous, seen_since=ctx.seen_since, checkpoint={**ctx.resume})


def _run_step(ctx: StepContext) -> tuple[str, str, str]:
    """Carry the step out; return its (status, stop reason, error)."""
    tenant, step = ctx.tenant, ctx.step
    try:
        try:
            ctx.governor = governor_for(step, tenant)
        except ValueError as exc:  # a bad profile or override: the step fails, saying which
            return Status.FAILED, StopReason.CONFIG, f"governor settings: {exc}"
        _resume(ctx)
        if step.name != "relations":
            ctx.provider = get_provider(tenant)
            ctx.provider.guard = ctx.governor.call
        try:
            STEPS[step.name](ctx)
        except PageTokenRefused as exc:
            if not ctx.resume:
                raise
            log.warning("%s %s: reading from the start", ctx.label(), exc)
            ctx.resume, ctx.seen_since = {}, ctx.started_at
            STEPS[step.name](ctx)
    except StepCancelled:  # the run was cancelled or interrupted: the step ends as the run did
        status, reason = SyncRun.objects.values_list("status", "stop_reason").get(pk=step.run_id)
        return status, reason, ""
    except StepStopped:
        request = stop_request()
        if request.by_person:
            return Status.CANCELLED, StopReason.CANCELLED, request.reason
        return Status.INTERRUPTED, StopReason.SIGNAL, request.reason
    except GovernorStop as exc:
        return Status.FAILED, StopReason.OVERLOADED, str(exc)
    except ConfigError as exc:
        return Status.FAILED, StopReason.CONFIG, scrub(str(exc), tenant.provider_config)
    except ProviderError as exc:
        return Status.FAILED, StopReason.PROVIDER, scrub(str(exc), tenant.provider_config)
    except DatabaseLost as exc:
        return Status.FAILED, StopReason.DATABASE, str(exc)
    except Exception as exc:
        log.exception("%s crashed", ctx.label())
        return Status.FAILED, StopReason.CRASHED, scrub(f"{exc.__class__.__name__}: {exc}", tenant.provider_config)
    finally:
        if ctx.provider is not None:
            ctx.provider.close()
        if ctx.governor is not None:
            ctx.governor.close()
    if ctx.tally.invalid or ctx.tally.failed:
        return Status.COMPLETED_WITH_ERRORS, StopReason.NONE, ""
    return Status.COMPLETED, StopReason.NONE, ""


def execute_step(step_id: int) -> int:
    """Run one queued step to its end and record the outcome; return its run's id."""
    started_at = timezone.now()
    with working():
        holder = _claim(step_id, started_at)
        step = SyncStep.objects.select_related("run__tenant").get(pk=step_id)
        if holder is None:
            return step.run_id
        ctx = StepContext(step=step, tenant=step.run.tenant, provider=None, started_at=started_at, governor=None)
        try:
            _record_end(ctx, *_run_step(ctx))
        except BaseException:
            # The end could not be recorded (the database stayed away): stop beating, so that in
            # three heartbeats others see this step dead and interrupt its run; never "running".
            watch().discard(holder.pk)
            raise
        with_retries(lambda: drop(holder), what=f"{step_label(step)} release", log=log)
    return step.run_id


def _record_end(ctx: StepContext, status: str, reason: str, error: str) -> None:
    """Save how the step ended, on a fresh connection if its own was lost; stop the run with it
    when this process was told to stop."""
    step, tally, label = ctx.step, ctx.tally, ctx.label()

    def save() -> None:
        SyncStep.objects.filter(pk=step.pk).update(
            status=status, stop_reason=reason, finished_at=timezone.now(), error=error[:2000],
            **tally.as_fields(), **_resource_fields(ctx.governor),
        )

    fresh_connection()
    with_retries(save, what=f"{label} end", log=log)
    request = stop_request()
    if reason in (StopReason.SIGNAL, StopReason.CANCELLED) and request.is_set():
        stop_run(step.run_id, request, where=f"{step.name} step")  # the others stop, the slot goes back
    for outcome in COUNTERS:
        metrics.sync_rows.labels(step=step.name, outcome=outcome).inc(getattr(tally, outcome))
    metrics.sync_duration.labels(step=step.name).observe((timezone.now() - ctx.started_at).total_seconds())
    metrics.concurrency.labels(route=step.name).set(0)  # this process no longer works on the route
    log.info(
        "%s %s: %d received, %d created, %d updated, %d unchanged, %d deactivated, %d invalid, %d failed%s",
        label, status, tally.received, tally.created, tally.updated, tally.unchanged,
        tally.deactivated, tally.invalid, tally.failed, f" ({error})" if error else "",
        extra={"run": step.run_id, "step": step.name, "tenant": ctx.tenant.slug},
    )
