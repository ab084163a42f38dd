"""What every step shares: its context (tenant, provider, governor, counters, checkpoint) and
how a batch commits: its writes, counters and checkpoint in one transaction."""

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from functools import cached_property

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from monitoring.governor.policy import Ewma
from monitoring.governor.route import Governor
from monitoring.ledger.allocations import beat_holder
from monitoring.ledger.processes import stop_request

from ..database_retry import with_retries
from ..governance import step_label
from ..models import COUNTERS, DirectoryUser, Status, SyncStep, Tenant
from ..providers import Page, Provider
from ..records import InvalidRecord
from ..timeline import seen_by, seen_via
from ..writers import Outcome, writer

log = logging.getLogger(__name__)


# Rows per governor batch-size unit: COPY's per-statement cost is small next to its per-row cost.
BATCH_SCALE = {"copy": 10, "orm": 1}
RECENT_RATE_TAU_S = 3.0  # what "lately" means for a step's rate, and so its ETA


class RecentRate:
    """Work done per second lately: an exponential average over about RECENT_RATE_TAU_S, each
    batch's rate weighed by the time it took (monitoring.governor.policy.Ewma)."""

    def __init__(self, now: float, done: int):
        self.average = Ewma(RECENT_RATE_TAU_S)
        self._at, self._done = now, done

    def add(self, now: float, done: int) -> float | None:
        elapsed = now - self._at
        if elapsed > 0:
            self.average.add((done - self._done) / elapsed, elapsed)
            self._at, self._done = now, done
        return self.average.value


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
    done: int = 0  # work units, for progress (see SyncStep.done)
    invalid_samples: list = field(default_factory=list)
    # False once a call or a batch failed: then nothing may be marked deleted.
    read_whole_source: bool = True
    held: int = 0  # deletions or revocations the accidental-delete guard held (steps/guard.py)
    held_what: list = field(default_factory=list)  # what they are, in words

    def note_invalid(self, exc: InvalidRecord, where: str | None = None) -> None:
        """Count an invalid record; keep a sample (its key, and where it stands in a file)."""
        self.invalid += 1
        if len(self.invalid_samples) < getattr(settings, "BALLAST_INVALID_SAMPLES", 5):
            self.invalid_samples.append({"key": exc.key, "reason": f"{where}: {exc.reason}" if where else exc.reason})

    def add(self, outcome: Outcome) -> None:
        for f in fields(Outcome):
            setattr(self, f.name, getattr(self, f.name) + getattr(outcome, f.name))

    def as_fields(self) -> dict:
        return {name: getattr(self, name) for name in (*COUNTERS, "done", "invalid_samples", "held")}


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
    holder_id: int | None = None  # this process's hold on the run's slot, beaten with each batch

    def __post_init__(self):
        self.seen_since = self.seen_since or self.started_at
        # Rows per governor batch-size unit for this database's writer (fixed for the step).
        self.batch_scale = BATCH_SCALE[writer().kind]
        self.recent: RecentRate | None = None  # from the first batch, on the governor's clock

    def label(self) -> str:
        return step_label(self.step)

    @cached_property
    def via(self) -> str:
        """How the grant timeline names this step's way of seeing changes."""
        return seen_via(self.step)

    def expect(self, work: int | None) -> None:
        """Record how much work the step expects (None: unknown), for its progress bar and ETA."""
        SyncStep.objects.filter(pk=self.step.pk).update(expected=work)

    def expect_users(self) -> None:
        """The source's own count of users when it gives one, else the users earlier syncs stored."""
        told = self.provider.user_count()
        if told is None:
            told = DirectoryUser.objects.filter(tenant_id=self.tenant.pk, deleted_at__isnull=True).count() or None
        self.expect(told)

    def validated(self, page: Page, skip: int, parse: Callable[[dict], dict]) -> tuple[list[tuple[int, dict]], list[str | None]]:
        """A page's records after the first `skip` (a stopped step wrote those), each counted read
        and done and parsed: (position in the page, fields) of the valid ones, and the keys of the
        invalid ones, counted with a sample saying where they stand."""
        rows, invalid_keys = [], []
        for position, raw in enumerate(page.records[skip:], start=skip + 1):
            self.tally.received += 1
            self.tally.done += 1
            try:
                rows.append((position, parse(raw)))
            except InvalidRecord as exc:
                self.tally.note_invalid(exc, page.where(position - 1))
                invalid_keys.append(exc.key)
        return rows, invalid_keys

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
        now = self.governor.clock()
        if self.recent is None:
            self.recent = RecentRate(self.governor.started_at, 0)
        recent_rate = self.recent.add(now, self.tally.done)

        def attempt() -> Outcome:
            with transaction.atomic(), seen_by(self.step.run_id, self.via):
                outcome = write(timezone.now())
                after = replace(self.tally)
                after.add(outcome)
                # The checkpoint is saved only while the run still runs: one statement for both.
                saved = SyncStep.objects.filter(pk=self.step.pk, run__status=Status.RUNNING).update(
                    checkpoint=checkpoint, recent_rate=recent_rate, **after.as_fields()
                )
                if not saved:  # cancelled or interrupted meanwhile: this batch is rolled back, unsaved
                    raise StepCancelled
                if self.holder_id is not None:
                    beat_holder(self.holder_id)
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
