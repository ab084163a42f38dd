"""The contract every identity provider implements.

Records travel in the shape of Google's Directory API v1 (users.list items and
tokens.list items); syncapp.records validates them. A provider streams: it
never returns a whole organisation at once.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from monitoring.governor.call_limits import Call
from monitoring.metrics import provider_calls


class ProviderError(Exception):
    """A provider call failed for good (after any retries). The message is safe to show; status
    is the HTTP status of the last answer (None: no answer, or not an HTTP fault), reason the
    provider's own code for it where it gives one (Google's errors[0].reason)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status, self.reason = status, reason


class PageTokenRefused(ProviderError):
    """The provider no longer accepts a page token (it expired): the read must start again."""


class IncompleteExport(ProviderError):
    """A whole export (--complete) leaves out users it should cover: what it lacks cannot be
    taken for gone. The message names the difference and the command that writes the whole export."""


class DeltaExpired(ProviderError):
    """The provider no longer knows a stored delta link (Graph's 410 Gone): the changes must be
    read again from the whole state."""


class RevocationRefused(ProviderError):
    """The provider refused to revoke for want of a write permission; the message names it."""


class Revoked(StrEnum):
    """What a revocation call found: the grant revoked now, or already gone (a 404 counts as done)."""

    REVOKED = "revoked"
    GONE = "gone"


class ConfigError(ValueError):
    """A tenant's provider_config is unusable. The message names the key."""


@dataclass(frozen=True)
class Page:
    records: list[dict]
    # The token that fetched this page (None for the first): a checkpoint to resume from.
    token: str | None
    next_token: str | None
    lines: tuple[int, ...] | None = None  # each record's line, when the source is a file
    # On a delta query's last page: where the next round of changes starts (Graph's deltaLink).
    delta_link: str | None = None

    def where(self, index: int) -> str | None:
        """Where records[index] stands in its source, for a person to find it ("line 7")."""
        return f"line {self.lines[index]}" if self.lines else None


@dataclass(frozen=True)
class Check:
    """One call of a connection test: what was called, whether it worked, in plain words."""

    name: str  # e.g. "users.list"
    target: str  # what was called, without secrets, e.g. "GET https://admin.googleapis.com/admin/directory/v1/users"
    ok: bool | None  # None: not tried (an earlier call it needed failed)
    detail: str
    missing_scope: str | None = None


@contextmanager
def unguarded():
    yield Call()


