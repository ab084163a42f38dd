from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Concat
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator
from django_q.admin import ScheduleAdmin as QScheduleAdmin
from django_q.models import Schedule

from monitoring.forms import errors_in_words
from monitoring.admin import ReadOnlyAdmin, TenantQuotaInline
from monitoring.governor.profiles import route_policy
from monitoring.ledger.owners import run_owner, run_owner_of
from monitoring.models import RateLimitDenial, ThrottleEvent
from monitoring.observability.charts import owner_chart
from monitoring.observability.eta import duration_words
from monitoring.observability.health import cluster_is_running
from monitoring.ratelimit.sliding_window import reset as reset_window
from monitoring.ratelimit.sliding_window import tenant_scope

from .apikeys import new_key, revoke
from .forms import ImportFilesForm, StartRunForm, TenantForm
from .governance import run_policy
from .imports import import_uploads
from .inventory import application_record, export_lines, holding_scope, token_record
from .models import (
    COUNTERS,
    Alert,
    AlertDelivery,
    AlertRule,
    ApiKey,
    Application,
    DirectoryUser,
    GrantEvent,
    Revocation,
    RevocationItem,
    RiskOverride,
    Status,
    SyncRun,
    SyncStep,
    Tenant,
    Token,
    UserAppRelation,
)
from .progress import run_eta_words, step_estimate, work_words
from .provider_check import check_tenant_connection
from .revocations import approve_revocation, may_revoke, plan_revocation, request_revocation, resume_revocation
from .runs import RunRefused, cancel_run, slot_wait, start_run, waiting_for
from .schedules import schedule_words
from .step_registry import FULL_SYNC
from .steps.confirm import NothingHeld, confirm_held


