"""What the HTTP providers share: one urllib3 pool, each call inside the governor's guard,
retries with exponential backoff and jitter honouring Retry-After, and errors that name the URL
and the status. Subclasses say how to authorise a call and how to read their API's errors.

A push-back (429, and whatever the API adds) that persists is retried from retry_base_ms while
the governor slows the pace; a fault of one call (5xx, a lost connection) or a lone push-back from
error_retry_base_ms, so a lone 503 or 403 rateLimitExceeded costs that call a tenth of a second,
not the step a second. Any other 4xx fails the call with the API's own message.
"""

import json
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import urllib3

from monitoring.governor.call_limits import Call, Outcome

from .base import ConfigError, PageTokenRefused, Provider, ProviderError, RevocationRefused, Revoked, require_int, require_str

MAX_RETRY_AFTER_S = 300.0
# Google compresses an answer only for a client that accepts gzip and says "gzip" in its
# User-Agent (its performance guide); a tenth of the bytes of a JSON page, for a little CPU.
USER_AGENT = "ballast-directory-sync (gzip)"

# A failed connection in plain words, by urllib3's exception type (most specific first).
CONNECTION_PROBLEMS = (
    (urllib3.exceptions.NameResolutionError, "the host name does not resolve:"),
    (urllib3.exceptions.NewConnectionError, "nothing answers at"),  # a ConnectTimeoutError too, in urllib3 2
    (urllib3.exceptions.ConnectTimeoutError, "no answer in time from"),
    (urllib3.exceptions.SSLError, "TLS failed with"),
    (urllib3.exceptions.ReadTimeoutError, "no answer in time from"),
    (urllib3.exceptions.ProtocolError, "the connection broke off with"),
)


def connection_problem(exc: urllib3.exceptions.HTTPError) -> str:
    cause = getattr(exc, "reason", None) or exc  # a MaxRetryError carries the real fault as its reason
    return next((words for kind, words in CONNECTION_PROBLEMS if isinstance(cause, kind)), "cannot reach")