class Provider:
    """Base class: subclasses implement every method below.

    Every call to the provider runs inside `with self.guard() as call:` and sets call.outcome
    (a monitoring.governor.call_limits.Call) to Outcome.PUSHBACK when the provider pushed back (a rate or quota
    answer) or ERROR when the call failed (5xx, lost connection); a running step sets guard to
    its governor's call(), which paces calls, adapts how many run at once and, when the block
    ends, says in call.persisting whether push-back persists.
    """

    name = ""
    # True: the source lists every token of the organisation at once (token_pages), rather than
    # answering for one user at a time (user_tokens).
    lists_tokens = False
    # False: the source may hold part of the directory (an import without --complete): what it
    # lacks is not marked deleted or revoked.
    whole_directory = True
    # True: the source has a feed of token grants and revocations (token_changes), or delta
    # queries (tracks_deltas) that a changes step reads.
    has_changes_feed = False
    # True: the source's changes are delta queries of its state (user_changes, grant_changes and
    # the delta links its full reads end with), not a feed of events.
    tracks_deltas = False
    # True: a token list that claims to be whole may still leave users out (GAM's `all users`
    # leaves out the suspended): the tokens step checks its users before revoking what it lacks.
    may_leave_out_users = False
    # True: revoke_token revokes a grant at the source (a revocation request's run calls it).
    revocable = False
    not_revocable = "its grants cannot be revoked from Ballast"  # why, in one line, where they cannot
    # Every key its config may hold: any other is a typing mistake (`{"usres": 200}`), refused by
    # checked_config with the known ones named, never silently ignored.
    config_keys: tuple[str, ...] = ()

    def __init__(self, config: dict):
        self.config = self.clean_config(config)
        self.guard = unguarded
        self._call_counters: dict = {}

    def count_call(self, status: str) -> None:
        """ballast_provider_calls_total{provider, status} += 1; each status's labelled counter is
        looked up once (labels() per call cost more than the rest of a demo call's bookkeeping)."""
        counter = self._call_counters.get(status)
        if counter is None:
            counter = self._call_counters[status] = provider_calls.labels(provider=self.name, status=status)
        counter.inc()

    @classmethod
    def clean_config(cls, config: dict) -> dict:
        """Return the config with defaults filled in, or raise ConfigError naming the bad key."""
        raise NotImplementedError

    @classmethod
    def checked_config(cls, config: dict) -> dict:
        """clean_config, after refusing a key the provider does not know (what a person enters;
        a stored config is read as it is, so an old key never fails a sync)."""
        unknown = sorted(set(config) - set(cls.config_keys))
        if unknown:
            raise ConfigError(f"unknown {'key' if len(unknown) == 1 else 'keys'} {', '.join(map(repr, unknown))}; "
                              f"the {cls.name} provider knows {', '.join(cls.config_keys)}")
        return cls.clean_config(config)

    def user_pages(self, page_token: str | None = None) -> Iterator[Page]:
        """Yield the organisation's users page by page, starting at page_token."""
        raise NotImplementedError

    def given_fields(self, kind: str) -> frozenset[str] | None:
        """The record fields ("users" or "tokens" records, by their Directory API names) the source
        gives; a field it does not give is unknown and the stored value stays. None: every field."""
        return None

    def user_count(self) -> int | None:
        """How many users the source holds, if it says so without being read (None: it does not)."""
        return None

    def user_tokens(self, user_key: str) -> list[dict]:
        """Return the OAuth tokens one user granted (tokens.list items; [] when none)."""
        raise NotImplementedError

    def token_pages(self, page_token: str | None = None) -> Iterator[Page]:
        """For a source that lists_tokens: every token, page by page from page_token, as
        tokens.list items with their user ("userKey": the user's id, "user": the email), or with
        "orgScopes" and no user for an administrator's consent to the whole organisation."""
        raise NotImplementedError

    @staticmethod
    def revocation_key(email: str, external_id: str) -> str:
        """How revoke_token and still_granted name a user: the address, unless the source wants its id."""
        return email

    def revoke_token(self, user_key: str, client_id: str) -> Revoked:
        """For a revocable source: revoke the grant of one user (revocation_key) to one
        application. A grant the source no longer has is Revoked.GONE; a refusal for want of a
        write permission raises RevocationRefused naming it."""
        raise NotImplementedError

    def revocation_check(self, checks: list[Check]) -> Check:
        """Whether revoking would be allowed, told after the connection's own checks and without
        revoking anything: an answer apart from theirs, so a read-only connection still works."""
        return Check("revoke", "revoking grants", None, self.not_revocable)

    def still_granted(self, user_key: str, client_id: str) -> bool:
        """For a revocable source: whether the user still holds a grant to the application, as
        the source lists it now (a revocation's check afterwards)."""
        return any(token.get("clientId") == client_id for token in self.user_tokens(user_key))

    def token_changes(self, since: datetime, page_token: str | None = None) -> Iterator[Page]:
        """For a source with a changes feed: its token activities since `since`, page by page
        (Reports API activities: {"id": {"time", "uniqueQualifier"}, "actor": {"email",
        "profileId"}, "events": [{"name", "parameters"}]}), newest first."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections. Safe to call twice."""

    def targets(self) -> dict[str, str]:
        """What each endpoint the provider uses is called: {"users": ..., "tokens": ...}."""
        return {"users": "users", "tokens": "tokens"}

    def check_connection(self) -> list[Check]:
        """One call to each endpoint a sync uses: the first page of users, then the tokens of its
        first user. Providers with more to check (credentials, scopes) put their checks first."""
        targets = self.targets()
        try:
            page = next(self.user_pages(), None)
        except ProviderError as exc:
            return [self.failed("users", targets["users"], exc),
                    Check("tokens", targets["tokens"], None, "not tried: it needs a user from the users call")]
        users = page.records if page else []
        if not users:
            return [Check("users", targets["users"], True, "answered, but the directory has no users"),
                    Check("tokens", targets["tokens"], None, "not tried: no user to ask about")]
        first = users[0]
        checks = [Check("users", targets["users"], True, f"answered: {_count(len(users), 'user')} on the first page, the first {first.get('primaryEmail') or first.get('id')}")]
        try:
            if self.lists_tokens:
                page = next(self.token_pages(), None)
                answer = f"answered: {_count(len(page.records) if page else 0, 'grant')} on the first page"
            else:
                answer = f"answered: {_count(len(self.user_tokens(str(first.get('id') or first.get('primaryEmail')))), 'token')} granted by {first.get('primaryEmail') or first.get('id')}"
        except ProviderError as exc:
            return checks + [self.failed("tokens", targets["tokens"], exc)]
        return checks + [Check("tokens", targets["tokens"], True, answer)]

    def failed(self, name: str, target: str, exc: ProviderError) -> Check:
        """The Check for a call that failed; providers that know which scope a refusal means say so."""
        return Check(name, target, False, str(exc))


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 's'}"


def require_int(config: dict, key: str, default: int, minimum: int = 0) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be a whole number >= {minimum}")
    return value


def require_str(config: dict, key: str, default: str | None = None) -> str:
    value = config.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string")
    return value
