"""What Google's APIs really send, from their published Discovery documents (admin directory_v1,
admin reports_v1): each resource's fields, the records as a users.list, tokens.list or
activities.list answer holds them (read-only fields a sync never asks for included), and the
partial-response syntax of `fields=` ("a,b/c,d(e,f)"), which Google refuses for a field its
schema lacks."""

import hashlib

# A schema: field → its subfields' schema, or None for a value (a string, number, list of them).
USER_NAME = {"givenName": None, "familyName": None, "fullName": None, "displayName": None}
USER = {
    **dict.fromkeys((
        "addresses", "agreedToTerms", "aliases", "archived", "changePasswordAtNextLogin", "creationTime", "customSchemas",
        "customerId", "deletionTime", "emails", "etag", "externalIds", "gender", "hashFunction", "id", "ims",
        "includeInGlobalAddressList", "ipWhitelisted", "isAdmin", "isDelegatedAdmin", "isEnforcedIn2Sv", "isEnrolledIn2Sv",
        "isMailboxSetup", "keywords", "kind", "languages", "lastLoginTime", "locations", "nonEditableAliases", "notes",
        "orgUnitPath", "organizations", "password", "phones", "posixAccounts", "primaryEmail", "recoveryEmail", "recoveryPhone",
        "relations", "sshPublicKeys", "suspended", "suspensionReason", "thumbnailPhotoEtag", "thumbnailPhotoUrl", "websites",
    )),
    "name": USER_NAME,
}
USERS_LIST = {"kind": None, "etag": None, "nextPageToken": None, "trigger_event": None, "users": USER}
TOKEN = dict.fromkeys(("anonymous", "clientId", "displayText", "etag", "kind", "nativeApp", "scopes", "userKey"))
TOKENS_LIST = {"kind": None, "etag": None, "items": TOKEN}
PARAMETER = dict.fromkeys(("name", "value", "multiValue", "intValue", "boolValue", "multiIntValue", "messageValue", "multiMessageValue"))
ACTIVITY = {
    "kind": None, "etag": None, "ownerDomain": None, "ipAddress": None,
    "id": dict.fromkeys(("time", "uniqueQualifier", "applicationName", "customerId")),
    "actor": dict.fromkeys(("profileId", "email", "callerType", "key", "applicationInfo")),
    "events": {"type": None, "name": None, "parameters": PARAMETER, "resourceIds": None},
}
ACTIVITIES_LIST = {"kind": None, "etag": None, "nextPageToken": None, "items": ACTIVITY}


class FieldSelectionError(ValueError):
    """A `fields=` value Google would refuse (400 invalidParameter): its message names the field."""


def parse_fields(text: str) -> dict:
    """"a,b/c,d(e,f)" → {"a": None, "b": {"c": None}, "d": {"e": None, "f": None}} (None: the whole value)."""
    tree, rest = _selection(text.replace(" ", ""), 0)
    if rest != len(text.replace(" ", "")):
        raise FieldSelectionError(f"Invalid field selection {text}")
    return tree


def _selection(text: str, at: int) -> tuple[dict, int]:
    tree: dict = {}
    while True:
        start = at
        while at < len(text) and text[at] not in ",()":
            at += 1
        path = text[start:at].split("/")
        if not all(path):
            raise FieldSelectionError(f"Invalid field selection {text}")
        sub = None
        if at < len(text) and text[at] == "(":
            sub, at = _selection(text, at + 1)
            if at >= len(text) or text[at] != ")":
                raise FieldSelectionError(f"Invalid field selection {text}")
            at += 1
        node: dict | None = tree
        for name in path[:-1]:
            if node.get(name, {}) is None:  # the whole of it is selected already
                node = None
                break
            node = node.setdefault(name, {})
        if node is not None:
            node[path[-1]] = _merged(node[path[-1]], sub) if path[-1] in node else sub
        if at < len(text) and text[at] == ",":
            at += 1
            continue
        return tree, at


def _merged(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None:
        return None
    return {**a, **{k: _merged(a[k], v) if k in a else v for k, v in b.items()}}


def check_fields(tree: dict, schema: dict, where: str = "") -> None:
    """FieldSelectionError for a field the schema does not have, as Google answers it."""
    for name, sub in tree.items():
        if name not in schema:
            raise FieldSelectionError(f"Invalid field selection {where}{name}")
        if sub is not None:
            if schema[name] is None:
                raise FieldSelectionError(f"Invalid field selection {where}{name}: it has no subfields")
            check_fields(sub, schema[name], f"{where}{name}/")


def select(value, tree: dict | None):
    """The value with only the selected fields (a list: each item's)."""
    if tree is None:
        return value
    if isinstance(value, list):
        return [select(item, tree) for item in value]
    if isinstance(value, dict):
        return {name: select(value[name], sub) for name, sub in tree.items() if name in value}
    return value


def _etag(*parts) -> str:
    return '"' + hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:27] + '"'


def served_user(user: dict, customer: str = "C01abc234") -> dict:
    """A users.list item as Google sends it (projection basic): the record's fields, and the
    read-only ones every answer carries."""
    email = user.get("primaryEmail", "")
    return {
        "kind": "admin#directory#user", "id": user.get("id"), "etag": _etag("user", user.get("id")),
        "primaryEmail": email, "name": {"givenName": "", "familyName": "", **(user.get("name") or {})},
        "isAdmin": False, "isDelegatedAdmin": False, "lastLoginTime": "1970-01-01T00:00:00.000Z",
        "creationTime": "2020-01-01T00:00:00.000Z", "agreedToTerms": True, "suspended": False, "archived": False,
        "changePasswordAtNextLogin": False, "ipWhitelisted": False,
        "emails": [{"address": email, "primary": True}], "languages": [{"languageCode": "en", "preference": "preferred"}],
        "nonEditableAliases": [email.replace("@", "@test-google-a.")] if "@" in email else [],
        "customerId": customer, "orgUnitPath": "/", "isMailboxSetup": True, "isEnrolledIn2Sv": False,
        "isEnforcedIn2Sv": False, "includeInGlobalAddressList": True,
        "thumbnailPhotoUrl": f"https://lh3.google.com/ao/{hashlib.sha1(email.encode()).hexdigest()}",
        "thumbnailPhotoEtag": _etag("photo", email),
        **{k: v for k, v in user.items() if k != "name"},
    }


def served_token(token: dict, user_key: str) -> dict:
    """A tokens.list item as Google sends it: with its kind, etag and the user's id."""
    return {"kind": "admin#directory#token", "etag": _etag("token", user_key, token.get("clientId")), "userKey": user_key,
            "anonymous": False, "nativeApp": False, "scopes": [], **token}
