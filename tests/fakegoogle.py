"""A loopback HTTP server that speaks the Directory API v1 (users.list, tokens.list)
and Google's OAuth token endpoint for service accounts. Tests change its data and
script its faults; it records every request it answers.
"""

import bisect
import json
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, unquote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

from .googleshapes import ACTIVITIES_LIST, TOKENS_LIST, USERS_LIST, FieldSelectionError, check_fields, parse_fields, select, served_token, served_user
from .loopback import LoopbackJsonServer

USERS_PATH = "/admin/directory/v1/users"
ACTIVITY_PATH = "/admin/reports/v1/activity/users/all/applications/token"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def google_error(code: int, message: str, reason: str) -> dict:
    return {"error": {"code": code, "message": message, "errors": [{"domain": "global", "reason": reason, "message": message}]}}


class FakeDirectory(LoopbackJsonServer):
    name = "fake-google"

    def __init__(self, *, access_token: str = "static-test-token", max_page: int = 500):
        self.users: list[dict] = []
        self.tokens: dict[str, list[dict]] = {}
        self.access_tokens = {access_token}
        self.max_page = max_page
        self.service_account_key: str | None = None  # public key PEM that signs assertions
        self.assertions: list[dict] = []  # claims of every accepted service-account assertion
        self.delegated_scopes: set[str] | None = None  # scopes granted by domain-wide delegation (None: any)
        self.requests: list[tuple[str, str, dict]] = []
        self.latency_s = 0.0  # each directory request waits this long before its answer
        self.flaky_every: int | None = None  # every Nth directory request answers 503
        self.flaky_answers = 0
        self.quota_per_second: int | None = None  # answer 429 above this many calls in any second
        # Google's sporadic 403 rateLimitExceeded, well under any quota: this share of directory requests, at random
        self.rate_limited_share = 0.0
        self.rate_limited_answers = 0
        self._random = random.Random(23)
        self.accepted_at: list[float] = []  # monotonic times of calls let through (under a quota)
        self.rejected = 0
        self.activities: list[dict] = []  # Reports API token activities, any order: served newest first
        self.may_revoke = True  # False: tokens.delete answers 403, as for a delegation without the security scope
        self.revoked: list[tuple[str, str]] = []  # (userKey, clientId) of every tokens.delete that removed a grant
        self._count = 0
        self._lock = threading.Lock()
        super().__init__()

    def default_fault(self, status: int) -> dict:
        return google_error(status, "scripted", "backendError")

    def shaped(self, status: int, body: dict, query: dict) -> dict:
        """A partial response: only the fields `fields=` asks for (checked in _answer)."""
        if status != 200 or not query.get("fields"):
            return body
        return select(body, parse_fields(query["fields"]))

    def compresses(self, headers) -> bool:
        """Google's rule: gzip for a client that accepts it and says "gzip" in its User-Agent."""
        return "gzip" in headers.get("Accept-Encoding", "") and "gzip" in headers.get("User-Agent", "")

    def service_account_file(self, folder: Path) -> Path:
        """A service account key file whose assertions this server accepts (a fresh RSA key)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.service_account_key = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        path = folder / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account",
            "project_id": "ballast-test",
            "private_key_id": "k1",
            "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
            "client_email": "sync@ballast-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": self.url + "/token",
        }))
        path.chmod(0o600)  # as a key file must be (syncapp/providers/credentials.py)
        return path

    def load(self, users: list[dict], tokens: dict[str, list[dict]]) -> None:
        self.users, self.tokens = list(users), dict(tokens)

    # --- the token feed: what changes tokens.list is logged as an activity ---------

    def _log(self, name: str, user_id: str, client_id: str, app_name: str, scopes: list[str], at: datetime,
             client_type: str = "WEB") -> dict:
        email = next((u["primaryEmail"] for u in self.users if u["id"] == user_id), f"{user_id}@unknown.example")
        parameters = [
            {"name": "client_id", "value": client_id}, {"name": "app_name", "value": app_name},
            {"name": "client_type", "value": client_type}, {"name": "scope", "multiValue": list(scopes)},
        ]
        # What the real feed adds and Ballast does not read: an "activity" (most of a real feed) names
        # the API call it made; an authorize the products behind each scope.
        if name == "activity":
            parameters += [{"name": "api_name", "value": "gmail"}, {"name": "method_name", "value": "gmail.users.messages.list"},
                           {"name": "num_response_bytes", "intValue": "5120"}, {"name": "product_bucket", "multiValue": ["GMAIL"]}]
        elif name == "authorize":
            parameters.append({"name": "scope_data", "multiMessageValue": [
                {"parameter": [{"name": "scope_name", "value": scope}, {"name": "product_bucket", "multiValue": ["OTHER"]}]}
                for scope in scopes]})
        item = {
            "kind": "admin#reports#activity",
            "etag": f'"{len(self.activities)}/activity"',
            "id": {"time": at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                   "uniqueQualifier": str(-(2**62) + len(self.activities) * 7919), "applicationName": "token", "customerId": "C01"},
            "actor": {"callerType": "USER", "email": email, "profileId": user_id},
            "ipAddress": "203.0.113.7",
            "ownerDomain": email.rsplit("@", 1)[-1],
            "events": [{"type": "auth", "name": name, "parameters": parameters}],
        }
        self.activities.append(item)
        return item

    def grant(self, user_id: str, token: dict, at: datetime, *, logged: bool = True, client_type: str | None = None) -> dict | None:
        """A user grants (or re-grants, with more scopes) an app: tokens.list shows it, and the feed
        logs an authorize (unless logged=False: an event the feed will deliver late, by log()) with
        the client's type (by default NATIVE_DESKTOP for a nativeApp token, else WEB; the real feed
        names the platform: NATIVE_IOS, NATIVE_ANDROID, NATIVE_APPLICATION…)."""
        client_type = client_type or ("NATIVE_DESKTOP" if token.get("nativeApp") else "WEB")
        tokens = self.tokens.setdefault(user_id, [])
        known = next((t for t in tokens if t["clientId"] == token["clientId"]), None)
        if known is None:
            tokens.append(dict(token))
        else:
            known["scopes"] = sorted(set(known["scopes"]) | set(token["scopes"]))
        return self._log("authorize", user_id, token["clientId"], token.get("displayText", ""), token["scopes"], at, client_type) if logged else None

    def revoke(self, user_id: str, client_id: str, at: datetime) -> dict:
        self.tokens[user_id] = [t for t in self.tokens.get(user_id, []) if t["clientId"] != client_id]
        return self._log("revoke", user_id, client_id, "", [], at)

    def log(self, name: str, user_id: str, client_id: str, at: datetime, *, app_name: str = "", scopes: list[str] | None = None) -> dict:
        """An activity only (tokens.list unchanged): an "activity" event, or a late one."""
        return self._log(name, user_id, client_id, app_name, scopes or [], at)

    def paths(self, prefix: str = "") -> list[str]:
        return [path for _, path, _ in self.requests if path.startswith(prefix)]

    # --- answers ---------------------------------------------------------

    def _answer(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict, dict]:
        with self._lock:
            self.requests.append((method, path, query))
            self._count += 1
            count = self._count
            scripted = self.scripted_answer(path)
            if scripted is not None:
                return scripted
        if path == "/token" and method == "POST":
            return self._token(body)
        if self.latency_s:
            time.sleep(self.latency_s)
        if headers.get("Authorization", "").removeprefix("Bearer ") not in self.access_tokens:
            return 401, google_error(401, "Request had invalid authentication credentials.", "authError"), {}
        if self.quota_per_second is not None and not self._within_quota():
            return 429, google_error(429, "Rate Limit Exceeded", "rateLimitExceeded"), {}
        if self.rate_limited_share and self._sporadic_refusal():
            return 403, google_error(403, "Rate Limit Exceeded", "rateLimitExceeded"), {}
        if self.flaky_every and count % self.flaky_every == 0:
            self.flaky_answers += 1
            return 503, google_error(503, "The service is currently unavailable.", "backendError"), {}
        if method == "DELETE":
            return self._delete_token(path)
        schema = USERS_LIST if path == USERS_PATH else ACTIVITIES_LIST if path == ACTIVITY_PATH else TOKENS_LIST
        if query.get("fields"):
            try:
                check_fields(parse_fields(query["fields"]), schema)
            except FieldSelectionError as exc:
                return 400, google_error(400, str(exc), "invalidParameter"), {}
        if path == USERS_PATH:
            return self._users(query)
        if path == ACTIVITY_PATH:
            return self._activities(query)
        if path.startswith(USERS_PATH + "/") and path.endswith("/tokens"):
            return self._user_tokens(unquote(path[len(USERS_PATH) + 1 : -len("/tokens")]))
        return 404, google_error(404, "Not Found", "notFound"), {}

    def _within_quota(self) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = bisect.bisect_left(self.accepted_at, now - 1.0)
            if len(self.accepted_at) - recent >= self.quota_per_second:
                self.rejected += 1
                return False
            self.accepted_at.append(now)
            return True

    def _sporadic_refusal(self) -> bool:
        with self._lock:
            refused = self._random.random() < self.rate_limited_share
            self.rate_limited_answers += refused
            return refused

    def _users(self, query: dict) -> tuple[int, dict, dict]:
        if "customer" not in query:
            return 400, google_error(400, "Bad Request", "badRequest"), {}
        size = min(int(query.get("maxResults", 100)), self.max_page)
        start = int(query.get("pageToken", 0))
        body = {"kind": "admin#directory#users", "etag": '"fake"', "users": [served_user(u) for u in self.users[start : start + size]]}
        if start + size < len(self.users):
            body["nextPageToken"] = str(start + size)
        return 200, body, {}

    def _activities(self, query: dict) -> tuple[int, dict, dict]:
        try:
            since = datetime.fromisoformat(query["startTime"].replace("Z", "+00:00"))
            size = min(int(query.get("maxResults", 1000)), 1000)
        except (KeyError, ValueError):
            return 400, google_error(400, "Invalid value for: startTime", "invalid"), {}
        matching = sorted((a for a in self.activities if datetime.fromisoformat(a["id"]["time"].replace("Z", "+00:00")) >= since),
                          key=lambda a: (a["id"]["time"], a["id"]["uniqueQualifier"]), reverse=True)
        start = int(query.get("pageToken", 0))
        body = {"kind": "admin#reports#activities"}
        if matching[start : start + size]:  # no "items" key when there are none
            body["items"] = matching[start : start + size]
        if start + size < len(matching):
            body["nextPageToken"] = str(start + size)
        return 200, body, {}

    def _user_tokens(self, user_key: str) -> tuple[int, dict, dict]:
        ids = {u.get("primaryEmail"): u.get("id") for u in self.users}
        if user_key not in ids and user_key not in ids.values():
            return 404, google_error(404, "Resource Not Found: userKey", "notFound"), {}
        items = self.tokens.get(user_key) or []
        body = {"kind": "admin#directory#tokenList", "etag": '"fake"'}
        if items:  # Google leaves "items" out when the user granted nothing
            body["items"] = [served_token(t, ids.get(user_key, user_key)) for t in items]
        return 200, body, {}

    def _delete_token(self, path: str) -> tuple[int, dict | None, dict]:
        """tokens.delete: 204 and the grant gone (logged as a revoke activity, as Google does);
        404 for an unknown user or a grant the user no longer has."""
        user_part, _, client_id = path[len(USERS_PATH) + 1:].partition("/tokens/")
        if not path.startswith(USERS_PATH + "/") or not client_id:
            return 404, google_error(404, "Not Found", "notFound"), {}
        if not self.may_revoke:
            return 403, google_error(403, "Request had insufficient authentication scopes.", "insufficientPermissions"), {}
        user_key, client_id = unquote(user_part), unquote(client_id)
        ids = {u.get("primaryEmail"): u.get("id") for u in self.users}
        user_id = ids.get(user_key, user_key)
        with self._lock:
            held = any(t["clientId"] == client_id for t in self.tokens.get(user_id, []))
            if not held:
                return 404, google_error(404, "Resource Not Found: clientId", "notFound"), {}
            self.tokens[user_id] = [t for t in self.tokens[user_id] if t["clientId"] != client_id]
            self.revoked.append((user_key, client_id))
        self._log("revoke", user_id, client_id, "", [], datetime.now(timezone.utc))
        return 204, None, {}

    def _token(self, body: bytes) -> tuple[int, dict, dict]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not self.service_account_key:
            return 400, {"error": "invalid_grant", "error_description": "bad grant"}, {}
        try:
            # google-auth always addresses its assertion to Google's token endpoint, whatever token_uri says.
            claims = jwt.decode(form["assertion"], certs=self.service_account_key, audience=GOOGLE_TOKEN_AUDIENCE)
        except (ValueError, KeyError) as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}, {}
        if self.delegated_scopes is not None and not set(claims.get("scope", "").split()) <= self.delegated_scopes:
            # Google's answer names no scope: any one not granted refuses the whole request.
            return 401, {"error": "unauthorized_client", "error_description": "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested."}, {}
        self.assertions.append(claims)
        token = f"sa-token-{len(self.assertions)}"
        self.access_tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}, {}
