"""The tenant API under /api/v1/: JSON in and out, one tenant per key, errors of one shape:
{"error": {"code": "...", "message": "..."}}.
"""

import json
from functools import wraps

from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db.models import Q
from django.http import JsonResponse
from django.urls import path, reverse
from django.views.decorators.csrf import csrf_exempt

from monitoring.ledger import shortfall_now

from .apikeys import resolve_tenant
from .models import Application, DirectoryUser, SyncRun, UserAppRelation
from .runs import RunRefused, run_summary, start_run

PAGE_SIZE, MAX_PAGE_SIZE = 50, 200


def error(status: int, code: str, message: str, **headers) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
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
            return view(request, tenant, *args, **kwargs)

        return wrapper

    return decorate


def paged(request, queryset, serialize) -> JsonResponse:
    try:
        size = min(max(int(request.GET.get("page_size", PAGE_SIZE)), 1), MAX_PAGE_SIZE)
        page = Paginator(queryset, size).page(request.GET.get("page", 1))
    except (ValueError, PageNotAnInteger):
        return error(400, "bad_request", "page and page_size must be whole numbers")
    except EmptyPage:
        return error(404, "not_found", "no such page")

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


def _active(request, field: str, *, inverted: bool = False) -> Q | None:
    """?active=true|false as a filter; None when absent."""
    value = request.GET.get("active")
    if value is None:
        return None
    wanted = value.lower() in {"1", "true", "yes"}
    return Q(**{field: wanted != inverted})


def _time(value):
    return value.isoformat() if value else None


def run_json(run: SyncRun) -> dict:
    return {
        **run_summary(run), "trigger": run.trigger, "profile": run.profile,
        "queued_at": _time(run.queued_at), "started_at": _time(run.started_at), "finished_at": _time(run.finished_at),
        "waiting_reason": run.waiting_reason, "error": run.error,
    }


@api_view("GET", "POST")
def runs(request, tenant):
    if request.method == "GET":
        queryset = tenant.runs.prefetch_related("step_records").order_by("-id")
        if request.GET.get("status"):
            queryset = queryset.filter(status=request.GET["status"])
        return paged(request, queryset, run_json)
    try:
        body = json.loads(request.body or b"{}")
    except json.JSONDecodeError as exc:
        return error(400, "bad_request", f"the body is not JSON: {exc.msg}")
    if not isinstance(body, dict):
        return error(400, "bad_request", "the body must be a JSON object")
    if not body.get("queue"):
        reason = shortfall_now("run_slot", tenant_id=tenant.pk)
        if reason:
            return error(429, "concurrent_runs", f"{reason}; send \"queue\": true to queue the run", Retry_After="30")
    try:
        run = start_run(tenant=tenant, trigger=SyncRun.Trigger.API, steps=body.get("steps"), profile=body.get("profile") or "")
    except RunRefused as exc:
        status, code = (429, "quota_exceeded") if "quota" in str(exc) else (400, "bad_request")
        return error(status, code, str(exc))
    response = JsonResponse(run_json(run), status=202)
    response["Location"] = request.build_absolute_uri(reverse("api-run", args=[run.pk]))
    return response


@api_view("GET")
def run_detail(request, tenant, run_id: int):
    run = tenant.runs.prefetch_related("step_records").filter(pk=run_id).first()
    return JsonResponse(run_json(run)) if run else error(404, "not_found", f"no run {run_id}")


@api_view("GET")
def users(request, tenant):
    queryset = DirectoryUser.objects.filter(tenant=tenant).order_by("primary_email")
    if (active := _active(request, "deleted_at__isnull")) is not None:
        queryset = queryset.filter(active)
    if search := request.GET.get("search"):
        queryset = queryset.filter(Q(primary_email__icontains=search) | Q(full_name__icontains=search))
    return paged(request, queryset, lambda u: {
        "id": u.pk, "external_id": u.external_id, "email": u.primary_email, "name": u.full_name,
        "is_admin": u.is_admin, "is_suspended": u.is_suspended, "org_unit": u.org_unit, "active": u.deleted_at is None,
        "last_login_at": _time(u.last_login_at), "first_seen": _time(u.first_seen), "last_seen": _time(u.last_seen),
    })


@api_view("GET")
def applications(request, tenant):
    queryset = Application.objects.filter(tenant=tenant).order_by("display_name", "client_id")
    if search := request.GET.get("search"):
        queryset = queryset.filter(Q(display_name__icontains=search) | Q(client_id__icontains=search))
    return paged(request, queryset, lambda a: {
        "id": a.pk, "client_id": a.client_id, "name": a.display_name, "native_app": a.native_app,
        "first_seen": _time(a.first_seen), "last_seen": _time(a.last_seen),
    })


@api_view("GET")
def relations(request, tenant):
    queryset = UserAppRelation.objects.filter(tenant=tenant).select_related("user", "application").order_by("id")
    if (active := _active(request, "active")) is not None:
        queryset = queryset.filter(active)
    if search := request.GET.get("search"):
        queryset = queryset.filter(
            Q(user__primary_email__icontains=search) | Q(application__display_name__icontains=search)
            | Q(application__client_id__icontains=search)
        )
    return paged(request, queryset, lambda r: {
        "id": r.pk, "user": {"id": r.user_id, "email": r.user.primary_email},
        "application": {"id": r.application_id, "client_id": r.application.client_id, "name": r.application.display_name},
        "scopes": r.scopes, "active": r.active, "first_seen": _time(r.first_seen), "last_seen": _time(r.last_seen),
    })


urlpatterns = [
    path("runs/", runs, name="api-runs"),
    path("runs/<int:run_id>/", run_detail, name="api-run"),
    path("users/", users, name="api-users"),
    path("applications/", applications, name="api-applications"),
    path("relations/", relations, name="api-relations"),
]
