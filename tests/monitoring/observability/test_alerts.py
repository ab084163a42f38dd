import re

import pytest

from monitoring.governor.readings.fake import reading
from monitoring.observability.alerts import ResourceAlerts
from monitoring.signals import memory_pressure, resource_alert


@pytest.fixture
def received():
    seen = []

    def on(signal_name):
        def receiver(sender, **kwargs):
            seen.append((signal_name, kwargs.get("level") or kwargs.get("alerts") or kwargs.get("site")))
        return receiver

    receivers = {memory_pressure: on("pressure"), resource_alert: on("alert")}
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    yield seen
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


def test_levels_signal_changes(received):
    manager = ResourceAlerts()
    assert manager.check(reading(10, 50)) == "ok"
    assert manager.check(reading(10, 72)) == "warning"
    assert manager.check(reading(10, 90)) == "critical"
    manager.check(reading(10, 40))
    assert [name for name, _ in received if name == "pressure"] == ["pressure"] * 3
    assert [value for name, value in received if name == "pressure"] == ["warning", "critical", "ok"]


def test_an_alert_is_a_condition_that_lasts_one_line_to_start_one_to_end(received, caplog):
    manager = ResourceAlerts()
    at = 0.0
    for n in range(120):  # a minute of CPU at the 80% ceiling, where the governor holds it, every half second
        at += 0.5
        manager.check(reading((78, 86, 80, 84)[n % 4], 10, at=at))  # 82% on average, readings up to 86%
    assert [v for name, v in received if name == "alert"] == []  # no more than the margin over it
    for _ in range(19):  # the machine stays at 95%: after ten seconds of it, one alert
        at += 0.5
        manager.check(reading(95, 10, at=at))
    assert [v for name, v in received if name == "alert"] == []
    for _ in range(40):
        at += 0.5
        manager.check(reading(95, 10, at=at))
    [alert] = [v for name, v in received if name == "alert"]
    assert re.fullmatch(r"CPU 9\d% over its 80% ceiling for 10 s", alert[0])  # the average, a little under 95
    for _ in range(40):  # back under: the alert ends with a summary
        at += 0.5
        manager.check(reading(30, 10, at=at))
    lines = [r.getMessage() for r in caplog.records if r.name == "monitoring.alerts"]
    assert len(lines) == 2
    assert lines[0].startswith(f"resource alert: {alert[0]} (syncs slow down until it falls; ")
    assert lines[1].startswith("resource alert over: CPU back under its 80% ceiling after") and "peak 95%" in lines[1]
