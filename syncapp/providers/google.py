"""Google Workspace Admin SDK Directory API v1: users.list and tokens.list.

Retries follow Google's advice (exponential backoff with jitter), honouring Retry-After: on
429 and 403 rate/quota reasons (push-back: from retry_base_ms, while the governor slows the
pace), and on 5xx and connection errors (a fault of that call: from error_retry_base_ms, so a
lone 503 costs that call a tenth of a second at most, not the step a second). Any other 4xx fails the
call with the API's own message.
"""

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import google.auth.exceptions
import urllib3
from google.auth.transport.urllib3 import Request as AuthRequest
from google.oauth2 import service_account

from monitoring.limits import Outcome

from .base import Check, ConfigError, Page, PageTokenRefused, Provider, ProviderError, require_int, require_str

USERS_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.readonly"
TOKENS_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.security"
SCOPES = [USERS_SCOPE, TOKENS_SCOPE]
USERS_PATH = "/admin/directory/v1/users"
# Google's reasons for a token without the scope (the others of a 403 mean the admin lacks a privilege).
SCOPE_REASONS = frozenset({"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"})
RETRY_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"})
MAX_RETRY_AFTER_S = 300.0
PAGE_SIZE = 500


def _error_of(response: urllib3.BaseHTTPResponse) -> tuple[str, str | None]:
    """The API's own message and first reason, from Google's error body."""
    try:
        error = json.loads(response.data)["error"]
        reasons = [e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)]
        return str(error.get("message") or response.reason), (reasons[0] if reasons else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.reason or "error", None


def _retry_after(response: urllib3.BaseHTTPResponse) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


# A failed connection in plain words, by urllib3's exception type (most specific first).
CONNECTION_PROBLEMS = (
    (urllib3.exceptions.NameResolutionError, "the host name does not resolve:"),
    (urllib3.exceptions.NewConnectionError, "nothing answers at"),  # a ConnectTimeoutError too, in urllib3 2
    (urllib3.exceptions.ConnectTimeoutError, "no answer in time from"),
    (urllib3.exceptions.SSLError, "TLS failed with"),
    (urllib3.exceptions.ReadTimeoutError, "no answer in time from"),
    (urllib3.exceptions.ProtocolError, "the connection broke off with"),
)


def _connection_problem(exc: urllib3.exceptions.HTTPError) -> str:
    cause = getattr(exc, "reason", None) or exc  # a MaxRetryError carries the real fault as its reason
    return next((words for kind, words in CONNECTION_PROBLEMS if isinstance(cause, kind)), "cannot reach")


def _outcome(status: int, reason: str | None) -> Outcome:
    """A rate or quota answer is push-back (the pace must slow down); a 5xx is a fault of that call."""
    if status == 429 or (status == 403 and reason in RETRY_REASONS):
        return Outcome.PUSHBACK
    if status >= 500:
        return Outcome.ERROR
    return Outcome.OK


class GoogleProvider(Provider):
    name = "google"

    def __init__(self, config: dict, *, sleep: Callable[[float], None] = time.sleep):
        super().__init__(config)
        self._sleep = sleep
        # urllib3 spends about half the CPU per call that httpx does (bench/client_cpu.py): on one
        # core, that is the pace of a latency-bound step. Retries are ours (the governor's pace,
        # Google's backoff); `block` holds a thread until one of `connections` is free.
        self._http = urllib3.PoolManager(
            maxsize=self.config["connections"],
            block=True,
            retries=False,
            timeout=urllib3.Timeout(connect=min(10.0, self.config["timeout_s"]), read=self.config["timeout_s"]),
            headers={"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": "ballast-directory-sync"},
        )
        self._credentials = None
        self._credentials_lock = threading.Lock()
        if "credentials_file" in self.config:
            try:
                with open(self.config["credentials_file"], encoding="utf-8") as file:
                    key = json.load(file)
                self._credentials = service_account.Credentials.from_service_account_info(key, scopes=SCOPES, subject=self.config["subject"])
                self._token_uri = key.get("token_uri") or "Google's token endpoint"
            except (OSError, ValueError) as exc:
                raise ConfigError(f"credentials_file cannot be used: {exc.__class__.__name__}") from None

    @classmethod
    def clean_config(cls, config: dict) -> dict:
        cleaned = {
            "base_url": require_str(config, "base_url", "https://admin.googleapis.com").rstrip("/"),
            "customer": require_str(config, "customer", "my_customer"),
            "timeout_s": require_int(config, "timeout_s", 30, minimum=1),
            "max_attempts": require_int(config, "max_attempts", 8, minimum=1),
            "retry_base_s": float(require_int(config, "retry_base_ms", 1000)) / 1000,
            "error_retry_base_s": float(require_int(config, "error_retry_base_ms", 100)) / 1000,
            "retry_cap_s": float(require_int(config, "retry_cap_s", 32)),
            "connections": require_int(config, "connections", 20, minimum=1),
        }
        if not cleaned["base_url"].startswith(("http://", "https://")):
            raise ConfigError("base_url must start with http:// or https://")
        if config.get("access_token"):
            cleaned["access_token"] = require_str(config, "access_token")
        elif config.get("credentials_file"):
            cleaned["credentials_file"] = require_str(config, "credentials_file")
            cleaned["subject"] = require_str(config, "subject")
        else:
            raise ConfigError("set access_token, or credentials_file and subject (an admin to impersonate)")
        return cleaned

    def _authorization(self) -> str:
        if self._credentials is None:
            return f"Bearer {self.config['access_token']}"
        with self._credentials_lock:
            if not self._credentials.valid:
                try:
                    self._credentials.refresh(AuthRequest(self._http))
                except google.auth.exceptions.GoogleAuthError as exc:
                    raise ProviderError(f"service account token refused: {str(exc)[:300]}") from None
            return f"Bearer {self._credentials.token}"

    def _backoff(self, attempt: int, outcome: Outcome) -> float:
        """Push-back: Google's form, base × 2^(n−1) plus up to base. A fault of one call: half to
        all of base × 2^(n−1) ("equal jitter"), so the first retry of a lone 503 comes in 50-100 ms."""
        if outcome is Outcome.PUSHBACK:
            base = self.config["retry_base_s"]
            return min(self.config["retry_cap_s"], base * 2 ** (attempt - 1)) + random.uniform(0, base)
        return min(self.config["retry_cap_s"], self.config["error_retry_base_s"] * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def _get(self, path: str, params: dict | None = None) -> dict:
        attempts = self.config["max_attempts"]
        for attempt in range(1, attempts + 1):
            wait, response = None, None
            with self.guard() as call:
                try:
                    response = self._http.request(
                        "GET", self.config["base_url"] + path, fields=params, headers={**self._http.headers, "Authorization": self._authorization()}
                    )
                except urllib3.exceptions.HTTPError as exc:
                    problem = f"connection error: {_connection_problem(exc)} {self.config['base_url']} ({exc.__class__.__name__})"
                    self.count_call("error")
                    call["outcome"] = Outcome.ERROR
                else:
                    self.count_call(str(response.status))
                    message, reason = _error_of(response) if response.status >= 400 else ("", None)
                    call["outcome"] = _outcome(response.status, reason)
            if response is not None:
                if 300 <= response.status < 400:  # not followed: the API never redirects, a wrong base_url (a login page) does
                    raise ProviderError(
                        f"GET {self.config['base_url']}{path}: the answer is a redirect ({response.status} {response.reason}) "
                        f"to {response.headers.get('Location', '?')}; is base_url right?", status=response.status,
                    )
                if response.status < 400:
                    try:
                        return json.loads(response.data)
                    except ValueError:  # not JSON, or not text
                        raise ProviderError(
                        f"GET {self.config['base_url']}{path}: the answer ({response.status} {response.reason}) is not JSON", status=response.status
                    ) from None
                problem = f"{response.status} {message}"
                if response.status == 400 and params and "pageToken" in params:
                    # Page tokens live about three days: a checkpoint's may have expired.
                    raise PageTokenRefused(f"GET {path}: page token refused: {problem}", status=400, reason=reason)
                if call["outcome"] is Outcome.OK:  # any other 4xx: retrying will not help
                    raise ProviderError(f"GET {path}: {problem}", status=response.status, reason=reason)
                wait = _retry_after(response)
            if attempt == attempts:
                raise ProviderError(
                    f"GET {path}: gave up after {attempts} attempts: {problem}",
                    status=None if response is None else response.status, reason=None if response is None else reason,
                )
            self._sleep(self._backoff(attempt, call["outcome"]) if wait is None else wait)
        raise AssertionError("unreachable")

    def user_pages(self, page_token: str | None = None) -> Iterator[Page]:
        while True:
            params = {"customer": self.config["customer"], "maxResults": PAGE_SIZE}
            if page_token:
                params["pageToken"] = page_token
            body = self._get(USERS_PATH, params)
            users = body.get("users") or []
            if not isinstance(users, list):
                raise ProviderError("users.list: 'users' is not a list")
            next_token = body.get("nextPageToken") or None
            yield Page(users, token=page_token, next_token=next_token)
            if next_token is None:
                return
            page_token = next_token

    def user_tokens(self, user_key: str) -> list[dict]:
        body = self._get(f"{USERS_PATH}/{quote(user_key, safe='@')}/tokens")
        items = body.get("items") or []  # no "items" key when the user has no tokens
        if not isinstance(items, list):
            raise ProviderError("tokens.list: 'items' is not a list")
        return items

    def close(self) -> None:
        self._http.clear()

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
        return checks + super().check_connection()

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
