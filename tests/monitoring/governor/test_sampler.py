import threading

from monitoring.governor.readings.fake import FixedReader, reading
from monitoring.governor.sampler import Sampler, get_sampler


class SignallingReader(FixedReader):
    """Sets an event after its nth reading, so the test waits on the thread, not on a clock."""

    def __init__(self, readings, after: int):
        super().__init__(readings)
        self.after, self.reached = after, threading.Event()

    def read(self):
        value = super().read()
        if self.calls >= self.after:
            self.reached.set()
        return value


def test_readers_of_the_snapshot_get_the_cached_reading():
    reader = FixedReader([reading(10, 10), reading(50, 20)])
    sampler = Sampler(reader, interval=60)
    assert sampler.latest().cpu_percent == 10
    assert sampler.latest().cpu_percent == 10 and reader.calls == 1  # no reading on the hot path
    sampler.sample()
    assert sampler.latest().cpu_percent == 50


def test_the_thread_samples_every_interval_until_stopped():
    reader = SignallingReader([reading(10, 10), reading(20, 10), reading(30, 10)], after=3)
    sampler = Sampler(reader, interval=0.01).start()
    assert reader.reached.wait(10)
    sampler.stop()
    calls = reader.calls
    assert sampler.latest().cpu_percent == 30
    assert not sampler._thread.is_alive() and reader.calls == calls


def test_one_sampler_per_process_reading_through_the_configured_reader(settings):
    assert get_sampler() is get_sampler()
    assert settings.BALLAST_READER == "monitoring.governor.readings.fake.CalmReader"
    latest = get_sampler().latest()
    assert (latest.cpu_scope, latest.cpu_capacity, latest.cpu_percent) == ("calm (tests), 2 CPUs", 2.0, 10.0)
