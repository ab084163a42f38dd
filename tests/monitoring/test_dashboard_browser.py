"""A real browser: headless Chromium loads the dashboard, sees the charts refresh, and saves a
screenshot to test-artifacts/ (kept by CI as an artifact)."""

import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from syncapp.runs import start_run
from syncapp.tasks import run_in_process

from ..conftest import ROOT
from ..factories import TenantFactory

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"),
]
ARTIFACTS = ROOT / "test-artifacts"


def test_the_dashboard_and_a_run_page_in_a_browser(live_server):
    from playwright.sync_api import sync_playwright

    User.objects.create_superuser("staff", "staff@example.org", "browser-pass-1")
    run = start_run(tenant=TenantFactory(slug="acme", provider_config={"users": 200, "latency_ms": 1}), trigger="admin", enqueue=False)
    run_in_process(run.pk)
    ARTIFACTS.mkdir(exist_ok=True)
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{live_server.url}/admin/login/?next=/admin/dashboard/")
        page.fill("#id_username", "staff")
        page.fill("#id_password", "browser-pass-1")
        page.click("input[type=submit]")
        page.wait_for_selector("#ballast-dashboard svg.ballast-chart")
        page.wait_for_function("Number(document.getElementById('ballast-dashboard').dataset.refreshed || 0) >= 1", timeout=20000)
        assert page.locator("#ballast-dashboard svg.ballast-chart polyline").count() == 3  # CPU, memory, RSS
        assert "Allocation ledger" in page.inner_text("#ballast-dashboard")
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        page.goto(f"{live_server.url}/admin/syncapp/syncrun/{run.pk}/change/")
        page.wait_for_selector("svg.ballast-chart")
        assert page.locator("svg.ballast-chart polyline").count() == 4  # machine CPU, this run's CPU, memory, concurrency
        assert page.locator("svg.ballast-chart text.axis-title").count() == 3  # both y axes and time, titled
        page.screenshot(path=str(ARTIFACTS / "run-page.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def _admin_pages(run) -> dict[str, str]:
    """Every admin list, a page of each object kind the sync made, the tenant's own pages, the dashboard."""
    from django.contrib import admin
    from django.urls import reverse

    pages = {"index": reverse("admin:index"), "dashboard": reverse("ballast-dashboard")}
    for model in admin.site._registry:
        meta = model._meta
        pages[f"{meta.model_name}-list"] = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        first = model.objects.order_by("pk").first()
        if first is not None:
            pages[meta.model_name] = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[first.pk])
    pages["syncrun"] = reverse("admin:syncapp_syncrun_change", args=[run.pk])
    pages["tenant-start-sync"] = reverse("admin:syncapp_tenant_start_sync", args=[run.tenant_id])
    pages["tenant-test-connection"] = reverse("admin:syncapp_tenant_test_connection", args=[run.tenant_id])
    pages["tenant-import-files"] = reverse("admin:syncapp_tenant_import_files", args=[run.tenant_id])
    return pages


def test_every_admin_page_fits_1280_by_800_without_scrolling_sideways(live_server):
    from playwright.sync_api import sync_playwright

    from monitoring.models import TenantQuota
    from syncapp.apikeys import new_key
    from syncapp.models import ApiKey

    User.objects.create_superuser("staff", "staff@example.org", "browser-pass-1")
    tenant = TenantFactory(slug="acme", provider_config={"users": 200, "latency_ms": 1})
    TenantQuota.objects.create(tenant=tenant, max_memory_mb=512)
    prefix, key_hash, _ = new_key()
    ApiKey.objects.create(tenant=tenant, name="reporting", prefix=prefix, key_hash=key_hash)
    run = start_run(tenant=tenant, trigger="admin", enqueue=False)
    run_in_process(run.pk)
    ARTIFACTS.mkdir(exist_ok=True)
    pages, wide = _admin_pages(run), {}  # the ORM before Playwright: its loop makes this thread async
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "staff")
        page.fill("#id_password", "browser-pass-1")
        page.click("input[type=submit]")
        for name, path in pages.items():
            answer = page.goto(live_server.url + path)
            assert answer.status == 200, (name, answer.status)
            page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)
            width = page.evaluate("document.documentElement.scrollWidth")
            # A changelist that scrolls inside its own box hides columns just as well.
            cut = page.evaluate("Math.max(0, ...[...document.querySelectorAll('#changelist .results')].map(e => e.scrollWidth - e.clientWidth))")
            if width > 1280 or cut > 0:
                wide[name] = (width, cut)
        browser.close()
    assert wide == {}, f"pages wider than the screen, or lists whose columns are cut (page px, px cut): {wide}"


def test_a_running_runs_page_refreshes_in_place_until_it_ends(live_server):
    import threading
    from datetime import timedelta

    from django.db import connections
    from django.utils import timezone
    from playwright.sync_api import sync_playwright

    from syncapp.models import SyncRun

    User.objects.create_superuser("staff", "staff@example.org", "browser-pass-1")
    run = start_run(tenant=TenantFactory(slug="acme", provider_config={"users": 40}), trigger="admin", enqueue=False)
    started = timezone.now() - timedelta(seconds=5)
    SyncRun.objects.filter(pk=run.pk).update(status="running", started_at=started)
    run.step_records.filter(name="users").update(status="running", started_at=started, done=10, expected=40)

    def finish():  # as the run's own process would, from elsewhere
        try:
            now = timezone.now()
            run.step_records.update(status="completed", started_at=started, finished_at=now, done=40, expected=40, received=40)
            SyncRun.objects.filter(pk=run.pk).update(status="completed", finished_at=now)
        finally:
            connections.close_all()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{live_server.url}/admin/login/?next=/admin/syncapp/syncrun/{run.pk}/change/")
        page.fill("#id_username", "staff")
        page.fill("#id_password", "browser-pass-1")
        page.click("input[type=submit]")
        page.wait_for_selector("#ballast-run-live .run-steps")
        assert "10 of 40 users" in page.inner_text("#ballast-run-live")
        page.wait_for_function("Number(document.getElementById('ballast-run-live').dataset.refreshed || 0) >= 1", timeout=20000)
        finisher = threading.Thread(target=finish)
        finisher.start()
        finisher.join()
        page.wait_for_selector("#ballast-run-live [data-final]", timeout=20000)  # no reload: the page's script brought it
        text = page.inner_text("#ballast-run-live")
        assert text.startswith("Completed") and "40 of 40 users" in text
        refreshes = page.evaluate("Number(document.getElementById('ballast-run-live').dataset.refreshed)")
        page.wait_for_timeout(4000)
        assert page.evaluate("Number(document.getElementById('ballast-run-live').dataset.refreshed)") == refreshes  # and stops there
        browser.close()
