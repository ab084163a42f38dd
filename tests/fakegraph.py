"""A loopback HTTP server that speaks Microsoft Graph v1.0 (users, servicePrincipals,
oauth2PermissionGrants, paged by @odata.nextLink) and Entra ID's client-credentials token
endpoint. Tests load its data and script its faults; it records every request it answers."""

import base64
import json
import threading
import time
from urllib.parse import parse_qs

from .loopback import LoopbackJsonServer

TENANT = "contoso-tenant-id"
CLIENT_ID = "ballast-app-client-id"
CLIENT_SECRET = "s3cret~value-of-the-app"
LISTS = {"/v1.0/users": "users", "/v1.0/servicePrincipals": "service_principals", "/v1.0/oauth2PermissionGrants": "grants"}
DELTAS = {"/v1.0/users/delta": "users", "/v1.0/oauth2PermissionGrants/delta": "grants"}


def graph_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "innerError": {"request-id": "fake"}}}


def entra_error(error: str, code: int, words: str) -> dict:
    """The token endpoint's refusal as Entra ID sends it: the OAuth error, AADSTS words, codes."""
    return {"error": error, "error_description": f"AADSTS{code}: {words}\r\nTrace ID: 0f3c\r\nCorrelation ID: 9a1d\r\nTimestamp: 2026-12-04 10:00:00Z",
            "error_codes": [code], "timestamp": "2026-12-04 10:00:00Z", "trace_id": "0f3c", "correlation_id": "9a1d",
            "error_uri": "https://login.microsoftonline.com/error?code=" + str(code)}


class FakeGraph(LoopbackJsonServer):
    name = "fake-graph"

    def __init__(self, *, page_size: int = 999, expires_in: int = 3599):
        self.users: list[dict] = []
        self.service_principals: list[dict] = []
        self.grants: list[dict] = []
        self.page_size = page_size  # the most per page, whatever $top asks
        self.expires_in = expires_in
        self.token_uses: int | None = None  # a token stops working after this many calls (None: never)
        self.tokens: dict[str, int] = {}  # token → calls made with it
        self.token_requests: list[dict] = []
        self.requests: list[tuple[str, str, dict]] = []
        self.latency_s = 0.0  # each Graph request waits this long before its answer
        self.version = 0  # of the data, for delta queries: each logged change adds one
        self.log: list[tuple[int, str, str, frozenset | None]] = []  # (version, "users" | "grants", id, properties changed)
        self.delta_expired_before = 0  # a delta token of an older version is refused (410 Gone)
        self.may_revoke = True  # False: deleting a grant answers 403, as without DelegatedPermissionGrant.ReadWrite.All
        self.roles = ["User.Read.All", "Directory.Read.All", "DelegatedPermissionGrant.ReadWrite.All"]  # the token's "roles" claim
        self.deleted: list[str] = []  # ids of the grants deleted
        self._lock = threading.Lock()
        super().__init__()

    def load(self, users: list[dict], tokens: dict[str, list[dict]]) -> None:
        """Hold an organisation given in the Directory API's shape (see as_graph)."""
        self.users, self.service_principals, self.grants = as_graph(users, tokens)

    def config(self, **extra) -> dict:
        """A tenant's provider config that reaches this server."""
        return {"base_url": self.url, "login_url": self.url, "tenant_id": TENANT, "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET, "retry_base_ms": 1, "error_retry_base_ms": 1, **extra}

    def default_fault(self, status: int) -> dict:
        return graph_error("serviceNotAvailable", "scripted")

    def expected_tokens(self) -> dict[tuple[str, str], list[str]]:
        """(user id, app's client id) → the scopes a sync must store: every Principal grant's, each
        named with its resource ("Microsoft Graph: User.Read"), united per user and app."""
        principals = {sp["id"]: sp for sp in self.service_principals}
        expected: dict[tuple[str, str], set[str]] = {}
        for grant in self.grants:
            if grant["consentType"] == "Principal" and grant["clientId"] in principals:
                resource = principals[grant["resourceId"]]["displayName"] if grant.get("resourceId") in principals else grant.get("resourceId")
                key = (grant["principalId"], principals[grant["clientId"]]["appId"])
                expected.setdefault(key, set()).update(f"{resource}: {scope}" for scope in grant["scope"].split())
        return {key: sorted(scopes) for key, scopes in expected.items()}

    def paths(self, prefix: str = "") -> list[str]:
        return [path for _, path, _ in self.requests if path.startswith(prefix)]

    # --- answers ---------------------------------------------------------

    def _answer(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict, dict]:
        with self._lock:
            self.requests.append((method, path, query))
            scripted = self.scripted_answer(path)
            if scripted is not None:
                return scripted
        if method == "POST" and path == f"/{TENANT}/oauth2/v2.0/token":
            return self._token(body)
        if method == "POST":
            return 400, entra_error("invalid_request", 90002, "Tenant 'x' not found. Check to make sure you have the correct tenant ID"), {}
        token = headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            if token not in self.tokens or (self.token_uses is not None and self.tokens[token] >= self.token_uses):
                return 401, graph_error("InvalidAuthenticationToken", "Access token has expired or is not yet valid."), {}
            self.tokens[token] += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        if path in DELTAS:
            return self._delta(path, query, headers)
        if method == "DELETE":
            return self._delete_grant(path)
        if path not in LISTS:
            return 404, graph_error("Request_ResourceNotFound", f"Resource not found for the segment '{path}'."), {}
        rows = getattr(self, LISTS[path])
        if "$filter" in query:
            rows = self._filtered(rows, query["$filter"])
            if rows is None:
                return 400, graph_error("Request_UnsupportedQuery", "Unsupported or invalid query filter clause specified."), {}
        start = int(query.get("$skiptoken", 0))
        size = min(int(query.get("$top", 100)), self.page_size)
        answer = {"@odata.context": f"{self.url}/v1.0/$metadata#{LISTS[path]}", "value": rows[start : start + size]}
        if start + size < len(rows):
            # Graph's next link repeats the query and adds an opaque skip token.
            rest = "&".join(f"{k}={v}" for k, v in query.items() if k != "$skiptoken")
            answer["@odata.nextLink"] = f"{self.url}{path}?{rest}&$skiptoken={start + size}"
        return 200, answer, {}

    @staticmethod
    def _filtered(rows: list[dict], clause: str) -> list[dict] | None:
        """The filters Ballast sends: "id in ('a','b')" (at most 15 values, as Graph allows), and
        "prop eq 'value'" joined by "and"; None for anything else."""
        if clause.startswith("id in ("):
            ids = [v.strip().strip("'") for v in clause.removeprefix("id in (").removesuffix(")").split(",")]
            return None if len(ids) > 15 else [row for row in rows if row["id"] in ids]
        terms = [term.split(" eq ", 1) for term in clause.split(" and ")]
        if not all(len(term) == 2 and term[1].startswith("'") and term[1].endswith("'") for term in terms):
            return None
        wanted = {name.strip(): value[1:-1].replace("''", "'") for name, value in terms}
        return [row for row in rows if all(row.get(name) == value for name, value in wanted.items())]

    def _delete_grant(self, path: str) -> tuple[int, dict | None, dict]:
        ident = path.removeprefix("/v1.0/oauth2PermissionGrants/")
        if ident == path or "/" in ident:
            return 405, graph_error("Request_BadRequest", "Specified HTTP method is not allowed for the request target."), {}
        if not self.may_revoke:
            return 403, graph_error("Authorization_RequestDenied", "Insufficient privileges to complete the operation."), {}
        with self._lock:
            if not any(g["id"] == ident for g in self.grants):
                return 404, graph_error("Request_ResourceNotFound", f"Resource '{ident}' does not exist."), {}
        self.remove_grant(ident)
        self.deleted.append(ident)
        return 204, None, {}

    # --- delta queries: a log of what changed, by version --------------------------------

    def _changed(self, kind: str, ident: str, props: frozenset | None) -> None:
        """Log a change (props: the properties that changed; None: the whole object, new or removed)."""
        with self._lock:
            self.version += 1
            self.log.append((self.version, kind, ident, props))

    def add_user(self, user: dict) -> None:
        self.users.append(user)
        self._changed("users", user["id"], None)

    def update_user(self, ident: str, **props) -> None:
        next(u for u in self.users if u["id"] == ident).update(props)
        self._changed("users", ident, frozenset(props))

    def remove_user(self, ident: str) -> None:
        self.users = [u for u in self.users if u["id"] != ident]
        self._changed("users", ident, None)

    def add_grant(self, grant: dict) -> None:
        self.grants.append(grant)
        self._changed("grants", grant["id"], None)

    def update_grant(self, ident: str, scope: str) -> None:
        next(g for g in self.grants if g["id"] == ident)["scope"] = scope
        self._changed("grants", ident, None)  # a changed grant comes whole

    def remove_grant(self, ident: str) -> None:
        self.grants = [g for g in self.grants if g["id"] != ident]
        self._changed("grants", ident, None)

    def _delta(self, path: str, query: dict, headers) -> tuple[int, dict, dict]:
        """A delta query: the first round (no token) every object, else what changed after the
        token's version — a removed object by its id and "@removed", a changed user by its id and
        what changed, anything else whole — paged by nextLink, the last page with a deltaLink."""
        kind = DELTAS[path]
        prefer = str(headers.get("Prefer", ""))
        size = min(int(prefer.split("odata.maxpagesize=", 1)[1].split(",")[0]) if "odata.maxpagesize=" in prefer else 100, self.page_size)
        if "$skiptoken" in query:
            since, start, upto = (int(v) for v in query["$skiptoken"].split("."))
        else:
            since, start, upto = int(query.get("$deltatoken", -1)), 0, self.version
        if 0 <= since < self.delta_expired_before:
            return 410, graph_error("SyncStateNotFound", "The sync state generation is not found. Please retry without a delta token."), {}
        objects = {row["id"]: row for row in getattr(self, LISTS[f"/v1.0/{'users' if kind == 'users' else 'oauth2PermissionGrants'}"])}
        if since < 0:
            rows = list(objects.values())
        else:
            touched: dict[str, set | None] = {}
            for version, logged, ident, props in self.log:
                if logged == kind and since < version <= upto:
                    touched[ident] = None if props is None or touched.get(ident, set()) is None else touched.get(ident, set()) | props
            rows = []
            for ident, props in touched.items():
                if ident not in objects:
                    rows.append({"id": ident, "@removed": {"reason": "deleted"}})
                elif props is None or kind != "users":
                    rows.append(objects[ident])
                else:
                    rows.append({"id": ident, **{p: objects[ident].get(p) for p in props}})
        answer = {"@odata.context": f"{self.url}/v1.0/$metadata#{LISTS[path.removesuffix('/delta')]}", "value": rows[start : start + size]}
        if start + size < len(rows):
            answer["@odata.nextLink"] = f"{self.url}{path}?$skiptoken={since}.{start + size}.{upto}"
        else:
            answer["@odata.deltaLink"] = f"{self.url}{path}?$deltatoken={upto}"
        return 200, answer, {}

    def _token(self, body: bytes) -> tuple[int, dict, dict]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        self.token_requests.append(form)
        if form.get("grant_type") != "client_credentials" or form.get("scope") != "https://graph.microsoft.com/.default":
            return 400, entra_error("invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."), {}
        if form.get("client_id") != CLIENT_ID:
            return 400, entra_error("unauthorized_client", 700016, f"Application with identifier '{form.get('client_id')}' was not found "
                                    f"in the directory '{TENANT}'. You may have sent your authentication request to the wrong tenant."), {}
        if form.get("client_secret") != CLIENT_SECRET:
            return 401, entra_error("invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the "
                                    f"request is the client secret value, not the client secret ID, for a secret added to app '{CLIENT_ID}'."), {}
        # A JWT's shape, as Entra ID's: header.claims.signature, the claims naming the app's permissions.
        claims = base64.urlsafe_b64encode(json.dumps({"n": len(self.token_requests), "roles": self.roles}).encode()).decode().rstrip("=")
        token = f"eyJhbGciOiJub25lIn0.{claims}.fake"
        with self._lock:
            self.tokens[token] = 0
        return 200, {"token_type": "Bearer", "expires_in": self.expires_in, "ext_expires_in": self.expires_in, "access_token": token}, {}


GRAPH_RESOURCE, SHAREPOINT_RESOURCE = "sp-resource-graph", "sp-resource-sharepoint"  # APIs: they hold no grant


def as_graph(users: list[dict], tokens: dict[str, list[dict]], *, seed: int = 3) -> tuple[list[dict], list[dict], list[dict]]:
    """An organisation in the Directory API's shape (tests.conftest.demo_org) as Graph holds it:
    (users, service principals, grants). Every other token's scopes are split into a grant per
    resource, and the grants are shuffled, so one token's grants stand on different pages."""
    import random

    graph_users = [
        {"id": u["id"], "displayName": u["name"]["fullName"], "userPrincipalName": u["primaryEmail"],
         "mail": None if n % 5 == 0 else u["primaryEmail"],  # some without mail: the UPN is the email
         "accountEnabled": not u.get("suspended", False), "createdDateTime": u.get("creationTime")}
        for n, u in enumerate(users)
    ]
    apps = {t["clientId"]: t["displayText"] for ts in tokens.values() for t in ts}
    principals = [{"id": f"sp-{client}", "appId": client, "displayName": name} for client, name in apps.items()]
    principals += [{"id": GRAPH_RESOURCE, "appId": "00000003-0000-0000-c000-000000000000", "displayName": "Microsoft Graph"},
                   {"id": SHAREPOINT_RESOURCE, "appId": "00000003-0000-0ff1-ce00-000000000000", "displayName": "SharePoint"}]
    grants = []
    for user_id, granted in tokens.items():
        for n, token in enumerate(granted):
            scopes = token["scopes"]
            parts = [(GRAPH_RESOURCE, scopes)] if n % 2 or len(scopes) < 2 else [(GRAPH_RESOURCE, scopes[::2]), (SHAREPOINT_RESOURCE, scopes[1::2])]
            for resource, part in parts:
                grants.append({"id": f"grant-{len(grants)}", "clientId": f"sp-{token['clientId']}", "consentType": "Principal",
                               "principalId": user_id, "resourceId": resource, "scope": " ".join(part)})
    random.Random(seed).shuffle(grants)
    return graph_users, principals, grants