def _sync(tenant: Tenant, choices: dict) -> Callable[[], SyncRun]:
    """A sync of the tenant started from the admin, with the steps and profile chosen (none: all, the tenant's)."""
    return lambda: start_run(tenant=tenant, trigger=SyncRun.Trigger.ADMIN, **choices)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantForm
    list_display = ["slug", "name", "provider", "active", "sync_every_minutes", "user_count", "last_run", "denied_today"]
    list_filter = ["provider", "active"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    actions = ["start_sync", "reset_rate_limit"]
    inlines = [TenantQuotaInline]
    readonly_fields = ["schedules_now"]

    @admin.display(description="schedules now")
    def schedules_now(self, tenant):
        """Both schedules, and how far the token feed is behind (its cursor's age)."""
        return schedule_words(tenant) if tenant.pk else "—"

    @admin.display(description="API requests denied today")
    def denied_today(self, tenant):
        row = RateLimitDenial.objects.filter(tenant=tenant, day=timezone.localdate()).first()
        return row.count if row else 0

    @admin.action(description="Reset the API rate-limit window", permissions=["change"])
    def reset_rate_limit(self, request, queryset):
        for tenant in queryset:
            reset_window(tenant_scope(tenant.pk))
        self.message_user(request, f"Rate-limit window reset for {', '.join(t.slug for t in queryset)}.", messages.SUCCESS)

    @admin.display(description="users")
    def user_count(self, tenant):
        return tenant.users.filter(deleted_at__isnull=True).count()

    @admin.display(description="last run")
    def last_run(self, tenant):
        run = tenant.runs.first()
        return f"#{run.pk} {run.get_status_display()}" if run else "—"

    @admin.action(description=f"Start sync ({', '.join(FULL_SYNC)})", permissions=["change"])
    def start_sync(self, request, queryset):
        for tenant in queryset:
            self._start(request, tenant, _sync(tenant, {}))

    def _start(self, request, tenant: Tenant, begin: Callable[[], SyncRun]) -> SyncRun | None:
        """Queue a run (begin() records it) and say so, and what it will wait for; None when it
        was refused."""
        try:
            run = begin()
        except RunRefused as exc:
            self.message_user(request, f"No run for {tenant.slug}: {exc}", messages.ERROR)
            return None
        waits = slot_wait(run)  # after start_run reclaimed dead runs' slots
        self.message_user(request, f"Run #{run.pk} queued for {tenant.slug}" + (f"; it waits for {waits}." if waits else "."), messages.SUCCESS)
        if not cluster_is_running():
            self.message_user(request, "No task cluster is running: start one with `manage.py qcluster`.", messages.WARNING)
        return run

    def get_urls(self):
        own = [
            path("<int:tenant_id>/start-sync/", self.admin_site.admin_view(self.start_sync_view), name="syncapp_tenant_start_sync"),
            path("<int:tenant_id>/test-connection/", self.admin_site.admin_view(self.test_connection_view), name="syncapp_tenant_test_connection"),
            path("<int:tenant_id>/import-files/", self.admin_site.admin_view(self.import_files_view), name="syncapp_tenant_import_files"),
        ]
        return own + super().get_urls()

    def _tenant(self, request, tenant_id: int) -> Tenant:
        tenant = self.get_object(request, str(tenant_id))
        if tenant is None or not self.has_change_permission(request, tenant):
            raise PermissionDenied
        return tenant

    def _page(self, request, tenant: Tenant, template: str, **context) -> TemplateResponse:
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "original": tenant, **context}
        return TemplateResponse(request, template, context)

    def start_sync_view(self, request, tenant_id: int):
        """The steps and profile of a run, checked by the same form as the API's and `sync`'s."""
        tenant = self._tenant(request, tenant_id)
        form = StartRunForm(request.POST if request.method == "POST" else None, provider=tenant.provider)
        return self._form_page(request, tenant, form, lambda chosen: _sync(tenant, chosen),
                               form_id="start-sync", submit="Start sync", title=f"Start a sync of {tenant.slug}")

    def import_files_view(self, request, tenant_id: int):
        """Upload an export; the run reads it as `manage.py import` would (checked the same way)."""
        tenant = self._tenant(request, tenant_id)
        posted = request.method == "POST"
        form = ImportFilesForm(request.POST if posted else None, request.FILES if posted else None)
        return self._form_page(request, tenant, form, lambda chosen: lambda: import_uploads(tenant, chosen),
                               form_id="import-files", submit="Import", title=f"Import files into {tenant.slug}")

    def _form_page(self, request, tenant: Tenant, form, begin: Callable[[dict], Callable[[], SyncRun]], **page) -> HttpResponse:
        """A tenant's form that starts a run: posted and valid, the run begins (begin(the form's
        data)) and its page follows; refused, the form comes back with the reason by its field."""
        if request.method == "POST" and form.is_valid():
            try:
                run = self._start(request, tenant, begin(form.cleaned_data))
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                if run is not None:
                    return redirect("admin:syncapp_syncrun_change", run.pk)
        return self._page(request, tenant, "admin/syncapp/tenant/tenant_form.html", form=form, **page)

    def test_connection_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id)
        report = check_tenant_connection(tenant)
        return self._page(request, tenant, "admin/syncapp/tenant/test_connection.html", report=report, title=f"Test the connection of {tenant.slug}")

# One colour per status, in bars and badges: a cancelled or failed run never looks completed.
STATUS_COLOURS = {
    Status.COMPLETED: "#2e7d32", Status.COMPLETED_WITH_ERRORS: "#b26a00", Status.FAILED: "#ba2121",
    Status.CANCELLED: "#6b6b6b", Status.INTERRUPTED: "#7b1fa2", Status.SKIPPED: "#9e9e9e",
    Status.RUNNING: "#417690", Status.QUEUED: "#79aec8", Status.PENDING: "#c4c4c4",
}


def status_bar(fraction: float, status: str, caption: str, title: str = ""):
    """A small bar, filled to `fraction`, in the status's colour, with a caption under it."""
    return format_html(
        '<div class="status-bar" title="{}" style="width:8em;background:#e5e5e5;border-radius:3px">'
        '<div style="width:{}%;background:{};height:0.8em;border-radius:3px"></div></div><small>{}</small>',
        title or caption, int(100 * min(max(fraction, 0.0), 1.0)), STATUS_COLOURS.get(status, "#417690"), caption,
    )


