"""The revoke step: carries out one approved revocation (syncapp.revocations).

Each grant still pending is revoked at the provider inside the governor's guard: paced,
retried on 429/503 as a sync's calls are, as many at once as the governor allows. A batch's
outcomes are committed together with the tokens they revoke, so the timeline records each
revocation once, as "revoked from Ballast". A run started again after a crash carries on with
the grants still pending. A call whose answer was lost with its batch is made again; the
provider then answers 404 (already gone), which counts as done, so no grant is revoked twice.

Then each user's tokens are listed again: a grant that is still there is marked so, by name.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from ..models import Revocation, RevocationItem, Token
from ..providers import ProviderError, RevocationRefused, Revoked
from ..writers import Outcome
from .context import StepContext

log = logging.getLogger(__name__)
ANSWER_CHARS = 300

Done = RevocationItem.Outcome


def _revoke_one(ctx: StepContext, item: RevocationItem) -> tuple[RevocationItem, str, str]:
    """Revoke one grant: (item, outcome, the provider's answer)."""
    client_id = item.token.application.client_id
    try:
        revoked = ctx.provider.revoke_token(item.user_key, client_id)
    except RevocationRefused:
        raise  # no grant of this revocation can be revoked: the step fails, naming the permission
    except ProviderError as exc:
        return item, Done.FAILED, str(exc)[:ANSWER_CHARS]
    if revoked is Revoked.GONE:
        return item, Done.GONE, "404: the provider no longer had it"
    return item, Done.REVOKED, "revoked"


def _at_once(ctx: StepContext, call, items: list) -> list:
    """call(item) for each item, as many under way as the governor allows now; answers in order."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(items), ctx.governor.calls_under_way()))) as pool:
        return list(pool.map(call, items))


def _write(results: list[tuple[RevocationItem, str, str]]):
    """The batch's outcomes, and its revoked tokens marked so (the timeline's trigger records them)."""

    def write(now: datetime) -> Outcome:
        alike: dict[tuple[str, str], list[int]] = {}  # most of a batch shares its outcome and answer: one UPDATE each
        for item, outcome, answer in results:
            alike.setdefault((outcome, answer), []).append(item.pk)
        for (outcome, answer), pks in alike.items():
            RevocationItem.objects.filter(pk__in=pks).update(outcome=outcome, answer=answer, done_at=now)
        gone = [item.token_id for item, outcome, _ in results if outcome in (Done.REVOKED, Done.GONE)]
        deactivated = Token.objects.filter(pk__in=gone, revoked_at__isnull=True).update(revoked_at=now)
        return Outcome(deactivated=deactivated)

    return write


def revoke_grants(ctx: StepContext) -> None:
    revocation = Revocation.objects.get(run_id=ctx.step.run_id)
    try:
        pending = list(revocation.items.filter(outcome=Done.PENDING).select_related("token__application").order_by("pk"))
        ctx.expect(len(pending))
        for batch in ctx.batches(pending):
            results = _at_once(ctx, lambda item: _revoke_one(ctx, item), batch)
            ctx.tally.received += len(batch)
            ctx.tally.done += len(batch)
            ctx.tally.failed += sum(1 for _, outcome, _ in results if outcome == Done.FAILED)
            ctx.commit(_write(results), len(batch), {"revocation": revocation.pk, "last_item": batch[-1].pk})
        _check_gone(ctx, revocation)
    except RevocationRefused as exc:
        settle(revocation, refused=str(exc))
        raise
    except BaseException:  # stopped, cancelled or crashed: what is left stays pending, for the next run of it
        settle(revocation)
        raise
    settle(revocation)


def _check_gone(ctx: StepContext, revocation: Revocation) -> None:
    """Ask the provider again for each grant revoked (or found gone): one still there is said so."""
    done = list(revocation.items.filter(outcome__in=[Done.REVOKED, Done.GONE]).select_related("token__application"))

    def still_there(item: RevocationItem) -> int | None:
        try:
            return item.pk if ctx.provider.still_granted(item.user_key, item.token.application.client_id) else None
        except ProviderError as exc:
            log.warning("%s grant of %s not checked: %s", ctx.label(), item.user_key, exc)
            return None

    still = [pk for pk in _at_once(ctx, still_there, done) if pk is not None]
    if still:
        RevocationItem.objects.filter(pk__in=still).update(outcome=Done.STILL_LISTED, answer="listed again after revoking")
        log.warning("%s %d grant(s) still listed after revoking", ctx.label(), len(still))


def settle(revocation: Revocation, refused: str = "") -> None:
    """The revocation's state and outcome in words, from its items; `refused`: the provider's
    refusal for want of a permission, which fails it."""
    counts = revocation.outcome_counts()
    words = [f"{counts[Done.REVOKED]} revoked", f"{counts[Done.GONE]} already gone"]
    for outcome in (Done.FAILED, Done.STILL_LISTED, Done.PENDING):
        if counts[outcome]:
            names = list(revocation.items.filter(outcome=outcome).values_list("user_key", flat=True)[:10])
            words.append(f"{counts[outcome]} {Done(outcome).label}: {', '.join(names)}{' …' if counts[outcome] > 10 else ''}")
    complete = not (counts[Done.FAILED] or counts[Done.STILL_LISTED] or counts[Done.PENDING])
    revocation.state = Revocation.State.FAILED if refused else Revocation.State.DONE if complete else Revocation.State.INCOMPLETE
    revocation.outcome = "; ".join(([refused] if refused else []) + words)
    revocation.save(update_fields=["state", "outcome"])
    log.info("revocation %s of %s: %s", revocation.pk, revocation.client_id, revocation.outcome)
