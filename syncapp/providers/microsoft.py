"""Microsoft Entra ID through Microsoft Graph v1.0: users, service principals and delegated
permission grants (oauth2PermissionGrants), as an app with a client secret (client credentials).

Users and grants are read by delta queries (/users/delta, /oauth2PermissionGrants/delta): a
full read is a delta query's first round, whose last page gives the deltaLink from which a
changes step reads what changed since (syncapp.steps.delta).

Records leave in the shape the rest of Ballast reads (Google's users.list items; see base.py),
so validation, writers and counters are the same for every provider. Lists are paged by
"@odata.nextLink", an absolute URL followed as given — only on base_url's own host, so the
bearer token never goes anywhere else. Retries as every HTTP provider (providers/http.py).
"""

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import urllib3

from .base import Check, DeltaExpired, Page, ProviderError, Revoked, require_str
from .http import HTTP_CONFIG_KEYS, HttpProvider, clean_http_config, connection_problem

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# The application permissions (admin-consented) each read needs: the users' delta query reads
# with User.Read.All; the grants' delta query needs Directory.Read.All (Graph's least privilege
# for it), which also covers the service principals.
PERMISSIONS = {"users": "User.Read.All", "tokens": "Directory.Read.All"}
REVOKE_PERMISSION = "DelegatedPermissionGrant.ReadWrite.All"
GRANTS_PATH, PRINCIPALS_PATH = "/v1.0/oauth2PermissionGrants", "/v1.0/servicePrincipals"
PAGE_SIZE = 999  # Graph's most per page for these lists
USERS_DELTA, GRANTS_DELTA = "/v1.0/users/delta", "/v1.0/oauth2PermissionGrants/delta"
FILTER_VALUES = 15  # Graph's most values for the `in` operator of a $filter
USER_FIELDS = "id,displayName,userPrincipalName,mail,accountEnabled,createdDateTime"
# Renew a token this long before it expires (a tenth of its life, at most five minutes), so a
# call never carries one that lapses on the way.
RENEW_SHARE, RENEW_AT_MOST_S = 0.1, 300.0
EXPIRED_TOKEN = "InvalidAuthenticationToken"  # Graph's code for a token it no longer takes


# What to check when Entra ID's token endpoint refuses, by its AADSTS error code (the answer's
# "error_codes"), else by the OAuth error: said once here, for sync errors and `tenant test` alike.
SECRET_HINT = "check client_id and client_secret: the secret may have expired"
APP_HINT = "check client_id and tenant_id: no application with that client_id is registered in that tenant"
TENANT_HINT = "check tenant_id: Entra ID knows no such tenant"
HINTS_BY_CODE = {7000215: SECRET_HINT, 7000222: SECRET_HINT, 700016: APP_HINT, 90002: TENANT_HINT, 900023: TENANT_HINT}
HINTS_BY_ERROR = {(401, "invalid_client"): SECRET_HINT, (401, "unauthorized_client"): SECRET_HINT,
                  (400, "unauthorized_client"): APP_HINT, (400, "invalid_tenant"): TENANT_HINT}


def token_refusal_hint(status: int, body) -> str | None:
    codes = body.get("error_codes") if isinstance(body, dict) else None
    for code in codes if isinstance(codes, list) else []:
        if code in HINTS_BY_CODE:
            return HINTS_BY_CODE[code]
    return HINTS_BY_ERROR.get((status, body.get("error") if isinstance(body, dict) else None))


def as_directory_user(user: dict) -> dict:
    """A Graph user → a users.list-shaped record (email: mail, else the user principal name),
    with only what the answer holds: a delta query gives a changed user by its id and what
    changed, and what it leaves out is unknown, not empty. "@removed" is kept."""
    if not isinstance(user, dict):
        return user  # validation counts it invalid
    record = {"id": user.get("id")}
    if "@removed" in user:
        record["@removed"] = user["@removed"]
    if user.get("mail") or "userPrincipalName" in user:
        record["primaryEmail"] = user.get("mail") or user.get("userPrincipalName")
    if "displayName" in user:
        record["name"] = {"fullName": user.get("displayName") or ""}
    if "createdDateTime" in user:
        record["creationTime"] = user.get("createdDateTime")
    if isinstance(user.get("accountEnabled"), bool):
        record["suspended"] = not user["accountEnabled"]
    return record


