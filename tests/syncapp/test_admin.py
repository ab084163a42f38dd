import re

import pytest
from django.urls import reverse
from django_q.brokers import get_broker

from monitoring.ledger.allocations import allocate
from syncapp.admin import STATUS_COLOURS
from syncapp.models import Application, DirectoryUser, Status, SyncRun, Tenant, Token
from syncapp.runs import cancel_run, start_run
from syncapp.secrets import MASK

from ..conftest import sync_here
from ..factories import ApplicationFactory, DirectoryUserFactory, TenantFactory

SECRET = "ya29.very-secret-access-token"


@pytest.fixture
def google(db):
    return TenantFactory(
        slug="acme", provider="google", provider_config={"access_token": SECRET, "customer": "C0123"}
    )


def test_secrets_are_masked_on_every_tenant_page(admin_client, google):
    for url in (reverse("admin:syncapp_tenant_changelist"), reverse("admin:syncapp_tenant_change", args=[google.pk])):
        page = admin_client.get(url).content.decode()
        assert SECRET not in page
    assert MASK in admin_client.get(reverse("admin:syncapp_tenant_change", args=[google.pk])).content.decode()


QUOTA_INLINE = {"quota-TOTAL_FORMS": "0", "quota-INITIAL_FORMS": "0", "quota-MIN_NUM_FORMS": "0", "quota-MAX_NUM_FORMS": "1"}


def _form(tenant: Tenant, config: str, **quota) -> dict:
    form = {"slug": tenant.slug, "name": tenant.name, "provider": tenant.provider, "provider_config": config, "active": "on"}
    if quota:
        return {**form, **QUOTA_INLINE, "quota-TOTAL_FORMS": "1", **{f"quota-0-{k}": v for k, v in quota.items()}}
    return {**form, **QUOTA_INLINE}


def test_saving_with_the_mask_keeps_the_secret(admin_client, google):
    config = '{"access_token": "%s", "customer": "C999"}' % MASK
    response = admin_client.post(reverse("admin:syncapp_tenant_change", args=[google.pk]), _form(google, config))
    assert response.status_code == 302
    google.refresh_from_db()
    assert google.provider_config == {"access_token": SECRET, "customer": "C999"}


@pytest.mark.parametrize(
    "config, message",
    [
        ('{"customer": "C1"}', "google provider: set access_token, or credentials_file and subject"),
        ('{"access_token": "t", "timeout_s": "soon"}', "google provider: timeout_s must be a whole number"),
        ('{"credentials_file": "/etc/passwd", "subject": "a@b.c"}', "google provider: credentials_file: /etc/passwd is outside PROVIDER_CREDENTIALS_DIR"),
        ("[1, 2]", "Enter a JSON object"),
    ],
)
def test_a_bad_provider_config_is_refused_with_a_message(admin_client, google, config, message):
    response = admin_client.post(reverse("admin:syncapp_tenant_change", args=[google.pk]), _form(google, config))
    assert response.status_code == 200
    assert message in response.content.decode()
    google.refresh_from_db()
    assert google.provider_config["access_token"] == SECRET


def test_start_sync_action_queues_a_run_on_the_broker(admin_client, db, django_capture_on_commit_callbacks):
    tenant = TenantFactory(slug="acme")
    broker = get_broker()
    before = broker.queue_size()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:syncapp_tenant_changelist"), {"action": "start_sync", "_selected_action": [tenant.pk]}, follow=True
        )
    run = SyncRun.objects.get()
    assert (run.tenant, run.trigger, run.status) == (tenant, "admin", Status.QUEUED)
    assert broker.queue_size() == before + 1 and run.task_id
    text = response.content.decode()
    assert f"Run #{run.pk} queued for acme." in text
    assert "No task cluster is running" in text


