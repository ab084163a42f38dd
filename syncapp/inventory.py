"""The inventory for machines: one record shape per token and per application, read by the API
(/api/v1/tokens/, /api/v1/applications/), `manage.py export` and the admin's export action,
and the filters they share. Exports stream: rows are read in chunks and written as they come,
so memory stays flat however large the tenant."""

import csv
import json
from collections.abc import Iterable, Iterator

from django.db import connection
from django.db.models import Q, QuerySet

from .models import Application, DirectoryUser, GrantEvent, Risk, Token

RISKS = {label: value for value, label in Risk.choices}
CHUNK = 2_000  # rows read per round trip while streaming


def iso(value) -> str | None:
    return value.isoformat() if value else None


def holding_scope(scope: str) -> Q:
    """Tokens (or applications) holding this scope, whole: in a JSON list's text each scope stands
    in quotes, written as the database writes JSON (PostgreSQL keeps non-ASCII as it is)."""
    quoted = json.dumps(scope, ensure_ascii=connection.vendor != "postgresql")
    return Q(scopes__icontains=quoted)


def changed_since(tenant_id: int, since) -> Q:
    """Tokens with a timeline entry (granted, scopes changed, revoked, granted again) at or after since."""
    return Q(pk__in=GrantEvent.objects.filter(tenant_id=tenant_id, at__gte=since).values("token_id"))


def tokens_of(tenant_id: int) -> QuerySet:
    return Token.objects.filter(tenant_id=tenant_id).select_related("user", "application").order_by("id")


def applications_of(tenant_id: int) -> QuerySet:
    return Application.objects.filter(tenant_id=tenant_id).order_by("display_name", "client_id")


def token_record(token: Token) -> dict:
    return {
        "id": token.pk,
        "user": {"id": token.user_id, "email": token.user.primary_email},
        "application": {"id": token.application_id, "client_id": token.application.client_id, "name": token.application.display_name},
        "scopes": token.scopes, "risk": token.get_risk_display(), "active": token.revoked_at is None,
        "native_app": token.native_app, "anonymous": token.anonymous,
        "first_seen": iso(token.first_seen), "last_seen": iso(token.last_seen),
        "last_used_at": iso(token.last_used_at), "revoked_at": iso(token.revoked_at),
    }


def application_record(app: Application) -> dict:
    return {
        "id": app.pk, "client_id": app.client_id, "name": app.display_name, "native_app": app.native_app, "client_type": app.client_type,
        "users": app.users, "scopes": app.scopes, "risk": app.get_risk_display(), "risk_reason": app.risk_reason,
        "admin_consent": bool(app.org_scopes), "admin_consent_scopes": app.org_scopes,
        "first_seen": iso(app.first_seen), "last_seen": iso(app.last_seen),
    }


EXPORTS = {"tokens": (tokens_of, token_record), "applications": (applications_of, application_record)}
# A record of nothing, for a CSV header when there are no rows.
BLANK = {token_record: lambda: Token(user=DirectoryUser(), application=Application()), application_record: Application}
FORMATS = ("csv", "jsonl")


def flat(record: dict, prefix: str = "") -> dict:
    """A record as one CSV row: nested objects become prefixed columns (user_email), lists one
    cell of space-separated values (as GAM writes scopes)."""
    row = {}
    for key, value in record.items():
        if isinstance(value, dict):
            row |= flat(value, f"{prefix}{key}_")
        elif isinstance(value, list):
            row[f"{prefix}{key}"] = " ".join(value)
        else:
            row[f"{prefix}{key}"] = "" if value is None else value
    return row


class _Line:
    """What csv.writer writes to: hands the line back instead of keeping it."""

    def write(self, line: str) -> str:
        return line


def export_lines(rows: QuerySet, record, format: str) -> Iterator[str]:
    """The rows as lines of CSV (a header first) or JSON Lines, read CHUNK at a time."""
    records: Iterable[dict] = (record(row) for row in rows.iterator(chunk_size=CHUNK))
    if format == "jsonl":
        for one in records:
            yield json.dumps(one, ensure_ascii=False) + "\n"
        return
    writer = csv.DictWriter(_Line(), fieldnames=list(flat(record(BLANK[record]()))))
    yield writer.writeheader()
    for one in records:
        yield writer.writerow(flat(one))