class MicrosoftProvider(HttpProvider):
    name = "microsoft"
    lists_tokens = True  # one list of grants for the organisation, not a call per user
    has_changes_feed = tracks_deltas = True
    config_keys = ("tenant_id", "client_id", "client_secret", *HTTP_CONFIG_KEYS, "login_url")
    revocable = True  # DELETE oauth2PermissionGrants/{id}, with DelegatedPermissionGrant.ReadWrite.All

    def __init__(self, config: dict, *, sleep: Callable[[float], None] = time.sleep):
        super().__init__(config, sleep=sleep)
        # A delta query's page size is asked for in this header ($top is for plain lists).
        self._http.headers["Prefer"] = f"odata.maxpagesize={PAGE_SIZE}"
        self._token: tuple[str, float] | None = None  # (access token, monotonic time to renew it)
        self._token_lock = threading.Lock()

    @classmethod
    def clean_config(cls, config: dict) -> dict:
        cleaned = {
            **clean_http_config(config, base_url="https://graph.microsoft.com"),
            "login_url": require_str(config, "login_url", "https://login.microsoftonline.com").rstrip("/"),
            "tenant_id": require_str(config, "tenant_id"),
            "client_id": require_str(config, "client_id"),
            "client_secret": require_str(config, "client_secret"),
        }
        return cleaned

    @staticmethod
    def error_of(response: urllib3.BaseHTTPResponse) -> tuple[str, str | None]:
        """Graph's {"error": {"code", "message"}}: the message, and the code as the reason."""
        try:
            error = json.loads(response.data)["error"]
            return str(error.get("message") or response.reason), error.get("code")
        except (ValueError, KeyError, TypeError, AttributeError):
            return response.reason or "error", None

    def targets(self) -> dict[str, str]:
        base = self.config["base_url"]
        return {"users": f"users (GET {base}{USERS_DELTA})",
                "tokens": f"grants (GET {base}/v1.0/servicePrincipals, then {base}{GRANTS_DELTA})"}

    def failed(self, name: str, target: str, exc: ProviderError) -> Check:
        if exc.status == 403:
            return Check(name, target, False, f"{exc}: grant the app the application permission {PERMISSIONS[name]} "
                         "and an administrator's consent", missing_scope=PERMISSIONS[name])
        return super().failed(name, target, exc)

    # --- the token -----------------------------------------------------------

    def _authorization(self) -> str:
        with self._token_lock:
            if self._token is None or time.monotonic() >= self._token[1]:
                self._token = self._fetch_token()
            return f"Bearer {self._token[0]}"

    def _fetch_token(self) -> tuple[str, float]:
        """Client credentials at {login_url}/{tenant_id}/oauth2/v2.0/token. A refusal fails with
        Entra ID's own words (AADSTS…): retrying a wrong secret will not help."""
        url = f"{self.config['login_url']}/{self.config['tenant_id']}/oauth2/v2.0/token"
        form = {"grant_type": "client_credentials", "client_id": self.config["client_id"],
                "client_secret": self.config["client_secret"], "scope": GRAPH_SCOPE}
        try:
            response = self._http.request("POST", url, fields=form, encode_multipart=False)
        except urllib3.exceptions.HTTPError as exc:
            raise ProviderError(f"token: connection error: {connection_problem(exc)} {self.config['login_url']} ({exc.__class__.__name__})") from None
        try:
            body = json.loads(response.data)
        except ValueError:
            body = {}
        if response.status != 200 or not isinstance(body, dict) or not body.get("access_token"):
            words = body.get("error_description") or body.get("error") or response.reason if isinstance(body, dict) else response.reason
            words = str(words).splitlines()[0] if words else response.status  # the AADSTS words; trace and correlation ids follow
            reason = body.get("error") if isinstance(body, dict) else None
            hint = token_refusal_hint(response.status, body)
            raise ProviderError(f"token refused by {self.config['login_url']} ({response.status}): {words}{f' ({hint})' if hint else ''}",
                                status=response.status, reason=reason)
        try:
            lifetime = max(float(body.get("expires_in", 3599)), 0.0)
        except (TypeError, ValueError):
            lifetime = 3599.0  # Entra ID's usual hour, when the answer does not say
        return body["access_token"], time.monotonic() + lifetime - min(RENEW_AT_MOST_S, lifetime * RENEW_SHARE)

    def _call(self, url: str, params: dict | None, *, label: str) -> dict:
        """A GET; a token Graph no longer takes (revoked, or its clock ahead of ours) is renewed
        once. A delta link Graph no longer knows (410 Gone) is DeltaExpired."""
        try:
            return self._get(url, params, label=label)
        except ProviderError as exc:
            if exc.status == 410:
                raise DeltaExpired(f"GET {label}: Graph no longer knows the delta link (410 Gone): read again from the whole state",
                                   status=410, reason=exc.reason) from None
            if exc.status != 401 or exc.reason != EXPIRED_TOKEN:
                raise
            with self._token_lock:
                self._token = None
            return self._get(url, params, label=label)

    # --- revocation ---------------------------------------------------------------

    def revocation_check(self, checks: list[Check]) -> Check:
        """From the access token's roles (the application permissions it was consented), as Entra
        ID writes them in the token: nothing is called, nothing deleted."""
        target = f"DELETE {self.config['base_url']}{GRANTS_PATH}/ID ({REVOKE_PERMISSION})"
        roles = token_roles(self._token[0]) if self._token else None
        if roles is None:
            return Check("revoke", target, None, "not known: the access token does not say which permissions it holds")
        if REVOKE_PERMISSION in roles:
            return Check("revoke", target, True, f"granted: the app holds {REVOKE_PERMISSION}")
        return Check("revoke", target, False, f"not granted: to revoke from Ballast, grant the app the application permission "
                     f"{REVOKE_PERMISSION} and an administrator's consent (syncs do not need it)")

    @staticmethod
    def revocation_key(email: str, external_id: str) -> str:
        return external_id  # a grant names its user by object id (principalId)

    def _user_grants(self, user_id: str, app_id: str) -> list[dict]:
        """The user's own (Principal) grants to the application: its service principal found by appId."""
        found = self._call(self.config["base_url"] + PRINCIPALS_PATH, {"$filter": f"appId eq '{_quoted(app_id)}'", "$select": "id"},
                           label=PRINCIPALS_PATH).get("value") or []
        if not found:
            return []  # the application is gone from the tenant, and its grants with it
        query = {"$filter": f"clientId eq '{_quoted(found[0]['id'])}' and principalId eq '{_quoted(user_id)}'"}
        grants = self._call(self.config["base_url"] + GRANTS_PATH, query, label=GRANTS_PATH).get("value") or []
        return [g for g in grants if g.get("consentType") == "Principal" and g.get("principalId") == user_id]

    def revoke_token(self, user_key: str, client_id: str) -> Revoked:
        """Each Principal grant of the user to the application, deleted. An administrator's consent
        for everyone (AllPrincipals) is not the user's to lose, and stays."""
        grants = self._user_grants(user_key, client_id)
        for grant in grants:  # one removed meanwhile (its 404) is gone all the same
            path = f"{GRANTS_PATH}/{quote(str(grant['id']), safe='')}"
            self._revoke(self.config["base_url"] + path, label=path,
                         needs=f"the application permission {REVOKE_PERMISSION}, with an administrator's consent")
        return Revoked.REVOKED if grants else Revoked.GONE

    def still_granted(self, user_key: str, client_id: str) -> bool:
        return bool(self._user_grants(user_key, client_id))

    # --- lists -----------------------------------------------------------------

    def _pages(self, path: str, params: dict, page_token: str | None) -> Iterator[Page]:
        """A Graph list, page by page; each page's token is the nextLink that fetched it."""
        base = self.config["base_url"]
        while True:
            if page_token is not None and not page_token.startswith(base + "/"):
                raise ProviderError(f"GET {path}: the next page is on another host ({page_token.split('?', 1)[0]}); base_url is {base}")
            url = page_token or base + path
            body = self._call(url, None if page_token else params, label=path)
            values = body.get("value") if isinstance(body, dict) else None
            if not isinstance(values, list):
                raise ProviderError(f"GET {path}: 'value' is not a list")
            next_token = body.get("@odata.nextLink") or None
            delta_link = None if next_token else body.get("@odata.deltaLink") or None
            yield Page(values, token=page_token, next_token=next_token, delta_link=delta_link)
            if next_token is None:
                return
            page_token = next_token

    def user_pages(self, page_token: str | None = None) -> Iterator[Page]:
        """Every user (the first round of the users' delta query; its last page has the deltaLink)."""
        return self.user_changes(None, page_token)

    def user_changes(self, delta_link: str | None, page_token: str | None = None) -> Iterator[Page]:
        """Users changed since delta_link (None: every user), as Graph gives them: a new user
        whole, a changed one by its id and at least what changed, a removed one by its id and
        "@removed" — each as a users.list-shaped record (as_directory_user). The last page has
        the next deltaLink."""
        for page in self._pages(USERS_DELTA, {"$select": USER_FIELDS}, page_token or delta_link):
            yield Page([as_directory_user(user) for user in page.records], token=page.token, next_token=page.next_token,
                       delta_link=page.delta_link)

    def grant_changes(self, delta_link: str | None, page_token: str | None = None) -> Iterator[Page]:
        """Delegated permission grants changed since delta_link (None: every grant): a new or
        changed grant whole, a removed one by its id and "@removed"."""
        return self._pages(GRANTS_DELTA, {}, page_token or delta_link)

    def listed_grants(self, grants: list, applications: dict[str, tuple[str, str]]) -> list:
        """Grants of a delta page as token_pages gives them (see listed_grants)."""
        return listed_grants(grants, applications)

    def service_principals(self, object_ids: list[str]) -> dict[str, tuple[str, str]]:
        """Service principals by object id → (their app's client id, their name), a call per 15
        ids (Graph's most values for `in` in a filter); an id Graph has no principal for is left out."""
        found = {}
        for start in range(0, len(object_ids), FILTER_VALUES):
            ids = ",".join("'" + i.replace("'", "''") + "'" for i in object_ids[start : start + FILTER_VALUES])
            for page in self._pages("/v1.0/servicePrincipals", {"$filter": f"id in ({ids})", "$select": "id,appId,displayName"}, None):
                found |= {sp["id"]: (sp.get("appId"), sp.get("displayName") or "") for sp in page.records
                          if isinstance(sp, dict) and isinstance(sp.get("id"), str) and isinstance(sp.get("appId"), str)}
        return found

    def service_principal_pages(self, page_token: str | None = None) -> Iterator[Page]:
        """Service principals: {id (object id), appId (the app's client id), displayName}."""
        return self._pages("/v1.0/servicePrincipals", {"$select": "id,appId,displayName", "$top": PAGE_SIZE}, page_token)

    def grant_pages(self, page_token: str | None = None) -> Iterator[Page]:
        """Delegated permission grants: {id, clientId (a service principal's object id),
        consentType "Principal" | "AllPrincipals", principalId, resourceId, scope}; the first
        round of their delta query (its last page has the deltaLink)."""
        return self.grant_changes(None, page_token)

    def _applications(self) -> dict[str, tuple[str, str]]:
        """Every service principal's object id → (its app's client id, its name). Grants name
        applications by object id; read whole first (one entry per app in the organisation)."""
        return {
            sp["id"]: (sp.get("appId"), sp.get("displayName") or "")
            for page in self.service_principal_pages() for sp in page.records
            if isinstance(sp, dict) and isinstance(sp.get("id"), str)
        }

    def token_pages(self, page_token: str | None = None) -> Iterator[Page]:
        """The organisation's delegated grants as tokens.list items, a page of grants at a time
        (the page token is the grants list's nextLink):
        - a Principal grant → {"userKey": the user's id, "clientId": the app's client id,
          "displayText", "scopes"}; one user's grants to one app for several resources on a page
          come as one record, scopes united;
        - an AllPrincipals grant (admin consent) → {"clientId", "displayText", "orgScopes"}, no
          userKey: the application's org-wide scopes, no token.
        A grant whose service principal is unknown comes without a clientId, to be counted invalid."""
        applications = self._applications()
        for page in self.grant_pages(page_token):
            yield Page(listed_grants(page.records, applications), token=page.token, next_token=page.next_token, delta_link=page.delta_link)


