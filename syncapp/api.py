"""The tenant API under /api/v1/: JSON in and out, one tenant per key, errors of one shape:
{"error": {"code": "...", "message": "...", "field": "..." (when one is to blame), "id": "..." (500s)}}.
Every path under /api/v1/ answers so, unknown ones included; parameters are parsed strictly.
"""

import json
import logging
import uuid
from datetime import datetime, time
from datetime import timezone as dt_timezone
from functools import wraps

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, ValidationError
from django.core.paginator import EmptyPage, Paginator
from django.db.models import Q
from django.http import JsonResponse
from django.urls import path, re_path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.views.decorators.csrf import csrf_exempt

from monitoring.ledger.allocations import shortfall_now
from monitoring.models import Allocation

from .apikeys import request_key, resolve_tenant
from .forms import run_request
from .inventory import RISKS, application_record, applications_of, changed_since, holding_scope, iso, token_record, tokens_of
from .models import DirectoryUser, Revocation, Status, SyncRun, UserAppRelation
from .records import is_unicode
from .revocations import approve_revocation, plan_revocation, request_revocation
from .runs import QuotaReached, RunRefused, run_summary, start_run

log = logging.getLogger(__name__)
PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
RUN_STATUSES = [s for s in Status.values if s not in (Status.PENDING, Status.SKIPPED)]  # those are steps' only


class BadParameter(ValueError):
    """A query parameter or body field that cannot be used: answered 400, naming it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field

    @classmethod
    def of(cls, exc: ValidationError) -> "BadParameter":
        """The first field a service's ValidationError blames, with its messages."""
        field, messages = next(iter(exc.message_dict.items()))
        return cls(field, " ".join(messages))


def error(status: int, code: str, message: str, *, field: str = "", error_id: str = "", **headers) -> JsonResponse:
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    if error_id:
        body["id"] = error_id
    response = JsonResponse({"error": body}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def api_view(*methods: str):
    """Resolve the tenant (401 without one), refuse other methods (405), answer errors in JSON."""

    def decorate(view):
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                return error(405, "method_not_allowed", f"use {' or '.join(methods)}", Allow=", ".join(methods))
            tenant = getattr(request, "tenant", None) or resolve_tenant(request)
            if tenant is None:
                return error(401, "unauthorized", "send a valid API key: Authorization: Bearer <key>", WWW_Authenticate="Bearer")
            try:
                return view(request, tenant, *args, **kwargs)
            except BadParameter as exc:
                return error(400, "bad_request", str(exc), field=exc.field)
            except RequestDataTooBig:
                return error(413, "too_large", f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes", field="body")
            except Exception:  # answered in JSON like every error here; the traceback goes to the log
                error_id = uuid.uuid4().hex[:12]
                log.exception("API error %s: %s %s", error_id, request.method, request.path)
                return error(500, "server_error", f"something went wrong on our side; quote error id {error_id}", error_id=error_id)

        return wrapper

    return decorate


@csrf_exempt
def not_found(request, rest=""):
    return error(404, "not_found", f"no API path {request.path}; see /api/v1/runs/, users/, tokens/, applications/, relations/")


def whole_number(request, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(name, f"must be a whole number, not {raw[:40]!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise BadParameter(name, f"must be from {minimum} to {maximum}" if maximum is not None else f"must be {minimum} or more")
    return value


def text(request, name: str) -> str:
    return checked_text(name, request.GET.get(name, ""))


def checked_text(name: str, value) -> str:
    """A parameter or body field that must be text a database can compare (no NUL)."""
    if not isinstance(value, str):
        raise BadParameter(name, "must be a string")
    if "\x00" in value:
        raise BadParameter(name, "must not contain NUL characters")
    if not is_unicode(value):  # JSON may carry a lone surrogate ("\\ud800"), which no database takes
        raise BadParameter(name, "must be Unicode text (no lone surrogates)")
    return value


def choice(request, name: str, choices) -> str:
    value = request.GET.get(name, "")
    if value and value not in choices:
        raise BadParameter(name, f"must be one of {', '.join(choices)}")
    return value


def paged(request, queryset, serialize) -> JsonResponse:
    size = whole_number(request, "page_size", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    number = whole_number(request, "page", 1, 1)
    try:
        page = Paginator(queryset, size).page(number)
    except EmptyPage:
        return error(404, "not_found", f"no page {number}", field="page")

    def link(number):
        query = request.GET.copy()
        query["page"] = number
        return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

    return JsonResponse({
        "count": page.paginator.count,
        "page": page.number,
        "page_size": size,
        "next": link(page.next_page_number()) if page.has_next() else None,
        "previous": link(page.previous_page_number()) if page.has_previous() else None,
        "results": [serialize(item) for item in page],
    })


def _active(request, field: str) -> Q | None:
    """?active=true|false (or 1|0) as a filter on `field`; None when absent."""
    value = request.GET.get("active")
    if value is None:
        return None
    if value.lower() not in BOOLEANS:
        raise BadParameter("active", "must be true or false")
    return Q(**{field: BOOLEANS[value.lower()]})


def run_json(run: SyncRun) -> dict:
    return {
        **run_summary(run), "trigger": run.trigger, "profile": run.profile,
        "queued_at": iso(run.queued_at), "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
        "waiting_reason": run.waiting_reason, "error": run.error,
    }


@api_view("GET", "POST")
def runs(request, tenant):
    if request.method == "GET":
        queryset = tenant.runs.prefetch_related("step_records").order_by("-id")
        if status := choice(request, "status", RUN_STATUSES):
            queryset = queryset.filter(status=status)
        return paged(request, queryset, run_json)
    body = json_body(request)
    queue = body.get("queue", False)
    try:
        request_made = run_request(steps=body.get("steps"), profile=body.get("profile"), provider=tenant.provider)
    except ValidationError as exc:
        raise BadParameter.of(exc) from None
    if not isinstance(queue, bool):
        raise BadParameter("queue", "must be true or false")
    if not queue:
        shortfall = shortfall_now(Allocation.Resource.RUN_SLOT, tenant_id=tenant.pk)
        if shortfall:
            return error(429, "concurrent_runs", f"{shortfall.reason}; send \"queue\": true to queue the run", Retry_After="30")
    try:
        run = start_run(tenant=tenant, trigger=SyncRun.Trigger.API, **request_made)
    except QuotaReached as exc:
        return error(429, "quota_exceeded", str(exc))
    except RunRefused as exc:
        return error(400, "bad_request", str(exc))
    response = JsonResponse(run_json(run), status=202)
    response["Location"] = request.build_absolute_uri(reverse("api-run", args=[run.pk]))
    return response


def json_body(request) -> dict:
    """The request's body as a JSON object, or BadParameter."""
    try:
        body = json.loads(request.body or b"{}")
    except RecursionError:
        raise BadParameter("body", "the body is nested too deep") from None
    except ValueError as exc:  # not JSON, not UTF-8, or a number of more digits than Python converts
        raise BadParameter("body", f"the body is not JSON: {getattr(exc, 'msg', exc)}") from None
    if not isinstance(body, dict):
        raise BadParameter("body", "the body must be a JSON object")
    return body


def revocation_json(revocation: Revocation) -> dict:
    return {
        "id": revocation.pk, "application": revocation.client_id, "user": revocation.user_email or None, "unused_days": revocation.unused_days,
        "state": revocation.state, "requested_by": revocation.requested_by, "requested_at": iso(revocation.requested_at),
        "approved_by": revocation.approved_by or None, "approved_at": iso(revocation.approved_at), "run": revocation.run_id,
        "grants": revocation.outcome_counts(), "outcome": revocation.outcome,
    }


@api_view("POST")
def revocations(request, tenant):
    """A dry run by default: what would be revoked. With "dry_run": false and a key that may
    revoke, the request is recorded and approved (or left for a second person, when the site
    asks for one), and its run queued."""
    body = json_body(request)
    dry_run, unused_days = body.get("dry_run", True), body.get("unused_days")
    if not isinstance(dry_run, bool):
        raise BadParameter("dry_run", "must be true or false")
    for field in ("app", "user"):
        if body.get(field) is not None:
            checked_text(field, body[field])
    if not body.get("app"):
        raise BadParameter("app", "give the application's client id")
    if unused_days is not None and (isinstance(unused_days, bool) or not isinstance(unused_days, int)):
        raise BadParameter("unused_days", "must be a whole number of days")
    try:
        plan = plan_revocation(tenant=tenant, client_id=body["app"], user_email=body.get("user") or "", unused_days=unused_days)
    except ValidationError as exc:
        raise BadParameter.of(exc) from None
    if dry_run:
        return JsonResponse({"dry_run": True, **plan.as_dict()})
    key = request_key(request)
    if key is None or not key.may_revoke:
        return error(403, "forbidden", "this API key may not revoke grants: make one that may (manage.py apikey create SLUG --may-revoke)")
    if not plan.tokens:
        raise BadParameter("app", plan.words())
    who = f"API key {key.prefix}"
    revocation = request_revocation(plan, requested_by=who)
    try:
        approve_revocation(revocation, approved_by=who)
    except PermissionDenied:  # the site asks for a second person: the request waits for them in the admin
        pass
    except RunRefused as exc:
        return error(429 if isinstance(exc, QuotaReached) else 400, "quota_exceeded" if isinstance(exc, QuotaReached) else "bad_request", str(exc))
    revocation.refresh_from_db()
    response = JsonResponse(revocation_json(revocation), status=202)
    response["Location"] = request.build_absolute_uri(reverse("api-revocation", args=[revocation.pk]))
    return response


@api_view("GET")
def revocation_detail(request, tenant, revocation_id: int):
    revocation = Revocation.objects.filter(tenant=tenant, pk=revocation_id).first()
    return JsonResponse(revocation_json(revocation)) if revocation else error(404, "not_found", f"no revocation {revocation_id}")


@api_view("GET")
def run_detail(request, tenant, run_id: int):
    run = tenant.runs.prefetch_related("step_records").filter(pk=run_id).first()
    return JsonResponse(run_json(run)) if run else error(404, "not_found", f"no run {run_id}")


@api_view("GET")
def users(request, tenant):
    queryset = DirectoryUser.objects.filter(tenant=tenant).order_by("primary_email")
    if (active := _active(request, "deleted_at__isnull")) is not None:
        queryset = queryset.filter(active)
    if search := text(request, "search"):
        queryset = queryset.filter(Q(primary_email__icontains=search) | Q(full_name__icontains=search))
    return paged(request, queryset, lambda u: {
        "id": u.pk, "external_id": u.external_id, "email": u.primary_email, "name": u.full_name,
        "is_admin": u.is_admin, "is_suspended": u.is_suspended, "org_unit": u.org_unit, "active": u.deleted_at is None,
        "last_login_at": iso(u.last_login_at), "first_seen": iso(u.first_seen), "last_seen": iso(u.last_seen),
    })


def _risk(request) -> int | None:
    value = choice(request, "risk", list(RISKS))
    return RISKS[value] if value else None


def _since(request):
    raw = text(request, "since")
    if not raw:
        return None
    try:
        moment = parse_datetime(raw)
        if moment is None and (day := parse_date(raw)) is not None:
            moment = datetime.combine(day, time.min)
    except ValueError:  # well formed but no such date or time (2026-13-45)
        moment = None
    if moment is None:
        raise BadParameter("since", f"must be an ISO 8601 date or time, e.g. 2026-12-01T00:00:00Z, not {raw[:40]!r}")
    try:
        return (moment if timezone.is_aware(moment) else timezone.make_aware(moment, dt_timezone.utc)).astimezone(dt_timezone.utc)
    except OverflowError:  # the first day of year 1 east of UTC: before any time the database holds
        raise BadParameter("since", f"is out of range: {raw[:40]!r}") from None


@api_view("GET")
def tokens(request, tenant):
    queryset = tokens_of(tenant.pk)
    if (active := _active(request, "revoked_at__isnull")) is not None:
        queryset = queryset.filter(active)
    if user := text(request, "user"):  # an address or the provider's id
        queryset = queryset.filter(Q(user__primary_email__iexact=user) | Q(user__external_id=user))
    if application := text(request, "application"):  # a client id
        queryset = queryset.filter(application__client_id=application)
    if scope := text(request, "scope"):
        queryset = queryset.filter(holding_scope(scope))
    if (risk := _risk(request)) is not None:
        queryset = queryset.filter(risk=risk)
    if (since := _since(request)) is not None:
        queryset = queryset.filter(changed_since(tenant.pk, since))
    return paged(request, queryset, token_record)


ORDERS = {"name": ["display_name", "client_id"], "users": ["-users", "display_name"], "risk": ["-risk", "-users", "display_name"]}


@api_view("GET")
def applications(request, tenant):
    queryset = applications_of(tenant.pk).order_by(*ORDERS[choice(request, "order", list(ORDERS)) or "name"])
    if search := text(request, "search"):
        queryset = queryset.filter(Q(display_name__icontains=search) | Q(client_id__icontains=search))
    if (risk := _risk(request)) is not None:
        queryset = queryset.filter(risk=risk)
    if scope := text(request, "scope"):
        queryset = queryset.filter(holding_scope(scope))
    return paged(request, queryset, application_record)


@api_view("GET")
def relations(request, tenant):
    queryset = UserAppRelation.objects.filter(tenant=tenant).select_related("user", "application").order_by("id")
    if (active := _active(request, "active")) is not None:
        queryset = queryset.filter(active)
    if search := text(request, "search"):
        queryset = queryset.filter(
            Q(user__primary_email__icontains=search) | Q(application__display_name__icontains=search)
            | Q(application__client_id__icontains=search)
        )
    return paged(request, queryset, lambda r: {
        "id": r.pk, "user": {"id": r.user_id, "email": r.user.primary_email},
        "application": {"id": r.application_id, "client_id": r.application.client_id, "name": r.application.display_name},
        "scopes": r.scopes, "active": r.active, "first_seen": iso(r.first_seen), "last_seen": iso(r.last_seen),
    })


urlpatterns = [
    path("runs/", runs, name="api-runs"),
    path("runs/<int:run_id>/", run_detail, name="api-run"),
    path("revocations/", revocations, name="api-revocations"),
    path("revocations/<int:revocation_id>/", revocation_detail, name="api-revocation"),
    path("users/", users, name="api-users"),
    path("tokens/", tokens, name="api-tokens"),
    path("applications/", applications, name="api-applications"),
    path("relations/", relations, name="api-relations"),
    re_path(r"^(?P<rest>.*)$", not_found),  # anything else under /api/v1/: a JSON 404, not the site's HTML page
]