def retry_after(response: urllib3.BaseHTTPResponse) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), capped; None when absent or unreadable."""
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


# The settings every HTTP provider takes (clean_http_config), in the order the README lists them.
HTTP_CONFIG_KEYS = ("base_url", "timeout_s", "max_attempts", "retry_base_ms", "error_retry_base_ms", "retry_cap_s", "connections")


def clean_http_config(config: dict, *, base_url: str) -> dict:
    """The settings every HTTP provider takes, with their defaults; ConfigError names a bad one."""
    cleaned = {
        "base_url": require_str(config, "base_url", base_url).rstrip("/"),
        "timeout_s": require_int(config, "timeout_s", 30, minimum=1),
        "max_attempts": require_int(config, "max_attempts", 8, minimum=1),
        "retry_base_s": float(require_int(config, "retry_base_ms", 1000)) / 1000,
        "error_retry_base_s": float(require_int(config, "error_retry_base_ms", 100)) / 1000,
        "retry_cap_s": float(require_int(config, "retry_cap_s", 32)),
        "connections": require_int(config, "connections", 20, minimum=1),
    }
    if not cleaned["base_url"].startswith(("http://", "https://")):
        raise ConfigError("base_url must start with http:// or https://")
    return cleaned


class HttpProvider(Provider):
    """Base for providers that speak JSON over HTTP. Subclasses implement _authorization and
    error_of, and may widen outcome_of and page_token_refused."""

    def __init__(self, config: dict, *, sleep: Callable[[float], None] = time.sleep):
        super().__init__(config)
        self._sleep = sleep
        # urllib3 spends about half the CPU per call that httpx does (bench/client_cpu.py): on one
        # core, that is the pace of a latency-bound step. Retries are ours (the governor's pace,
        # the API's backoff); `block` holds a thread until one of `connections` is free.
        self._http = urllib3.PoolManager(
            maxsize=self.config["connections"],
            block=True,
            retries=False,
            timeout=urllib3.Timeout(connect=min(10.0, self.config["timeout_s"]), read=self.config["timeout_s"]),
            headers={"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": USER_AGENT},
        )

    def _authorization(self) -> str:
        """The Authorization header's value for the next call (it may fetch a token)."""
        raise NotImplementedError

    @staticmethod
    def error_of(response: urllib3.BaseHTTPResponse) -> tuple[str, str | None]:
        """The API's own message and reason (its error code) from an error answer's body."""
        raise NotImplementedError

    @staticmethod
    def outcome_of(status: int, reason: str | None) -> Outcome:
        """A rate answer is push-back (the pace must slow down); a 5xx is a fault of that call."""
        if status == 429:
            return Outcome.PUSHBACK
        if status >= 500:
            return Outcome.ERROR
        return Outcome.OK

    def page_token_refused(self, status: int, params: dict | None) -> bool:
        """Whether this answer refuses the page token of a resumed read (then the read starts over)."""
        return False

    def _backoff(self, attempt: int, call: Call) -> float:
        """Push-back that persists: base × 2^(n−1) plus up to base. A fault of one call, or a lone
        push-back (the guard said it does not persist): half to all of base × 2^(n−1) ("equal
        jitter"), so the first retry of a lone 503 or 403 rateLimitExceeded comes in 50-100 ms."""
        if call.outcome is Outcome.PUSHBACK and call.persisting:
            base = self.config["retry_base_s"]
            return min(self.config["retry_cap_s"], base * 2 ** (attempt - 1)) + random.uniform(0, base)
        return min(self.config["retry_cap_s"], self.config["error_retry_base_s"] * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def _get(self, url: str, params: dict | None = None, *, label: str, authorization: Callable[[], str] | None = None) -> dict:
        """GET a JSON object, retried as the module says."""
        return self._request("GET", url, params, label=label, authorization=authorization)

    def _revoke(self, url: str, *, label: str, needs: str) -> Revoked:
        """DELETE a grant, retried as the module says (204, no body, is the usual answer). A 404
        is a grant already gone; a 403 that is not push-back (that was retried, and may have run
        out of tries) is a refusal for want of `needs`, said in the message."""
        try:
            self._request("DELETE", url, None, label=label)
        except ProviderError as exc:
            if exc.status == 404:
                return Revoked.GONE
            if exc.status == 403 and self.outcome_of(403, exc.reason) is Outcome.OK:
                raise RevocationRefused(f"the provider refused to revoke ({exc}): revoking needs {needs}", status=403, reason=exc.reason) from None
            raise
        return Revoked.REVOKED

    def _request(self, method: str, url: str, params: dict | None = None, *, label: str, authorization: Callable[[], str] | None = None) -> dict:
        """Call and read the JSON object answered ({} for an empty body), retried as the module
        says. `label` names the call in errors (no secrets: a path, or a URL without its query);
        `authorization` gives the header when the call needs other credentials than the provider's usual ones."""
        authorization = authorization or self._authorization
        attempts = self.config["max_attempts"]
        for attempt in range(1, attempts + 1):
            wait, response = None, None
            with self.guard() as call:
                try:
                    response = self._http.request(method, url, fields=params, headers={**self._http.headers, "Authorization": authorization()})
                except urllib3.exceptions.HTTPError as exc:
                    problem = f"connection error: {connection_problem(exc)} {self.config['base_url']} ({exc.__class__.__name__})"
                    self.count_call("error")
                    call.outcome = Outcome.ERROR
                else:
                    self.count_call(str(response.status))
                    message, reason = self.error_of(response) if response.status >= 400 else ("", None)
                    call.outcome = self.outcome_of(response.status, reason)
            if response is not None:
                where = url.split("?", 1)[0]
                if 300 <= response.status < 400:  # not followed: the APIs never redirect, a wrong base_url (a login page) does
                    raise ProviderError(
                        f"{method} {where}: the answer is a redirect ({response.status} {response.reason}) "
                        f"to {response.headers.get('Location', '?')}; is base_url right?", status=response.status,
                    )
                if response.status < 400:
                    if not response.data:
                        return {}
                    try:
                        return json.loads(response.data)
                    except ValueError:  # not JSON, or not text
                        raise ProviderError(f"{method} {where}: the answer ({response.status} {response.reason}) is not JSON", status=response.status) from None
                problem = f"{response.status} {message}"
                if self.page_token_refused(response.status, params):
                    raise PageTokenRefused(f"{method} {label}: page token refused: {problem}", status=response.status, reason=reason)
                if call.outcome is Outcome.OK:  # any other 4xx: retrying will not help
                    raise ProviderError(f"{method} {label}: {problem}", status=response.status, reason=reason)
                wait = retry_after(response)
            if attempt == attempts:
                raise ProviderError(
                    f"{method} {label}: gave up after {attempts} attempts: {problem}",
                    status=None if response is None else response.status, reason=None if response is None else reason,
                )
            self._sleep(self._backoff(attempt, call) if wait is None else wait)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._http.clear()
