import pytest

from monitoring.observability.leaks import LeakWatch
from monitoring.signals import leak_detected

LEAKED: list = []


@pytest.fixture
def received():
    seen = []

    def receiver(sender, site, **kwargs):
        seen.append(("leak", site))

    leak_detected.connect(receiver)
    yield seen
    leak_detected.disconnect(receiver)


def test_leak_watch_reports_sites_that_grow_at_every_check(received):
    import tracemalloc

    watch = LeakWatch(keep=3)
    try:
        for _ in range(3):
            LEAKED.append(bytearray(256 * 1024))
            sites = watch.check()
    finally:
        tracemalloc.stop()
    # Ours is among them (others may grow too: linecache, when a file changed on disk meanwhile).
    assert any("test_leaks.py" in site["site"] for site in sites)
    assert any(name == "leak" for name, _ in received)


@pytest.mark.django_db
def test_the_leak_check_schedule_follows_its_setting(settings):
    from django_q.models import Schedule

    from monitoring.tasks import LEAK_CHECK, sync_leak_check_schedule

    settings.BALLAST_LEAK_CHECK_MINUTES = 15
    sync_leak_check_schedule()
    assert Schedule.objects.get(name=LEAK_CHECK).minutes == 15
    settings.BALLAST_LEAK_CHECK_MINUTES = 0
    sync_leak_check_schedule()
    assert not Schedule.objects.filter(name=LEAK_CHECK).exists()