def step_cells(step: SyncStep) -> dict:
    """One step's row on its run's page, narrow enough for a 1,024-pixel screen: its status (and
    why it stopped), its progress bar with the work and the ETA or how long it took, its counts
    in one cell, its error or invalid records; the checkpoint and task id stay on its record."""
    reason = step.get_stop_reason_display() if step.stop_reason else ""
    state = format_html("{}<br><small>{}</small>", step.get_status_display(), reason) if reason else step.get_status_display()
    guess = step_estimate(step)
    if step.ended:
        when = f"{duration_words(step.duration_s)}" if step.duration_s is not None else ""
    else:
        when = f"ETA {duration_words(guess.eta_s)}" if guess.eta_s is not None else ""
    fraction = 1.0 if step.ended else (guess.done / guess.expected if guess.expected else 0.0)
    work = status_bar(fraction, step.status, " · ".join(p for p in (work_words(step, guess), when) if p))
    counts = " · ".join([f"{step.received:,} read"] + [f"{getattr(step, c):,} {c}" for c in COUNTERS[1:] if getattr(step, c)])
    if step.error:
        notes = format_html('<span title="{}">{}</span>', step.error, Truncator(step.error).chars(160))
    else:
        samples = "; ".join(f"{s.get('key') or '?'}: {s.get('reason')}" for s in step.invalid_samples or [])
        notes = Truncator(samples).chars(160) if samples else "—"
    return {"name": step.name, "state": state, "work": work, "counts": counts, "notes": notes}


