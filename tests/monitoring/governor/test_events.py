"""Events and episodes as rows and log lines: one row per episode, updated as it goes; log lines
for the same condition at most once per LOG_REPEAT_S."""

import pytest

from monitoring.governor.events import DatabaseRecorder, Episode, Event
from monitoring.governor.policy import Pressure
from monitoring.governor.readings.fake import reading
from monitoring.models import ThrottleEvent

pytestmark = pytest.mark.django_db

CALM = Pressure(cpu=50, memory=10, reason="memory 10%")


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "monitoring.governor"]


def test_repeated_events_make_one_line_per_interval_and_say_how_many_were_held_back(settings, caplog):
    settings.BALLAST_LOG_REPEAT_S = 10.0
    clock = Clock()
    recorder = DatabaseRecorder("run-1", "tokens", "[tokens run 1]", clock=clock)
    for n in range(6):  # a change every 3 s
        recorder.event(Event("concurrency", CALM, 1, before=8 - n, after=7 - n, detail="CPU"))
        clock.now += 3.0
    assert ThrottleEvent.objects.filter(kind="concurrency").count() == 6  # every change is a row…
    assert lines(caplog) == [  # …but a line at most every 10 s
        "[tokens run 1] concurrency 8 -> 7: CPU",
        "[tokens run 1] concurrency 4 -> 3: CPU (and 3 more like it)",
    ]


def test_an_episode_is_one_row_updated_as_it_goes_and_closed_with_its_figures(settings, caplog):
    settings.BALLAST_LOG_REPEAT_S = 10.0
    clock = Clock()
    recorder = DatabaseRecorder("run-2", "users", "[users run 2]", clock=clock)
    episode = Episode(recorder, "throttle", "cpu", 0.0, reading(70, 10, process_cpu=10), CALM, "held at 10% CPU: neighbours use 60% of the 80% ceiling", 90)
    row = ThrottleEvent.objects.get()
    assert row.ongoing and row.duration_s == 0
    for t, cpu in ((1.0, 90), (2.5, 80), (4.0, 75)):
        clock.now = t
        episode.observe(t, reading(cpu, 10, process_cpu=10), "held at 12% CPU: neighbours use 68% of the 80% ceiling", 88)
    row.refresh_from_db()
    assert row.ongoing and row.duration_s == pytest.approx(2.5)  # rewritten at most every 2 s while it goes on
    assert list(ThrottleEvent.objects.ongoing()) == [row]
    clock.now = 5.0
    episode.end(5.0)
    row.refresh_from_db()
    assert not row.ongoing and row.ended_at is not None and row.duration_s == pytest.approx(5.0)
    assert (row.cpu_min, row.cpu_mean, row.cpu_max, row.own_cpu_mean) == (70, 78.8, 90, 10)
    assert row.detail == "held at 10% CPU: neighbours use 60% of the 80% ceiling"  # its tightest moment
    assert ThrottleEvent.objects.count() == 1
    assert lines(caplog) == [
        "[users run 2] throttle: held at 10% CPU: neighbours use 60% of the 80% ceiling",
        "[users run 2] throttle over after 5.0 s, machine CPU 70/79/90% (min/mean/max), this process 10%: "
        "held at 10% CPU: neighbours use 60% of the 80% ceiling",
    ]
