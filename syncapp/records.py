"""Validate provider records (Directory API shape) into the fields we store.

A bad record raises InvalidRecord with a short reason; the step counts it, keeps
a sample and goes on. Limits come from the model fields, so they cannot drift.
"""

from datetime import datetime, timezone
from functools import cache

from .models import Application, DirectoryUser, StagedToken

NEVER_PREFIX = "1970-01-01"
# Each stored field and the record field it comes from (the Directory API's name, subfields joined
# by "."): a source that lacks a record field (a file without that column) leaves the stored one be.
USER_SOURCES = {
    "primary_email": "primaryEmail", "full_name": "name.fullName", "is_admin": "isAdmin", "is_delegated_admin": "isDelegatedAdmin",
    "is_suspended": "suspended", "is_archived": "archived", "org_unit": "orgUnitPath", "last_login_at": "lastLoginTime",
    "created_at_source": "creationTime",
}
TOKEN_SOURCES = {"display_name": "displayText", "native_app": "nativeApp", "anonymous": "anonymous", "scopes": "scopes"}


def stored_fields(sources: dict[str, str], given: frozenset[str] | None) -> tuple[str, ...]:
    """The stored fields a source gives values for, from the record fields it gives (None: all)."""
    return tuple(stored for stored, field in sources.items() if given is None or field in given)


class InvalidRecord(ValueError):
    def __init__(self, reason: str, key: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.key = key  # the record's id when it had a usable one


@cache
def _max_length(model, field: str) -> int:
    return model._meta.get_field(field).max_length


class Unreadable:
    """A record a source could not read at all (a line of a file that does not parse): it is
    counted invalid, for its reason, where it stands."""

    def __init__(self, reason: str):
        self.reason = reason


def _object(raw) -> dict:
    if isinstance(raw, Unreadable):
        raise InvalidRecord(raw.reason)
    if not isinstance(raw, dict):
        raise InvalidRecord("record is not an object")
    return raw


def text_field(raw, name: str, limit: int, *, required: bool = False, key: str | None = None) -> str:
    if raw is None or raw == "":
        if required:
            raise InvalidRecord(f"missing {name}", key)
        return ""
    if not isinstance(raw, str):
        raise InvalidRecord(f"{name} is not text", key)
    if "\x00" in raw:
        raise InvalidRecord(f"{name} contains a NUL byte", key)
    if not is_unicode(raw):
        raise InvalidRecord(f"{name} is not Unicode text (a lone surrogate)", key)
    if len(raw) > limit:
        raise InvalidRecord(f"{name} longer than {limit} characters", key)
    return raw


def is_unicode(text: str) -> bool:
    """Whether the text can be written as UTF-8: JSON may carry a lone surrogate ("\\ud800"),
    which no database takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(raw) -> bool:
    """Text a database takes: no NUL, no lone surrogate."""
    return isinstance(raw, str) and "\x00" not in raw and is_unicode(raw)


def scope_list(raw, name: str, key: str | None) -> list[str]:
    """A list of scopes (absent: none), each text a database takes."""
    scopes = raw or []
    if not isinstance(scopes, list) or not all(s and _storable(s) for s in scopes):
        raise InvalidRecord(f"{name} is not a list of text", key)
    return scopes


def _flag(raw, name: str, key: str | None) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise InvalidRecord(f"{name} is not true or false", key)
    return raw


def timestamp(raw, name: str, key: str | None = None) -> datetime | None:
    """An RFC 3339 time with its zone; None when absent (or the API's 1970 for never)."""
    if raw in (None, "") or (isinstance(raw, str) and raw.startswith(NEVER_PREFIX)):
        return None
    try:
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRecord(f"{name} is not a timestamp", key) from None
    if moment.tzinfo is None:
        raise InvalidRecord(f"{name} has no time zone", key)
    try:
        moment.astimezone(timezone.utc)  # as the database stores it
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise InvalidRecord(f"{name} is out of range", key) from None
    return moment


def _usable_key(raw, limit: int) -> str | None:
    """The record's key, when it is one a sample may name."""
    try:
        return text_field(raw, "key", limit, required=True)
    except InvalidRecord:
        return None


def clipped_text(raw, limit: int) -> str:
    """Text a database takes, cut to `limit`; "" for anything else (a label not worth a record)."""
    return raw[:limit] if _storable(raw) else ""


def parse_user(raw: dict) -> dict:
    """A users.list item → DirectoryUser fields (external_id is the key)."""
    raw = _object(raw)
    key = _usable_key(raw.get("id"), _max_length(DirectoryUser, "external_id"))
    external_id = text_field(raw.get("id"), "id", _max_length(DirectoryUser, "external_id"), required=True, key=key)
    email = text_field(raw.get("primaryEmail"), "primaryEmail", _max_length(DirectoryUser, "primary_email"), required=True, key=key)
    if "@" not in email:
        raise InvalidRecord("primaryEmail has no @", key)
    name = raw.get("name") if isinstance(raw.get("name"), dict) else {}
    return {
        "external_id": external_id,
        "primary_email": email,
        "full_name": text_field(name.get("fullName"), "name.fullName", _max_length(DirectoryUser, "full_name"), key=key),
        "is_admin": _flag(raw.get("isAdmin"), "isAdmin", key),
        "is_delegated_admin": _flag(raw.get("isDelegatedAdmin"), "isDelegatedAdmin", key),
        "is_suspended": _flag(raw.get("suspended"), "suspended", key),
        "is_archived": _flag(raw.get("archived"), "archived", key),
        "org_unit": text_field(raw.get("orgUnitPath"), "orgUnitPath", _max_length(DirectoryUser, "org_unit"), key=key),
        "last_login_at": timestamp(raw.get("lastLoginTime"), "lastLoginTime", key),
        "created_at_source": timestamp(raw.get("creationTime"), "creationTime", key),
    }


def parse_token(raw: dict) -> dict:
    """A tokens.list item → the application and token fields (client_id is the key)."""
    raw = _object(raw)
    limit = _max_length(Application, "client_id")
    key = _usable_key(raw.get("clientId"), limit)
    client_id = text_field(raw.get("clientId"), "clientId", limit, required=True, key=key)
    scopes = scope_list(raw.get("scopes"), "scopes", key)
    native = _flag(raw.get("nativeApp"), "nativeApp", key)
    return {
        "client_id": client_id,
        "display_name": text_field(raw.get("displayText"), "displayText", _max_length(Application, "display_name"), key=key),
        "native_app": native,
        "anonymous": _flag(raw.get("anonymous"), "anonymous", key),
        "scopes": sorted(set(scopes)),
    }


def parse_listed_token(raw) -> dict:
    """An item of a list of every token (Microsoft's grants, a token export) → StagedToken fields:
    a tokens.list item with its user — "userKey", the user's id (or, lacking one, email), and
    "user", the email — or, with "orgScopes" and no user, an administrator's consent for the whole
    organisation (user_key "": the application's org-wide scopes, no token), or, "tokenless", a
    user the list names as having no token (client_id "": it only says the list covers the user)."""
    raw = _object(raw)
    if raw.get("orgScopes") is not None and not raw.get("userKey"):
        token = parse_token({**raw, "scopes": raw["orgScopes"]})
        return {**token, "user_key": "", "email": ""}
    if raw.get("tokenless"):
        token = {"client_id": "", "display_name": "", "native_app": False, "anonymous": False, "scopes": []}
    else:
        token = parse_token(raw)
    key = token["client_id"] or None
    user_key = text_field(raw.get("userKey"), "userKey", _max_length(StagedToken, "user_key"), required=True, key=key)
    if "@" not in user_key and len(user_key) > _max_length(DirectoryUser, "external_id"):
        raise InvalidRecord(f"userKey longer than {_max_length(DirectoryUser, 'external_id')} characters", key)
    if "\x1f" in user_key or "\x1f" in token["client_id"]:  # the stage joins the two with it (steps/tokenlist.py)
        raise InvalidRecord("userKey or clientId contains a control character", key)
    email = text_field(raw.get("user"), "user", _max_length(DirectoryUser, "primary_email"), key=key)
    return {**token, "user_key": user_key, "email": email}