def _progress_bar(run: SyncRun, steps: list[SyncStep]):
    ended = sum(s.ended for s in steps)
    fraction = ended / len(steps) if steps else 1.0
    return status_bar(fraction, run.status, f"{ended} of {len(steps)} steps · {sum(s.received for s in steps):,} records read",
                      title=f"{run.get_status_display()}: {ended} of {len(steps)} steps ended")


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    # Seven columns fit a 1,280-pixel screen beside the filters: the counts share one, the trigger
    # is a filter, and why a run waits is under its status.
    list_display = ["id", "tenant", "status_now", "progress", "queued_at", "duration", "records"]
    list_filter = ["status", "trigger", "tenant"]
    search_fields = ["tenant__slug", "error"]
    date_hierarchy = "queued_at"
    actions = ["cancel", "confirm_deletes"]
    fields = ["tenant", "trigger", "reads", "steps", "profile", "parallel", "status", "stop_reason", "held_by", "waiting_reason", "queued_at", "started_at", "finished_at", "duration", "error", "task_id"]
    readonly_fields = fields

    @staticmethod
    def resource_lines(run) -> list[str]:
        """Each step's peak RSS, machine CPU and time held by the governor, for under the chart.
        Held: the wall time a step's work waited on the governor, never more than the step took;
        steps run side by side, so the figures are per step, not a sum."""
        return [
            f"{s.name}: peak RSS {s.peak_rss_bytes / 2**20:.0f} MB · machine CPU mean {s.mean_cpu_percent:.0f}% "
            f"(peak {s.peak_cpu_percent:.0f}%) · held by the governor {s.governor_wait_s:.1f} s of {s.duration_s or 0:.1f} s"
            for s in run.step_records.all() if s.peak_rss_bytes is not None
        ]

    @admin.display(description="reads")
    def reads(self, run):
        """The provider, or the files an import reads (and whether they are a whole export)."""
        if not run.source:
            return f"the provider ({run.tenant.get_provider_display()})"
        files = [Path(run.source[kind]).name for kind in ("users", "tokens") if run.source.get(kind)]
        whole = "a whole export: what they lack is marked deleted" if run.source.get("complete") else "part of the directory: nothing is marked deleted"
        return f"files {', '.join(files)} ({whole})"

    @admin.display(description="waiting for")
    def held_by(self, run):
        """What the run waits for right now: a slot (and who holds it), a worker, the governor."""
        return waiting_for(run) or "—"

    @admin.display(description="status", ordering="status")
    def status_now(self, run):
        why = run.held_now or run.waiting_reason
        if not why:
            return run.get_status_display()
        return format_html("{}<br><small>{}</small>", run.get_status_display(), why)

    def get_queryset(self, request):
        # What holds a running run now (one of its ongoing episodes), for the changelist: one query.
        ongoing = ThrottleEvent.objects.ongoing().filter(owner=run_owner_of(OuterRef("pk")))
        return (
            super()
            .get_queryset(request)
            .select_related("tenant")
            .prefetch_related("step_records")
            .annotate(held_now=Subquery(ongoing.order_by("id").annotate(text=Concat("route", Value(": "), "detail")).values("text")[:1]))
            .annotate(
                total_received=Sum("step_records__received"),
                total_written=Sum("step_records__created") + Sum("step_records__updated"),
                total_invalid=Sum("step_records__invalid"),
                total_failed=Sum("step_records__failed"),
            )
        )

    EVENTS_SHOWN = 200

    def live(self, run: SyncRun) -> dict:
        """What the run's page shows first and refreshes in place while the run goes on: how it
        stands, its steps, the resources over it, the governor's events."""
        owner = run_owner(run.pk)
        try:
            policy = run_policy(run, "run")
        except ValueError:
            policy = route_policy("run")
        events = ThrottleEvent.objects.filter(owner=owner).order_by("id")
        total = events.count()
        shown = list(events[: self.EVENTS_SHOWN])
        for event in shown:
            event.rss_mb = event.rss_bytes / 2**20
        final = run.finished_at is not None
        stands = [run.get_status_display()]
        if run.duration_s is not None:
            stands.append(f"{'in' if final else 'for'} {duration_words(run.duration_s)}")
        if run.status == Status.RUNNING and (eta := run_eta_words(run)):
            stands.append(f"ETA {eta}")
        if not final and (waits := waiting_for(run)):
            stands.append(f"waiting for {waits}")
        return {
            "run": run, "final": final, "stands": " · ".join(stands),
            "step_rows": [step_cells(step) for step in run.step_records.all()],
            "resource_lines": self.resource_lines(run),
            "resource_chart": owner_chart(owner, cpu_ceiling=policy.max_cpu_percent, memory_ceiling=policy.max_memory_percent,
                                          started_at=run.started_at, ended_at=run.finished_at),
            "governor_events": shown,
            "governor_events_total": total,
            "governor_events_more": total > len(shown),
        }

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        if run is not None and request.GET.get("fragment"):  # the page's script, refreshing it in place
            if not self.has_view_permission(request, run):
                raise PermissionDenied
            return TemplateResponse(request, "admin/syncapp/syncrun/live.html", self.live(run))
        if run is not None:
            extra_context = {**(extra_context or {}), **self.live(run)}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="duration (s)")
    def duration(self, run):
        return run.duration_s

    @admin.display(description="progress")
    def progress(self, run):
        steps = list(run.step_records.all())
        return _progress_bar(run, steps)

    @admin.display(description="records", ordering="total_received")
    def records(self, run):
        """Read and written, and the invalid and failed ones when there are any."""
        parts = [f"{run.total_received or 0:,} read", f"{run.total_written or 0:,} written"]
        parts += [f"{n:,} {what}" for n, what in ((run.total_invalid, "invalid"), (run.total_failed, "failed")) if n]
        return " · ".join(parts)

    def has_cancel_permission(self, request):
        # Runs are read-only pages, so cancelling rides on the model's change permission.
        return request.user.has_perm("syncapp.change_syncrun")

    @admin.action(description="Cancel selected runs (queued or running)", permissions=["cancel"])
    def cancel(self, request, queryset):
        cancelled = [run.pk for run in queryset if cancel_run(run)]
        if cancelled:
            self.message_user(request, f"Cancelled runs {', '.join(f'#{pk}' for pk in cancelled)}.", messages.SUCCESS)
        if len(cancelled) < queryset.count():
            self.message_user(request, "Runs that had already ended were left as they were.", messages.WARNING)


    @admin.action(description="Confirm held deletions of selected runs", permissions=["cancel"])
    def confirm_deletes(self, request, queryset):
        """Apply what the accidental-delete guard held in these runs (their steps say how many)."""
        for run in queryset:
            try:
                done = confirm_held(run, by=request.user.get_username() or "admin")
            except NothingHeld as exc:
                self.message_user(request, f"{exc}.", messages.WARNING)
                continue
            self.message_user(request, f"Run #{run.pk}: " + ", ".join(f"{step}: {n:,} marked" for step, n in done.items()), messages.SUCCESS)


class DirectoryAdmin(ReadOnlyAdmin):
    """Browsable, not editable: the provider is the source of truth."""

    list_select_related = True
    list_per_page = 50