def test_start_sync_says_what_the_run_will_wait_for(admin_client, db):
    from monitoring.ledger.allocations import allocate

    tenant = TenantFactory(slug="busy")
    allocate("run_slot", owner="run-999", tenant_id=tenant.pk)  # its one slot, held by a live run
    response = admin_client.post(
        reverse("admin:syncapp_tenant_changelist"), {"action": "start_sync", "_selected_action": [tenant.pk]}, follow=True
    )
    run = SyncRun.objects.get()
    assert (f"Run #{run.pk} queued for busy; it waits for a run slot: tenant quota: 1 of 1 run slot in use; "
            "held by run 999 (between steps, waiting for a worker).") in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_run_pages_show_status_counters_and_steps(admin_client):
    tenant = TenantFactory(slug="acme", provider_config={"users": 25, "apps": 4})
    run = sync_here(tenant)
    listing = admin_client.get(reverse("admin:syncapp_syncrun_changelist")).content.decode()
    assert "completed" in listing and "acme" in listing
    received = sum(run.step_records.values_list("received", flat=True))
    assert f"3 of 3 steps · {received:,} records read" in listing
    page = admin_client.get(reverse("admin:syncapp_syncrun_change", args=[run.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    for step in ("users", "tokens", "relations"):
        assert f">{step}<" in text
    assert "25" in text
    assert re.search(r"<li>users: peak RSS \d+ MB · machine CPU mean \d+% \(peak \d+%\) · held by the governor [\d.]+ s of [\d.]+ s</li>", text)
    assert "25 of 25 users" in text and "25 read · 25 created" in text  # a step's progress and counts, one cell each
    assert ">checkpoint<" not in text and ">task id<" not in text  # narrow rows: those stay on the step's record
    held = {s.name: (s.governor_wait_s, s.duration_s) for s in run.step_records.all()}
    assert all(wait <= duration for wait, duration in held.values())
    filtered = admin_client.get(reverse("admin:syncapp_syncrun_changelist"), {"status__exact": "failed"}).content.decode()
    assert "0 sync runs" in filtered


def test_cancel_action(admin_client, db):
    tenant = TenantFactory()
    queued = start_run(tenant=tenant, trigger="admin", enqueue=False)
    admin_client.post(reverse("admin:syncapp_syncrun_changelist"), {"action": "cancel", "_selected_action": [queued.pk]})
    queued.refresh_from_db()
    assert queued.status == Status.CANCELLED


def test_directory_is_browsable_with_search_and_filters(admin_client, db):
    tenant = TenantFactory(slug="acme")
    DirectoryUserFactory(tenant=tenant, primary_email="zoe@example.org", full_name="Zoë Ørsted")
    DirectoryUserFactory(tenant=tenant, primary_email="bob@example.org", is_suspended=True)
    url = reverse("admin:syncapp_directoryuser_changelist")
    found = admin_client.get(url, {"q": "Ørsted"}).content.decode()
    assert "zoe@example.org" in found and "bob@example.org" not in found
    suspended = admin_client.get(url, {"is_suspended__exact": "1"}).content.decode()
    assert "bob@example.org" in suspended and "zoe@example.org" not in suspended
    for model in ("application", "token", "userapprelation"):
        assert admin_client.get(reverse(f"admin:syncapp_{model}_changelist")).status_code == 200


def test_delegated_admins_archived_users_and_client_types_are_shown_and_filtered(admin_client, db):
    tenant = TenantFactory(slug="acme")
    DirectoryUserFactory(tenant=tenant, primary_email="role@example.org", is_delegated_admin=True)
    DirectoryUserFactory(tenant=tenant, primary_email="kept@example.org", is_archived=True)
    DirectoryUserFactory(tenant=tenant, primary_email="plain@example.org")
    url = reverse("admin:syncapp_directoryuser_changelist")
    listed = admin_client.get(url).content.decode()
    assert "delegated admin" in listed and ">archived<" in listed
    delegated = admin_client.get(url, {"is_delegated_admin__exact": "1"}).content.decode()
    assert "role@example.org" in delegated and "kept@example.org" not in delegated and "plain@example.org" not in delegated
    archived = admin_client.get(url, {"is_archived__exact": "1"}).content.decode()
    assert "kept@example.org" in archived and "role@example.org" not in archived
    ApplicationFactory(tenant=tenant, display_name="Phone App", client_type="NATIVE_IOS", native_app=True)
    ApplicationFactory(tenant=tenant, display_name="Web App", client_type="WEB")
    apps = admin_client.get(reverse("admin:syncapp_application_changelist"), {"client_type": "NATIVE_IOS"}).content.decode()
    assert "Phone App" in apps and "NATIVE_IOS" in apps and "Web App" not in apps


def test_admin_refuses_anonymous_visitors(client, db):
    response = client.get(reverse("admin:syncapp_syncrun_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_staff_who_may_only_view_cannot_start_or_cancel(client, db):
    from django.contrib.auth.models import Permission, User

    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=["view_tenant", "view_syncrun"]))
    client.force_login(viewer)
    assert 'value="start_sync"' not in client.get(reverse("admin:syncapp_tenant_changelist")).content.decode()
    assert 'value="cancel"' not in client.get(reverse("admin:syncapp_syncrun_changelist")).content.decode()


def test_a_run_page_draws_its_resources_and_lists_governor_events(admin_client, db):
    import xml.etree.ElementTree as ET
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.models import ResourceSample, ThrottleEvent
    from monitoring.observability.charts import _x, _y

    run = start_run(tenant=TenantFactory(), trigger="admin", enqueue=False)
    first = timezone.now().replace(microsecond=0)
    # The run starts 5 s before its first sample and ends 5 s after its last: its chart covers all of it.
    SyncRun.objects.filter(pk=run.pk).update(status="completed", started_at=first - timedelta(seconds=5), finished_at=first + timedelta(seconds=35))
    samples = [(20, None, 15, 3, None), (81, 93, 8, 1, None), (80, None, 10, 1, None), (40, None, 50, 32, 7)]  # cpu, peak, own, cap, calls
    for i, (cpu, peak, own, concurrency, calls) in enumerate(samples):
        ResourceSample.objects.create(
            owner=f"run-{run.pk}", route="users", pid=7, at=first + timedelta(seconds=10 * i), cpu_percent=cpu, cpu_peak_percent=peak,
            process_cpu_percent=own, memory_percent=30, rss_bytes=10**8, concurrency=concurrency, calls_allowed=calls, batch_size=100,
        )
    hold = ThrottleEvent.objects.create(
        owner=f"run-{run.pk}", route="users", kind="throttle", cpu_percent=85, memory_percent=30, rss_bytes=10**8,
        detail="held at 8% CPU: neighbours use 77% of the 80% ceiling", duration_s=20.0, ended_at=first + timedelta(seconds=30),
        cpu_min=80, cpu_mean=82, cpu_max=85, own_cpu_mean=9,
    )
    ThrottleEvent.objects.filter(pk=hold.pk).update(created_at=first + timedelta(seconds=10))
    ThrottleEvent.objects.create(
        owner=f"run-{run.pk}", route="users", kind="collect", cpu_percent=40, memory_percent=30, rss_bytes=10**8, detail="RSS 90 MB -> 80 MB",
    )
    page = admin_client.get(reverse("admin:syncapp_syncrun_change", args=[run.pk])).content.decode()
    svg = ET.fromstring(page[page.index('<svg xmlns="http://www.w3.org/2000/svg" class="ballast-chart"'):page.index("</svg>", page.index("ballast-chart")) + 6])
    ns = "{http://www.w3.org/2000/svg}"
    lines = {line.find(f"{ns}title").text: line for line in svg.iter(f"{ns}polyline")}
    assert list(lines) == ["machine CPU %", "this run's CPU %", "memory %", "concurrency: what resources allow", "provider calls allowed in flight"]
    texts = [t.text for t in svg.iter(f"{ns}text")]
    assert {"% of the machine", "concurrency", "time"} <= set(texts)  # both y axes and time titled
    span, start = 40.0, timezone.localtime(first - timedelta(seconds=5))
    ticks = [t.text for t in svg.iter(f"{ns}text") if t.get("class") == "tick"]
    day = 86_400
    offsets = [(int(h) * 3600 + int(m) * 60 + int(sec) - (start.hour * 3600 + start.minute * 60 + start.second)) % day
               for h, m, sec in (t.split(":") for t in ticks)]  # seconds after the run's start, across midnight too
    step = offsets[1] - offsets[0]
    assert all((start.second + o) % step == 0 for o in offsets)  # round clock times…
    assert 0 <= offsets[0] < step and 40 - step < offsets[-1] <= 40  # …over the whole run

    def ys(line):
        return [float(point.split(",")[1]) for point in line.get("points").split()]

    own, machine = ys(lines["this run's CPU %"]), ys(lines["machine CPU %"])
    assert all(o >= m - 0.01 for o, m in zip(own, machine))  # this run's CPU is never drawn above the machine's (y grows downwards)
    [peak] = [p for p in svg.iter(f"{ns}polygon") if p.get("class") == "range"]
    assert "peak 93%" in peak.find(f"{ns}title").text and min(float(xy.split(",")[1]) for xy in peak.get("points").split()) == pytest.approx(_y(93), abs=0.1)
    assert max(ys(lines["concurrency: what resources allow"])) > min(ys(lines["concurrency: what resources allow"]))
    assert min(ys(lines["concurrency: what resources allow"])) == pytest.approx(_y(100), abs=0.1)  # it reaches 32, the right axis's top
    [band] = [r for r in svg.iter(f"{ns}rect") if r.get("class") == "episode"]
    assert float(band.get("x")) == pytest.approx(_x(15, span), abs=3)  # the band starts with the episode…
    assert float(band.get("width")) == pytest.approx(_x(35, span) - _x(15, span), abs=3)  # …and lasts as long
    assert "held at 8% CPU: neighbours use 77% of the 80% ceiling" in band.find(f"{ns}title").text
    [tick] = [line for line in svg.iter(f"{ns}line") if line.get("class") == "event"]
    assert "RSS 90 MB -> 80 MB" in tick.find(f"{ns}title").text
    assert "20.0 s</td>" in page and "80–85 (mean 82)" in page  # the episode's row: how long, its readings


def test_governor_settings_are_checked_in_the_tenant_form(admin_client, db):
    tenant = TenantFactory(slug="acme")
    form = {**_form(tenant, '{"users": 5}'), "governor_settings": '{"max_cpu_percent": 500}'}
    response = admin_client.post(reverse("admin:syncapp_tenant_change", args=[tenant.pk]), form)
    assert "max_cpu_percent must be between 1 and 100" in response.content.decode()
    form["governor_settings"] = '{"bogus": 1}'
    assert "unknown governor settings: bogus" in admin_client.post(reverse("admin:syncapp_tenant_change", args=[tenant.pk]), form).content.decode()
    form["governor_settings"] = '{"max_cpu_percent": 50}'
    form["sync_profile"] = "background"
    assert admin_client.post(reverse("admin:syncapp_tenant_change", args=[tenant.pk]), form).status_code == 302
    tenant.refresh_from_db()
    assert (tenant.sync_profile, tenant.governor_settings) == ("background", {"max_cpu_percent": 50})


def test_quotas_are_edited_inline_and_checked(admin_client, db):
    from monitoring.models import TenantQuota

    tenant = TenantFactory(slug="acme")
    url = reverse("admin:syncapp_tenant_change", args=[tenant.pk])
    page = admin_client.get(url).content.decode()
    assert "empty fields follow the site" in page
    refused = admin_client.post(url, _form(tenant, '{"users": 5}', max_concurrent_runs="0", burst="-1"))
    text = refused.content.decode()
    assert "Ensure this value is greater than or equal to 1." in text and "Ensure this value is greater than or equal to 0." in text
    assert not TenantQuota.objects.exists()
    saved = admin_client.post(url, _form(tenant, '{"users": 5}', max_concurrent_runs="2", requests_per_minute="60", burst="5"))
    assert saved.status_code == 302
    quota = TenantQuota.objects.get(tenant=tenant)
    assert (quota.max_concurrent_runs, quota.requests_per_minute, quota.burst, quota.runs_per_day) == (2, 60, 5, None)


def test_allocations_show_live_state_and_can_be_reclaimed(admin_client, db):
    from monitoring.ledger.allocations import allocate
    from monitoring.models import Allocation, AllocationEvent

    tenant = TenantFactory()
    held = allocate("run_slot", owner="run-1", tenant_id=tenant.pk)
    waiting = allocate("run_slot", owner="run-2", tenant_id=tenant.pk)
    page = admin_client.get(reverse("admin:monitoring_allocation_changelist"), {"state__exact": "waiting"}).content.decode()
    assert "run-2" in page and "tenant quota: 1 of 1 run slot in use" in page and ">run-1<" not in page
    admin_client.post(reverse("admin:monitoring_allocation_changelist"), {"action": "reclaim", "_selected_action": [held.pk]})
    assert Allocation.objects.get(pk=held.pk).state == "released"
    assert Allocation.objects.get(pk=waiting.pk).state == "granted"
    events = admin_client.get(reverse("admin:monitoring_allocationevent_changelist"), {"kind__exact": "granted"}).content.decode()
    assert events.count("run-2") >= 1 and AllocationEvent.objects.filter(kind="granted").count() == 2


def test_api_keys_are_shown_once_and_revocable_in_the_admin(admin_client, db):
    from syncapp.apikeys import tenant_for_key
    from syncapp.models import ApiKey

    tenant = TenantFactory(slug="acme")
    response = admin_client.post(reverse("admin:syncapp_apikey_add"), {"tenant": tenant.pk, "name": "ci"}, follow=True)
    text = response.content.decode()
    key = text.split("it is not shown again): ")[1].split("<")[0].strip()
    row = ApiKey.objects.get()
    assert key.startswith(f"bk_{row.prefix}_") and key not in row.key_hash
    assert tenant_for_key(key) == tenant
    assert key not in admin_client.get(reverse("admin:syncapp_apikey_change", args=[row.pk])).content.decode()
    admin_client.post(reverse("admin:syncapp_apikey_changelist"), {"action": "revoke_keys", "_selected_action": [row.pk]})
    assert tenant_for_key(key) is None


def test_denied_counts_and_resetting_the_window(admin_client, db):
    from django.utils import timezone

    from monitoring.models import RateLimitDenial, TenantQuota
    from monitoring.ratelimit.sliding_window import hit, tenant_scope

    tenant = TenantFactory(slug="acme")
    TenantQuota.objects.create(tenant=tenant, requests_per_minute=1)
    RateLimitDenial.objects.create(tenant=tenant, day=timezone.localdate(), count=7)
    assert ">7<" in admin_client.get(reverse("admin:syncapp_tenant_changelist")).content.decode()
    assert hit(tenant_scope(tenant.pk), 1).allowed and not hit(tenant_scope(tenant.pk), 1).allowed
    admin_client.post(reverse("admin:syncapp_tenant_changelist"), {"action": "reset_rate_limit", "_selected_action": [tenant.pk]})
    assert hit(tenant_scope(tenant.pk), 1).allowed


def test_bars_take_the_status_colour_and_owners_link_to_their_runs(admin_client):
    tenant = TenantFactory(slug="acme")
    cancelled = start_run(tenant=tenant, trigger="admin", enqueue=False)
    cancel_run(cancelled)
    done = start_run(tenant=tenant, trigger="admin", enqueue=False)
    SyncRun.objects.filter(pk=done.pk).update(status=Status.COMPLETED)
    done.step_records.update(status=Status.COMPLETED)
    listing = admin_client.get(reverse("admin:syncapp_syncrun_changelist")).content.decode()
    assert f"background:{STATUS_COLOURS['cancelled']}" in listing and f"background:{STATUS_COLOURS['completed']}" in listing
    assert STATUS_COLOURS["cancelled"] != STATUS_COLOURS["completed"]
    allocate("run_slot", owner=f"run-{done.pk}", tenant_id=tenant.pk)
    allocations = admin_client.get(reverse("admin:monitoring_allocation_changelist")).content.decode()
    assert f'<a href="{reverse("admin:syncapp_syncrun_change", args=[done.pk])}">run-{done.pk}</a>' in allocations


DRIVE = "https://www.googleapis.com/auth/drive.readonly"


def test_a_users_page_lists_their_tokens_and_an_applications_page_its_users(admin_client, google):
    from django.utils import timezone

    from ..factories import TokenFactory

    ada = DirectoryUserFactory(tenant=google, primary_email="ada@example.org")
    drive_app = ApplicationFactory(tenant=google, display_name="Drive Helper")
    calendar_app = ApplicationFactory(tenant=google, display_name="Calendar Sync")
    TokenFactory(tenant=google, user=ada, application=drive_app, scopes=["openid", DRIVE])
    TokenFactory(tenant=google, user=ada, application=calendar_app, scopes=["openid"], revoked_at=timezone.now())
    grace = DirectoryUserFactory(tenant=google, primary_email="grace@example.org")
    TokenFactory(tenant=google, user=grace, application=drive_app, scopes=["openid"])

    page = admin_client.get(reverse("admin:syncapp_directoryuser_change", args=[ada.pk])).content.decode()
    rows = re.findall(r"<tr><td>(.*?)</td><td title=\"(.*?)\">", page)
    assert rows == [("Drive Helper", f"openid, {DRIVE}"), ("Calendar Sync", "openid")]  # active first, the revoked after
    assert "grace@example.org" not in page

    page = admin_client.get(reverse("admin:syncapp_application_change", args=[drive_app.pk])).content.decode()
    assert [user for user, _ in re.findall(r"<tr><td>(.*?)</td><td title=\"(.*?)\">", page)] == ["ada@example.org", "grace@example.org"]
    assert "Calendar Sync" not in page


def test_the_tokens_list_is_searched_by_scope_and_filtered_by_user_or_application(admin_client, google):
    from ..factories import TokenFactory

    drive = TokenFactory(tenant=google, scopes=["openid", DRIVE])
    TokenFactory(tenant=google, scopes=["openid"])
    url = reverse("admin:syncapp_token_changelist")
    page = admin_client.get(url, {"q": "drive.readonly"}).content.decode()
    assert str(drive.user) in page and "1 token" in page
    for lookup, pk in (("user__id__exact", drive.user_id), ("application__id__exact", drive.application_id)):
        response = admin_client.get(url, {lookup: pk})
        assert response.status_code == 200 and "1 token" in response.content.decode(), lookup


def test_the_applications_list_counts_active_holders_orders_by_them_and_finds_new_apps(admin_client, google):
    from datetime import timedelta

    from django.utils import timezone

    from syncapp.risk import refresh_risk

    from ..factories import TokenFactory

    old = ApplicationFactory(tenant=google, display_name="Old Tool", first_seen=timezone.now() - timedelta(days=30))
    popular = ApplicationFactory(tenant=google, display_name="Popular New")
    for _ in range(3):
        TokenFactory(tenant=google, application=popular)
    TokenFactory(tenant=google, application=old)
    TokenFactory(tenant=google, application=old, revoked_at=timezone.now())  # a revoked grant holds nothing
    refresh_risk(google.pk)  # what the steps that change grants do when they end
    url = reverse("admin:syncapp_application_changelist")

    from syncapp.admin import ApplicationAdmin

    column = ApplicationAdmin.list_display.index("users")
    page = admin_client.get(url, {"o": f"-{column + 1}"}).content.decode()
    names = re.findall(r'<th class="field-display_name"><a [^>]*>(.*?)</a>', page)
    counts = re.findall(r'<td class="field-users">(.*?)</td>', page)
    assert list(zip(names, counts)) == [("Popular New", "3"), ("Old Tool", "1")]
    page = admin_client.get(url, {"new": "yes"}).content.decode()
    assert "Popular New" in page and "Old Tool" not in page


def test_the_applications_list_puts_the_riskiest_first_and_shows_admin_consent(admin_client, google):
    from syncapp.risk import refresh_risk

    from ..factories import TokenFactory

    TokenFactory(tenant=google, application=ApplicationFactory(tenant=google, display_name="Sign-in Only"), scopes=["openid"])
    TokenFactory(tenant=google, application=ApplicationFactory(tenant=google, display_name="Mail Reader"), scopes=["https://mail.google.com/"])
    ApplicationFactory(tenant=google, display_name="Org Calendar", org_scopes=["https://www.googleapis.com/auth/calendar"])
    refresh_risk(google.pk)
    page = admin_client.get(reverse("admin:syncapp_application_changelist")).content.decode()
    names = re.findall(r'<th class="field-display_name"><a [^>]*>(.*?)</a>', page)
    risks = re.findall(r'<td class="field-risk">(.*?)</td>', page)
    assert list(zip(names, risks)) == [("Mail Reader", "high"), ("Org Calendar", "high"), ("Sign-in Only", "low")]
    consent = re.findall(r'<td class="field-consent"><img [^>]*alt="(\w+)"', page)
    assert consent == ["False", "True", "False"]
    page = admin_client.get(reverse("admin:syncapp_application_changelist"), {"risk__exact": "1"}).content.decode()
    assert "Sign-in Only" in page and "Mail Reader" not in page


def test_the_tokens_list_shows_scopes_shortened_and_filters_by_scope_and_risk(admin_client, google):
    from syncapp.risk import refresh_risk

    from ..factories import TokenFactory

    drive = TokenFactory(tenant=google, scopes=["openid", DRIVE])
    other = TokenFactory(tenant=google, scopes=["openid", DRIVE + ".extra"])  # a longer scope holding the first's name
    refresh_risk(google.pk)
    url = reverse("admin:syncapp_token_changelist")
    page = admin_client.get(url).content.decode()
    assert f'<span title="openid, {DRIVE}">openid, drive.readonly</span>' in page
    page = admin_client.get(url, {"scope": DRIVE}).content.decode()
    assert "1 token" in page and str(drive.user) in page and str(other.user) not in page
    page = admin_client.get(url, {"risk__exact": "4"}).content.decode()  # drive.readonly is restricted: high
    assert "1 token" in page and str(drive.user) in page


def test_a_tokens_users_and_applications_page_show_the_grant_timeline(admin_client, google):
    from django.utils import timezone

    from syncapp.models import Token

    from ..factories import TokenFactory

    token = TokenFactory(tenant=google, scopes=["openid"])
    Token.objects.filter(pk=token.pk).update(scopes=["openid", DRIVE])
    Token.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    for name, pk in (("token", token.pk), ("directoryuser", token.user_id), ("application", token.application_id)):
        page = admin_client.get(reverse(f"admin:syncapp_{name}_change", args=[pk])).content.decode()
        changes = re.findall(r"<tr><td>[^<]*</td><td>((?:granted|scopes|revoked)[^<]*)</td>", page)
        assert changes == ["revoked: −openid −drive.readonly", "scopes widened: +drive.readonly", "granted: +openid"], name


@pytest.mark.django_db(transaction=True)
def test_runs_and_the_inventory_cannot_be_deleted_in_the_admin(admin_client):
    """Read-only: no Delete button, no "Delete selected" action, and a delete page refuses."""
    run = sync_here(TenantFactory(provider_config={"users": 5, "apps": 2}))
    rows = {"syncrun": run, **{model.__name__.lower(): model.objects.first() for model in (DirectoryUser, Token, Application)}}
    for model, row in rows.items():
        listing = admin_client.get(reverse(f"admin:syncapp_{model}_changelist")).content.decode()
        assert 'value="delete_selected"' not in listing
        page = admin_client.get(reverse(f"admin:syncapp_{model}_change", args=[row.pk])).content.decode()
        assert reverse(f"admin:syncapp_{model}_delete", args=[row.pk]) not in page
        assert admin_client.post(reverse(f"admin:syncapp_{model}_delete", args=[row.pk]), {"post": "yes"}).status_code == 403
        assert type(row).objects.filter(pk=row.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_runs_page_shows_its_steps_and_chart_first_and_refreshes_while_it_runs(admin_client):
    tenant = TenantFactory(slug="acme", provider_config={"users": 25, "apps": 4})
    ended = sync_here(tenant)
    page = admin_client.get(reverse("admin:syncapp_syncrun_change", args=[ended.pk])).content.decode()
    assert page.index('class="run-steps"') < page.index("Resources over the run") < page.index("field-tenant")  # steps, chart, then fields
    assert "data-refresh-url" not in page and "data-final" in page  # an ended run's page is what it is
    assert page.count('class="run-steps"') == 1 and "step_records-group" not in page  # one table of steps, no inline beside it

    running = start_run(tenant=tenant, trigger="admin", enqueue=False)
    SyncRun.objects.filter(pk=running.pk).update(status="running", started_at=ended.finished_at)
    running.step_records.filter(name="users").update(status="running", started_at=ended.finished_at, done=10, expected=25)
    page = admin_client.get(reverse("admin:syncapp_syncrun_change", args=[running.pk])).content.decode()
    assert 'data-refresh-url="?fragment=1"' in page and "monitoring/refresh.js" in page
    fragment = admin_client.get(reverse("admin:syncapp_syncrun_change", args=[running.pk]), {"fragment": 1}).content.decode()
    assert "<html" not in fragment and "10 of 25 users" in fragment and "data-final" not in fragment
    assert "<h2>Running · for " in fragment
