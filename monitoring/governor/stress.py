"""A synthetic CPU and memory load run under the governor, to check on a machine that the
ceilings hold. The load asks the governor before each unit of work, as a sync step does."""

import hashlib
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import psutil

from .events import ListRecorder
from .policy import MB, State, memory_headroom, pressure
from .profiles import route_policy
from .readings import Reading
from .route import Governor
from .sampler import configured_reader

CHUNK = b"\x5a" * MB  # hashing a megabyte releases the GIL: threads really use several cores
HOLD_STEP_MB = 16
# Room left beside a new step for the process's own churn (the sampler's readings, allocator
# slack): a step taken at exactly the headroom went 0.07 MB over the RSS ceiling in a CI run.
HOLD_MARGIN_MB = 2


@dataclass
class StressReport:
    seconds: float
    cpu_ceiling: float
    memory_ceiling: float
    cpu: list = field(default_factory=list)  # this process's CPU, percent of the capacity, per reading
    machine_cpu: list = field(default_factory=list)  # everything's, neighbours included
    memory: list = field(default_factory=list)  # memory pressure, percent (RSS ceiling included)
    rss_mb: list = field(default_factory=list)
    units: int = 0
    held_mb: int = 0
    events: dict = field(default_factory=dict)

    @staticmethod
    def _p95(values: list) -> float:
        return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) >= 2 else (values[0] if values else 0.0)

    def as_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 1),
            "work_units": self.units,
            "memory_held_mb": self.held_mb,
            "cpu": {"ceiling": self.cpu_ceiling, "peak": round(max(self.cpu, default=0), 1), "p95": round(self._p95(self.cpu), 1)},
            "machine_cpu": {"ceiling": self.cpu_ceiling, "peak": round(max(self.machine_cpu, default=0), 1), "p95": round(self._p95(self.machine_cpu), 1)},
            "memory": {"ceiling": self.memory_ceiling, "peak": round(max(self.memory, default=0), 1), "p95": round(self._p95(self.memory), 1)},
            "rss_mb": {"peak": round(max(self.rss_mb, default=0), 1)},
            "governor_events": self.events,
        }


def run_stress(*, cpu: bool, memory_mb: int, seconds: float, reader=None, progress=None) -> StressReport:
    reader = reader or configured_reader()
    # Waits are short so the load keeps to its duration; brakes are off: this checks the ceilings.
    policy = route_policy("stress").with_overrides(max_wait_s=0.5, brake_after=10**6, batch_size=1)
    latest: list[Reading] = [reader.read()]
    # Hashing releases the interpreter lock: this load can use every core of the scope.
    governor = Governor(policy, read=lambda: latest[0], recorder=ListRecorder(label="[stress]"), usable_cores=latest[0].cpu_capacity)
    report = StressReport(seconds=seconds, cpu_ceiling=policy.max_cpu_percent, memory_ceiling=policy.max_memory_percent)
    held: list[bytearray] = []
    stop = threading.Event()

    def sample() -> None:  # the load's own sampler: one reading per second, the report's window
        while not stop.wait(1.0):
            reading = reader.read()
            latest[0] = reading
            report.cpu.append(reading.process_cpu_percent)
            report.machine_cpu.append(reading.cpu_percent)
            report.memory.append(pressure(reading, policy).memory)
            report.rss_mb.append(reading.rss_bytes / MB)

    sampler = threading.Thread(target=sample, name="stress-sampler", daemon=True)
    sampler.start()
    workers = max(1, int(latest[0].cpu_capacity))
    process = psutil.Process()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while time.monotonic() - started < seconds:
                decision = governor.before_batch()
                # Hold more only where it fits under the ceilings now (RSS read fresh, not from the last sample).
                now = replace(latest[0], rss_bytes=process.memory_info().rss)
                if memory_mb and sum(len(b) for b in held) < memory_mb * MB and decision.state in (State.OK, State.BUSY) \
                        and memory_headroom(now, policy) >= (HOLD_STEP_MB + HOLD_MARGIN_MB) * MB:
                    held.append(bytearray(HOLD_STEP_MB * MB))  # touched pages: real RSS
                    held[-1][:: 4096] = b"\x01" * len(held[-1][:: 4096])
                if cpu:
                    jobs = [pool.submit(lambda: [hashlib.sha256(CHUNK).digest() for _ in range(8)]) for _ in range(workers)]
                    for job in jobs:
                        job.result()
                else:
                    time.sleep(0.05)
                report.units += 1
                governor.after_batch(1)
                if progress:
                    progress(time.monotonic() - started, latest[0], decision)
    finally:
        stop.set()
        sampler.join()
    report.seconds = time.monotonic() - started
    report.held_mb = sum(len(b) for b in held) // MB
    for event in governor.recorder.events:
        report.events[event.kind] = report.events.get(event.kind, 0) + 1
    return report