SHOWN_TOKENS = 100  # rows of tokens on a user's or an application's page; the tokens list has the rest
SHOWN_EVENTS = 50  # rows of the grant timeline on a page
SCOPES_SHOWN = 60  # characters of a token's scopes in a table; the whole list in its tooltip
SCOPES_LISTED = 36  # … and in the tokens list, beside five other columns


def scopes_words(scopes: list[str], chars: int = SCOPES_SHOWN) -> str:
    """Scopes shortened to what they reach (…/auth/drive.readonly is drive.readonly), cut to chars."""
    return Truncator(", ".join(short_scope(s) for s in scopes)).chars(chars) if scopes else "—"


def short_scope(scope: str) -> str:
    return scope.removeprefix("https://www.googleapis.com/auth/").removeprefix("Microsoft Graph: ")


def _when(moment) -> str:
    return formats.date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT") if moment else "—"


def tokens_table(tokens, first: str, filter_url: str):
    """A page's table of tokens: `first` is the column that names the other side (the
    application on a user's page, the user on an application's), then scopes (full in the
    tooltip), risk, first and last seen, last used, revoked; the first SHOWN_TOKENS, the rest one link away."""
    count = tokens.count()
    if not count:
        return "none"
    rows = format_html_join("", "<tr><td>{}</td><td title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
        (str(token.application if first == "application" else token.user), ", ".join(token.scopes), scopes_words(token.scopes),
         token.get_risk_display(), _when(token.first_seen), _when(token.last_seen), _when(token.last_used_at), _when(token.revoked_at))
        for token in tokens.select_related("application", "user").order_by(F("revoked_at").asc(nulls_first=True), first)[:SHOWN_TOKENS]
    ))
    more = format_html(' <a href="{}">all {} in the tokens list</a>', filter_url, f"{count:,}") if count > SHOWN_TOKENS else ""
    return format_html('<table><thead><tr><th>{}</th><th>scopes</th><th>risk</th><th>first seen</th><th>last seen</th><th>last used</th><th>revoked</th></tr></thead>'
                       "<tbody>{}</tbody></table>{}", first, rows, more)


def timeline_table(events, *, named: bool = True):
    """The grant timeline, newest first: when, what changed (with the scopes added or removed),
    for which user and app (unless the page is one token's), and which run saw it."""
    shown = list(events.select_related("user", "application").order_by("-at", "-id")[: SHOWN_EVENTS + 1])
    if not shown:
        return "none"

    def change(event) -> str:
        moved = [f"+{short_scope(s)}" for s in event.added] + [f"−{short_scope(s)}" for s in event.removed]
        return f"{event.get_kind_display()}: {Truncator(' '.join(moved)).chars(SCOPES_SHOWN)}" if moved else event.get_kind_display()

    def seen(event) -> str:
        return f"{event.get_via_display()}, run {event.run_id}" if event.run_id else event.get_via_display()

    rows = format_html_join("", "<tr><td>{}</td><td>{}</td>" + ("<td>{}</td><td>{}</td>" if named else "{}{}") + "<td>{}</td></tr>", (
        (_when(e.at), change(e), *((str(e.user), str(e.application)) if named else ("", "")), seen(e)) for e in shown[:SHOWN_EVENTS]
    ))
    heads = "<th>when</th><th>change</th>" + ("<th>user</th><th>application</th>" if named else "") + "<th>seen by</th>"
    more = f" (the latest {SHOWN_EVENTS})" if len(shown) > SHOWN_EVENTS else ""
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>{}", mark_safe(heads), rows, more)  # heads: our own markup