def listed_grants(grants: list, applications: dict[str, tuple[str, str]]) -> list:
    """Grants → tokens.list-shaped records (see token_pages), one per user and app, scopes united;
    `applications` maps service principals' object ids to (client id, name)."""
    records: dict[tuple, dict] = {}
    for grant in grants:
        key, record, field = grant_record(grant, applications)
        if key is None:
            key = ("invalid", len(records))  # validation counts it invalid
        known = records.get(key)
        if known is not None and isinstance(known.get(field), list) and isinstance(record[field], list):
            known[field] = sorted(set(known[field]) | set(record[field]))
            known["grants"] += record["grants"]
        else:
            records[key] = record
    return list(records.values())


def resource_scopes(resource: str, scope) -> list[str] | object:
    """A grant's space-separated scope, each named with its resource: "Microsoft Graph: Mail.Read"
    is not SharePoint's "Mail.Read". Anything but text is left for validation to refuse."""
    if not isinstance(scope, str):
        return scope
    return [f"{resource}: {name}" for name in scope.split()]


def grant_record(grant, applications: dict[str, tuple[str, str]]) -> tuple[tuple | None, dict | object, str]:
    """One oauth2PermissionGrant → (the key records of one user and app share, a tokens.list-shaped
    record, the field its scopes are in); the key is None for what validation must count invalid.
    The resource is named by its service principal's display name (its object id when unknown)."""
    if not isinstance(grant, dict):
        return None, grant, "scopes"
    client_id, name = applications.get(grant.get("clientId"), (None, ""))
    resource = resource_name(grant.get("resourceId"), applications)
    scopes = resource_scopes(resource, grant.get("scope"))
    if grant.get("consentType") == "AllPrincipals":
        key, record, field = ("org", client_id), {"clientId": client_id, "displayText": name, "orgScopes": scopes}, "orgScopes"
    else:
        key, field = (grant.get("principalId"), client_id), "scopes"
        record = {"userKey": grant.get("principalId"), "clientId": client_id, "displayText": name, "scopes": scopes}
    # Each grant as the changes step keeps it (syncapp.models.DelegatedGrant).
    record["grants"] = [{"id": grant.get("id"), "clientObjectId": grant.get("clientId"), "resourceObjectId": grant.get("resourceId"),
                         "resource": resource, "scopes": scopes}]
    return (None if client_id is None else key), record, field


def resource_name(object_id, applications: dict[str, tuple[str, str]]) -> str:
    """An API's display name by its service principal's object id (the id itself when unknown)."""
    return applications.get(object_id, (None, ""))[1] or (object_id if isinstance(object_id, str) and object_id else "unknown API")


def _quoted(value: str) -> str:
    """A string inside an OData $filter's quotes (a quote doubled)."""
    return value.replace("'", "''")


def token_roles(access_token: str) -> list[str] | None:
    """The "roles" claim of an Entra ID access token (a JWT), read without checking its signature:
    it only says what the token claims, for a person to read. None when it is not a JWT."""
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    roles = claims.get("roles") if isinstance(claims, dict) else None
    return [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []
