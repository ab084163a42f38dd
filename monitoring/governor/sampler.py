"""One sampler thread per process: reads resources every interval and caches the reading.

Readers of `latest()` pay an attribute load; only the thread touches /proc, /sys and psutil.
The process's own sampler announces each reading (signals.reading_taken): the memory manager
listens, the sampler knows nobody.
"""

import logging
import threading
import time
from collections import deque

from django.conf import settings
from django.utils.module_loading import import_string

from monitoring.signals import reading_taken

from .readings import Reading

log = logging.getLogger(__name__)
HISTORY = 1200  # readings kept in memory: ten minutes at the default interval
# A reading covers the time since the reader's last one: the first, taken as the sampler starts,
# would cover a moment and show an idle machine (no neighbours, so a full allowance), and the
# process's first step would run over the ceiling until the next. It waits this long first.
FIRST_WINDOW_S = 0.1


class Sampler:
    def __init__(self, reader, interval: float, announce: bool = False):
        self.reader = reader
        self.announce = announce  # the process's own sampler: its readings are the process's
        self.interval = interval
        self._latest: Reading = reader.read()
        self.history: deque[Reading] = deque([self._latest], maxlen=HISTORY)  # the dashboard's last minutes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self) -> Reading:
        return self._latest

    def sample(self) -> Reading:
        """Read now (the thread does this every interval; tests call it directly)."""
        self._latest = self.reader.read()
        self.history.append(self._latest)
        if self.announce:
            reading_taken.send(Sampler, reading=self._latest)
        return self._latest

    def start(self) -> "Sampler":
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ballast-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a reading that fails once must not end the sampling
                log.exception("resource sampling failed")


_sampler: Sampler | None = None
_lock = threading.Lock()
_pid: int | None = None


def configured_reader():
    """The site's reader (BALLAST_READER: a dotted path; the system's by default)."""
    reader_class = import_string(getattr(settings, "BALLAST_READER", "monitoring.governor.readings.SystemReader"))
    return reader_class(cgroup_root=getattr(settings, "BALLAST_CGROUP_ROOT", "/sys/fs/cgroup"))


def get_sampler() -> Sampler:
    """This process's running sampler, made on first use (and again in a forked child)."""
    import os

    global _sampler, _pid
    with _lock:
        if _sampler is None or _pid != os.getpid():
            reader = configured_reader()
            time.sleep(FIRST_WINDOW_S)
            _sampler = Sampler(reader, getattr(settings, "BALLAST_SAMPLE_INTERVAL_S", 0.5), announce=True).start()
            _pid = os.getpid()
        return _sampler
