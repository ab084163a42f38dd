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
