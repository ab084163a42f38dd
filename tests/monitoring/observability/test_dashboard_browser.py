"""A real browser: headless Chromium loads the dashboard, sees the charts refresh, and saves a
screenshot to test-artifacts/ (kept by CI as an artifact)."""

import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from syncapp.runs import start_run
from syncapp.tasks import run_in_process

from ...conftest import ROOT
from ...factories import TenantFactory

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
        # machine CPU, this run's CPU, memory, concurrency, and the tokens step's provider calls allowed in flight
        assert page.locator("svg.ballast-chart polyline").count() == 5
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


# Every column of a list must be on screen: its header's right edge within the window and within
# any box that scrolls it sideways; and a short word whole (no "Runnin/g" broken mid-word: a
# status, a time, a figure). Words over 20 characters (emails, client ids) may break.
HIDDEN_COLUMNS = """
() => {
  const hidden = [];
  for (const th of document.querySelectorAll("#result_list thead th")) {
    let right = Math.min(window.innerWidth, document.documentElement.clientWidth);
    for (let box = th.parentElement; box; box = box.parentElement) {
      const style = getComputedStyle(box);
      if (/(auto|scroll|hidden)/.test(style.overflowX)) right = Math.min(right, box.getBoundingClientRect().right);
    }
    if (th.getBoundingClientRect().right > right + 1) hidden.push(th.innerText.trim() || th.className);
  }
  return hidden;
}
"""
BROKEN_WORDS = r"""
() => [...document.querySelectorAll("#result_list td, #result_list th")].filter(cell => {
  const text = cell.innerText.trim();
  if (!text) return false;
  // A word wider than its cell can only be broken across lines (or cut): measure each unbroken.
  const words = text.split(/\s+/).filter(word => word.length <= 20);
  return words.some(word => {
    const probe = document.createElement("span");
    probe.textContent = word;
    probe.style.whiteSpace = "nowrap";
    probe.style.visibility = "hidden";
    probe.style.position = "absolute";
    cell.appendChild(probe);
    const wide = probe.getBoundingClientRect().width;
    probe.remove();
    return wide > cell.clientWidth + 1;
  });
}).map(cell => cell.innerText.trim().slice(0, 40))
"""


@pytest.mark.parametrize("width", [1280, 1024])
def test_every_admin_page_fits_and_every_list_shows_every_column(live_server, width):
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
    pages, wide, hidden, broken = _admin_pages(run), {}, {}, {}  # the ORM before Playwright: its loop makes this thread async
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": width, "height": 800})
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "staff")
        page.fill("#id_password", "browser-pass-1")
        page.click("input[type=submit]")
        for name, path in pages.items():
            answer = page.goto(live_server.url + path)
            assert answer.status == 200, (name, answer.status)
            page.screenshot(path=str(ARTIFACTS / f"admin-{name}-{width}.png"), full_page=True)
            page_width = page.evaluate("document.documentElement.scrollWidth")
            if page_width > width:
                wide[name] = page_width
            if columns := page.evaluate(HIDDEN_COLUMNS):
                hidden[name] = columns
            if words := page.evaluate(BROKEN_WORDS):
                broken[name] = words
        browser.close()
    assert wide == {}, f"pages wider than a {width}-pixel screen: {wide}"
    assert hidden == {}, f"list columns off a {width}-pixel screen, or cut by a box that scrolls: {hidden}"
    assert broken == {}, f"words broken mid-word at {width} pixels: {broken}"
