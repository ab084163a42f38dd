"""Google Workspace Admin SDK Directory API v1: users.list and tokens.list.

Retries as every HTTP provider (providers/http.py), following Google's advice; besides 429,
Google's 403 with a rate or quota reason is push-back too.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import google.auth.exceptions
import urllib3
from google.auth.transport.urllib3 import Request as AuthRequest
from google.oauth2 import service_account

from monitoring.governor.call_limits import Outcome

from .base import Check, ConfigError, Page, ProviderError, Revoked, require_str
from .credentials import check_credentials_file, read_credentials_file
from .http import HTTP_CONFIG_KEYS, HttpProvider, clean_http_config

USERS_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.readonly"
TOKENS_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.security"
SCOPES = [USERS_SCOPE, TOKENS_SCOPE]
# The token feed (Reports API) asks for its own token: a delegation refuses a request for
# several scopes if it lacks one, and a full sync must not need this one.
REPORTS_SCOPE = "https://www.googleapis.com/auth/admin.reports.audit.readonly"
USERS_PATH = "/admin/directory/v1/users"
ACTIVITY_PATH = "/admin/reports/v1/activity/users/all/applications/token"
ACTIVITY_PAGE_SIZE = 1000
# Google's reasons for a token without the scope (the others of a 403 mean the admin lacks a privilege).
SCOPE_REASONS = frozenset({"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"})
RETRY_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"})
PAGE_SIZE = 500
# Partial responses (Google's performance guide): only the fields syncapp.records reads. A users.list
# item is some 40 fields, of which these are ten; tokens.list's kind, etag and userKey are not read.
USER_FIELDS = "nextPageToken,users(id,primaryEmail,name/fullName,isAdmin,isDelegatedAdmin,suspended,archived,orgUnitPath,creationTime,lastLoginTime)"
TOKEN_FIELDS = "items(clientId,displayText,scopes,anonymous,nativeApp)"
ACTIVITY_FIELDS = "nextPageToken,items(id(time,uniqueQualifier),actor(email,profileId),events(name,parameters(name,value,multiValue)))"


class GoogleProvider(HttpProvider):
    name = "google"
    has_changes_feed = True
    revocable = True  # tokens.delete, with the scope tokens.list already needs
    config_keys = ("customer", "access_token", "credentials_file", "subject", *HTTP_CONFIG_KEYS)

    def __init__(self, config: dict, *, sleep: Callable[[float], None] = time.sleep):
        super().__init__(config, sleep=sleep)
        self._credentials = None
        self._scoped: dict[tuple[str, ...], object] = {}  # credentials per set of scopes
        self._credentials_lock = threading.Lock()
        if "credentials_file" in self.config:
            raw = read_credentials_file(self.config["credentials_file"], "credentials_file")
            try:
                key = json.loads(raw)
                self._credentials = service_account.Credentials.from_service_account_info(key, scopes=SCOPES, subject=self.config["subject"])
                self._token_uri = key.get("token_uri") or "Google's token endpoint"
            except (ValueError, TypeError, AttributeError) as exc:  # not JSON, not an object, not a service account's key
                raise ConfigError(f"credentials_file cannot be used: {exc.__class__.__name__}") from None

    @classmethod
    def clean_config(cls, config: dict) -> dict:
        cleaned = {**clean_http_config(config, base_url="https://admin.googleapis.com"), "customer": require_str(config, "customer", "my_customer")}
        if config.get("access_token"):
            cleaned["access_token"] = require_str(config, "access_token")
        elif config.get("credentials_file"):
            cleaned["credentials_file"] = require_str(config, "credentials_file")
            cleaned["subject"] = require_str(config, "subject")
            check_credentials_file(cleaned["credentials_file"], "credentials_file")
        else:
            raise ConfigError("set access_token, or credentials_file and subject (an admin to impersonate)")
        return cleaned

    def _authorization(self, scopes: tuple[str, ...] = tuple(SCOPES)) -> str:
        if self._credentials is None:
            return f"Bearer {self.config['access_token']}"
        with self._credentials_lock:
            credentials = self._scoped.get(scopes)
            if credentials is None:
                credentials = self._scoped[scopes] = self._credentials.with_scopes(list(scopes))
            if not credentials.valid:
                try:
                    credentials.refresh(AuthRequest(self._http))
                except google.auth.exceptions.GoogleAuthError as exc:
                    raise ProviderError(f"service account token refused for {', '.join(s.rsplit('/', 1)[1] for s in scopes)}: {str(exc)[:300]}") from None
            return f"Bearer {credentials.token}"

    @staticmethod
    def error_of(response: urllib3.BaseHTTPResponse) -> tuple[str, str | None]:
        """Google's message and first reason, from {"error": {"message", "errors": [{"reason"}]}}."""
        try:
            error = json.loads(response.data)["error"]
            reasons = [e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)]
            return str(error.get("message") or response.reason), (reasons[0] if reasons else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return response.reason or "error", None

    @staticmethod
    def outcome_of(status: int, reason: str | None) -> Outcome:
        if status == 403 and reason in RETRY_REASONS:
            return Outcome.PUSHBACK
        return HttpProvider.outcome_of(status, reason)

    def page_token_refused(self, status: int, params: dict | None) -> bool:
        # Page tokens live about three days: a checkpoint's may have expired.
        return status == 400 and bool(params) and "pageToken" in params

    def _pages(self, api: str, path: str, params: dict, field: str, page_token: str | None, **get) -> Iterator[Page]:
        """A Google list page by page (pageToken → nextPageToken); `field` holds a page's items,
        left out when there are none."""
        while True:
            body = self._get(self.config["base_url"] + path, {**params, "pageToken": page_token} if page_token else params, label=path, **get)
            items = body.get(field) or []
            if not isinstance(items, list):
                raise ProviderError(f"{api}: '{field}' is not a list")
            next_token = body.get("nextPageToken") or None
            yield Page(items, token=page_token, next_token=next_token)
            if next_token is None:
                return
            page_token = next_token

    def user_pages(self, page_token: str | None = None) -> Iterator[Page]:
        return self._pages("users.list", USERS_PATH, {"customer": self.config["customer"], "maxResults": PAGE_SIZE, "fields": USER_FIELDS},
                           "users", page_token)

    def token_changes(self, since: datetime, page_token: str | None = None) -> Iterator[Page]:
        """Token activities (authorize, revoke, activity) since `since`, newest first, 1,000 a
        page (Reports API activities.list, application "token"), with the feed's own token."""
        start = since.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return self._pages("activities.list", ACTIVITY_PATH, {"startTime": start, "maxResults": ACTIVITY_PAGE_SIZE, "fields": ACTIVITY_FIELDS},
                           "items", page_token,
                           authorization=lambda: self._authorization((REPORTS_SCOPE,)))

    def user_tokens(self, user_key: str) -> list[dict]:
        path = f"{USERS_PATH}/{quote(user_key, safe='@')}/tokens"
        body = self._get(self.config["base_url"] + path, {"fields": TOKEN_FIELDS}, label=path)
        items = body.get("items") or []  # no "items" key when the user has no tokens
        if not isinstance(items, list):
            raise ProviderError("tokens.list: 'items' is not a list")
        return items

    def revoke_token(self, user_key: str, client_id: str) -> Revoked:
        """tokens.delete: DELETE users/{userKey}/tokens/{clientId}. Google answers 404 for a grant
        it no longer has (revoked meanwhile, by the user or another admin): done all the same."""
        path = f"{USERS_PATH}/{quote(user_key, safe='@')}/tokens/{quote(client_id, safe='')}"
        return self._revoke(self.config["base_url"] + path, label=path, needs=f"the {TOKENS_SCOPE.rsplit('/', 1)[1]} scope in the "
                            "domain-wide delegation and an admin allowed to manage users' security settings")

    def revocation_check(self, checks: list[Check]) -> Check:
        target = f"tokens.delete (DELETE {self.config['base_url']}{USERS_PATH}/USER/tokens/CLIENT_ID)"
        tokens = next((c for c in checks if c.name == "tokens"), None)
        if tokens is None or tokens.ok is not True:
            return Check("revoke", target, None, "not known: the tokens call, whose scope revoking takes too, did not answer")
        return Check("revoke", target, True, f"granted by the {TOKENS_SCOPE.rsplit('/', 1)[1]} scope the tokens call used, for an "
                     "admin allowed to manage users' security settings")

    def targets(self) -> dict[str, str]:
        base = self.config["base_url"] + USERS_PATH
        return {"users": f"users.list (GET {base})", "tokens": f"tokens.list (GET {base}/USER/tokens)"}

    def check_connection(self) -> list[Check]:
        """With a service account, first ask for a token per scope: domain-wide delegation grants
        scopes one by one, and Google's answer to a missing one does not say which. Each call is
        tried twice at most: a test answers in seconds, not after a sync's patient retries."""
        self.config = {**self.config, "max_attempts": min(2, self.config["max_attempts"])}
        checks = []
        if self._credentials is not None:
            for scope in SCOPES:
                try:
                    self._credentials.with_scopes([scope]).refresh(AuthRequest(self._http))
                except google.auth.exceptions.GoogleAuthError as exc:
                    checks.append(Check(
                        f"token for {scope.rsplit('/', 1)[1]}", f"POST {self._token_uri} as {self.config['subject']}", False,
                        f"refused ({str(exc)[:200]}): grant the scope to the service account's client id under "
                        "Security → Access and data control → API controls → Domain-wide delegation",
                        missing_scope=scope,
                    ))
                else:
                    checks.append(Check(f"token for {scope.rsplit('/', 1)[1]}", f"POST {self._token_uri} as {self.config['subject']}", True, "granted"))
        return checks + super().check_connection() + [self._feed_check()]

    def _feed_check(self) -> Check:
        """The token feed (Reports API), which only changes runs need: not granted, it is no
        failure of the connection, but said, with the scope to grant."""
        target = f"activities.list (GET {self.config['base_url']}{ACTIVITY_PATH})"
        try:
            next(self.token_changes(datetime.now(timezone.utc) - timedelta(hours=1)), None)
        except ProviderError as exc:
            return Check("changes feed", target, None, f"{exc}: changes runs need the scope {REPORTS_SCOPE} (full syncs do not)",
                         missing_scope=REPORTS_SCOPE)
        return Check("changes feed", target, True, "answered: changes runs can read grants and revocations")

    def failed(self, name: str, target: str, exc: ProviderError) -> Check:
        scope = USERS_SCOPE if name == "users" else TOKENS_SCOPE
        if exc.status == 401:
            return Check(name, target, False, f"{exc}: the credentials were refused; check access_token, or the service account key and subject")
        if exc.status == 403 and exc.reason in SCOPE_REASONS:
            return Check(name, target, False, f"{exc}: the credentials lack the scope {scope}", missing_scope=scope)
        if exc.status == 403:
            role = "read users" if name == "users" else "read users' security settings (tokens)"
            return Check(name, target, False, f"{exc}: the admin the credentials act for may not {role}")
        return super().failed(name, target, exc)