def csv_download(rows, record, name: str) -> StreamingHttpResponse:
    """Rows as a CSV download, streamed as `manage.py export` writes it ("select all" takes every match)."""
    response = StreamingHttpResponse(export_lines(rows, record, "csv"), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


@admin.register(DirectoryUser)
class DirectoryUserAdmin(DirectoryAdmin):
    # Lists keep to what fits a 1,280-pixel screen beside the filters; the rest is on each row's page.
    list_display = ["primary_email", "full_name", "tenant", "standing", "org_unit", "last_login_at"]
    list_filter = ["tenant", "is_admin", "is_delegated_admin", "is_suspended", "is_archived",
                   ("deleted_at", admin.EmptyFieldListFilter), "org_unit"]
    search_fields = ["primary_email", "full_name", "external_id"]
    readonly_fields = ["tokens_granted", "timeline"]

    @admin.display(description="tokens")
    def tokens_granted(self, user):
        """The apps this user granted, with their scopes, active ones first."""
        return tokens_table(Token.objects.filter(user=user), "application",
                            f"{reverse('admin:syncapp_token_changelist')}?user__id__exact={user.pk}")

    @admin.display(description="grant timeline")
    def timeline(self, user):
        return timeline_table(GrantEvent.objects.filter(user=user))

    @admin.display(description="standing")
    def standing(self, user):
        """Active, or what sets the user apart: admin, delegated admin, suspended, archived,
        deleted (gone from the source)."""
        if user.deleted_at:
            return f"deleted {formats.date_format(timezone.localtime(user.deleted_at), 'SHORT_DATETIME_FORMAT')}"
        marks = (("admin", user.is_admin), ("delegated admin", user.is_delegated_admin),
                 ("suspended", user.is_suspended), ("archived", user.is_archived))
        return ", ".join(word for word, on in marks if on) or "active"


class AdminConsentFilter(admin.SimpleListFilter):
    title = "admin consent"
    parameter_name = "consent"

    def lookups(self, request, model_admin):
        return [("yes", "for the whole organisation"), ("no", "per user only")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(org_scopes=[])
        if self.value() == "no":
            return queryset.filter(org_scopes=[])
        return queryset


class NewApplicationFilter(admin.SimpleListFilter):
    title = "first seen"
    parameter_name = "new"
    DAYS = 7

    def lookups(self, request, model_admin):
        return [("yes", f"in the last {self.DAYS} days")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(first_seen__gte=timezone.now() - timedelta(days=self.DAYS))
        return queryset


class RevokePermission:
    """Actions with permissions=["revoke"] are offered to a person who may revoke (syncapp.revoke_token)."""

    def has_revoke_permission(self, request):
        return may_revoke(request.user)


class AsksToRevoke(RevokePermission):
    """Admin actions that record a revocation request (syncapp.revocations): its page lists
    exactly what would go, and it waits for approval."""

    def ask(self, request, tenant: Tenant, client_id: str, user_email: str, what: str) -> None:
        try:
            plan = plan_revocation(tenant=tenant, client_id=client_id, user_email=user_email)
            revocation = request_revocation(plan, requested_by=request.user.get_username())
        except ValidationError as exc:
            self.message_user(request, f"{what}: {errors_in_words(exc.message_dict)}", messages.ERROR)
            return
        url = reverse("admin:syncapp_revocation_change", args=[revocation.pk])
        self.message_user(request, format_html('Revocation <a href="{}">{}</a> asked: {} grant(s) of {}; it waits for approval.',
                                               url, revocation.pk, revocation.items.count(), what), messages.SUCCESS)


@admin.register(Application)
class ApplicationAdmin(AsksToRevoke, DirectoryAdmin):
    # users, scopes and risk are kept by syncapp.risk when grants change: a list page reads them, never counts.
    list_display = ["display_name", "tenant", "users", "risk", "consent", "client_type", "first_seen"]
    list_filter = ["tenant", "risk", NewApplicationFilter, AdminConsentFilter, "native_app", "client_type"]
    search_fields = ["display_name", "client_id", "scopes"]
    ordering = ["-risk", "-users", "display_name"]
    readonly_fields = ["held_scopes", "holders", "timeline"]
    exclude = ["scopes", "risk_stale"]
    actions = ["export_csv", "ask_to_revoke"]

    @admin.action(description="Export selected applications as CSV")
    def export_csv(self, request, queryset):
        return csv_download(queryset.order_by("display_name", "client_id"), application_record, "applications")

    @admin.action(description="Ask to revoke every user's grant (a request to review and approve)", permissions=["revoke"])
    def ask_to_revoke(self, request, queryset):
        """One request per application: its page lists exactly what would go, and waits for approval."""
        for app in queryset.select_related("tenant"):
            self.ask(request, app.tenant, app.client_id, "", str(app))

    @admin.display(description="scopes")
    def held_scopes(self, app):
        return ", ".join(app.scopes) or "—"

    @admin.display(description="users")
    def holders(self, app):
        """The users who granted this application, with their scopes, active grants first."""
        return tokens_table(Token.objects.filter(application=app), "user",
                            f"{reverse('admin:syncapp_token_changelist')}?application__id__exact={app.pk}")

    @admin.display(description="grant timeline")
    def timeline(self, app):
        return timeline_table(GrantEvent.objects.filter(application=app))

    @admin.display(description="admin consent", boolean=True)
    def consent(self, app):
        """Whether an administrator granted it for everyone (Microsoft's admin consent); the scopes are on its page."""
        return bool(app.org_scopes)


class ScopeFilter(admin.SimpleListFilter):
    """Tokens holding one scope, chosen among those the applications hold (a few hundred at most)."""

    title = "scope"
    parameter_name = "scope"

    def lookups(self, request, model_admin):
        held = sorted({scope for scopes in Application.objects.exclude(scopes=[]).values_list("scopes", flat=True) for scope in scopes})
        return [(scope, short_scope(scope)) for scope in held]

    def queryset(self, request, queryset):
        return queryset.filter(holding_scope(self.value())) if self.value() else queryset


class UnusedFilter(admin.SimpleListFilter):
    """Active grants with no use in the last DAYS: the ones a team can revoke first. A token never
    seen used counts once it has been held that long (uses come from the changes feed, Google's)."""

    title = "use"
    parameter_name = "unused"
    DAYS = 90

    def lookups(self, request, model_admin):
        return [("yes", f"not used in {self.DAYS} days")]

    def queryset(self, request, queryset):
        if self.value() != "yes":
            return queryset
        cutoff = timezone.now() - timedelta(days=self.DAYS)
        return queryset.filter(Q(last_used_at__lt=cutoff) | Q(last_used_at__isnull=True, first_seen__lt=cutoff), revoked_at__isnull=True)


@admin.register(Token)
class TokenAdmin(AsksToRevoke, DirectoryAdmin):
    list_display = ["user", "application", "scopes_shown", "risk", "last_used_at", "revoked_at"]
    list_filter = ["tenant", "risk", UnusedFilter, ScopeFilter, ("revoked_at", admin.EmptyFieldListFilter), "anonymous", "native_app"]
    # A scope is found by any part of it: "drive" finds https://www.googleapis.com/auth/drive.readonly.
    search_fields = ["user__primary_email", "application__display_name", "application__client_id", "scopes"]
    readonly_fields = ["timeline", "revocations"]
    actions = ["export_csv", "ask_to_revoke"]

    @admin.action(description="Export selected tokens as CSV")
    def export_csv(self, request, queryset):
        return csv_download(queryset.select_related("user", "application").order_by("id"), token_record, "tokens")

    @admin.action(description="Ask to revoke these grants (a request each, to review and approve)", permissions=["revoke"])
    def ask_to_revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True).select_related("tenant", "user", "application"):
            self.ask(request, token.tenant, token.application.client_id, token.user.primary_email, str(token))

    @admin.display(description="revocations")
    def revocations(self, token):
        """The revocation requests that named this grant, with what became of it: the audit beside its timeline."""
        items = token.revocation_items.select_related("revocation").order_by("-id")
        return format_html_join(
            mark_safe("<br>"), '<a href="{}">{}</a>: {} ({})',
            ((reverse("admin:syncapp_revocation_change", args=[i.revocation_id]), i.revocation, i.get_outcome_display(),
              i.revocation.get_state_display()) for i in items),
        ) or "—"

    @admin.display(description="scopes")
    def scopes_shown(self, token):
        return format_html('<span title="{}">{}</span>', ", ".join(token.scopes), scopes_words(token.scopes, SCOPES_LISTED))

    @admin.display(description="grant timeline")
    def timeline(self, token):
        return timeline_table(token.events.all(), named=False)


@admin.register(RiskOverride)
class RiskOverrideAdmin(admin.ModelAdmin):
    """A tenant's own ranking of a scope or an application; saving or deleting one recomputes the
    tenant's risks (syncapp.signals)."""

    list_display = ["__str__", "tenant", "level", "note", "created_at"]
    list_filter = ["tenant", "level"]
    search_fields = ["scope", "client_id", "note"]


@admin.register(UserAppRelation)
class UserAppRelationAdmin(DirectoryAdmin):
    list_display = ["user", "application", "tenant", "active", "last_seen"]
    list_filter = ["tenant", "active"]
    search_fields = ["user__primary_email", "application__display_name"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Adding a key shows it once, in the confirmation message; only its hash is kept."""

    list_display = ["prefix", "tenant", "name", "may_revoke", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["tenant", "may_revoke", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "tenant__slug"]
    actions = ["revoke_keys"]

    def get_fields(self, request, obj=None):
        return ["tenant", "name", "may_revoke"] if obj is None else ["tenant", "name", "may_revoke", "prefix", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        # A key's right to revoke is given when it is made, by a person who holds that right.
        if obj is None:
            return [] if may_revoke(request.user) else ["may_revoke"]
        return ["tenant", "may_revoke", "prefix", "created_at", "last_used_at", "revoked_at"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.prefix, obj.key_hash, key = new_key()
            self.message_user(request, f"API key for {obj.tenant.slug} (copy it now, it is not shown again): {key}", messages.SUCCESS)
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        for key in queryset:
            revoke(key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


# django-q2's schedule list, one column narrower (the cluster column is empty unless schedules are
# pinned to a named cluster), so that it fits a 1,280-pixel screen like every other list.
admin.site.unregister(Schedule)


@admin.register(Schedule)
class ScheduleAdmin(QScheduleAdmin):
    list_display = tuple(column for column in QScheduleAdmin.list_display if column != "cluster")


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "kind", "min_risk", "min_users", "webhook_url", "emails", "active"]
    list_filter = ["tenant", "kind", "active"]
    search_fields = ["name", "webhook_url", "emails"]


class ReadOnlyInline(admin.TabularInline):
    """Rows written by code, shown under their parent: never added or deleted here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class AlertDeliveryInline(ReadOnlyInline):
    model = AlertDelivery
    fields = readonly_fields = ["channel", "target", "status", "attempts", "last_result", "next_attempt_at", "delivered_at"]


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["subject", "rule", "created_at", "baseline", "delivered"]
    list_filter = ["rule__tenant", "rule", "baseline"]
    search_fields = ["subject", "key"]
    inlines = [AlertDeliveryInline]

    @admin.display(description="delivered")
    def delivered(self, alert):
        return ", ".join(f"{d.get_channel_display()}: {d.get_status_display()}" for d in alert.deliveries.all()) or "—"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("rule__tenant").prefetch_related("deliveries")


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    """The delivery log: every alert's webhook and e-mail, with its tries and the last answer."""

    list_display = ["alert", "channel", "target", "status", "attempts", "last_result", "next_attempt_at"]
    list_filter = ["status", "channel"]
    search_fields = ["target", "alert__subject"]
    list_select_related = ["alert"]


class RevocationItemInline(ReadOnlyInline):
    model = RevocationItem
    fields = readonly_fields = ["user_key", "token", "scopes", "outcome", "answer", "done_at"]


@admin.register(Revocation)
class RevocationAdmin(RevokePermission, ReadOnlyAdmin):
    """The revocation audit: who asked, who approved, when, what, and each grant's answer. Kept: never deleted here."""

    list_display = ["__str__", "tenant", "state", "requested_by", "requested_at", "approved_by", "approved_at", "run", "outcome"]
    list_filter = ["tenant", "state"]
    search_fields = ["client_id", "user_email", "requested_by", "approved_by"]
    list_select_related = ["tenant", "run"]
    inlines = [RevocationItemInline]
    actions = ["approve"]

    @admin.action(description="Approve and revoke (or carry on a stopped one)", permissions=["revoke"])
    def approve(self, request, queryset):
        for revocation in queryset.select_related("tenant", "run"):
            who = request.user.get_username()
            try:
                if revocation.state == Revocation.State.PENDING:
                    run = approve_revocation(revocation, approved_by=who)
                else:
                    run = resume_revocation(revocation, resumed_by=who)
            except (ValidationError, PermissionDenied, RunRefused) as exc:
                text = errors_in_words(exc.message_dict) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"{revocation}: {text}", messages.ERROR)
                continue
            self.message_user(request, format_html('{}: run <a href="{}">#{}</a> queued.', revocation,
                                                   reverse("admin:syncapp_syncrun_change", args=[run.pk]), run.pk), messages.SUCCESS)
