"""Readers against fake cgroup trees: the container's figures win over the host's."""

from pathlib import Path

import pytest

from monitoring.governor.readings import SystemReader
from monitoring.governor.readings.cgroup import CgroupV1, CgroupV2, find_container
from monitoring.governor.readings.psi import some_avg10

GB = 1024**3


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def proc(tmp_path):
    write(tmp_path / "proc", {"self/cgroup": "0::/app.slice/ballast\n", "pressure/cpu": "some avg10=7.50 avg60=1 avg300=0 total=5\n"})
    return tmp_path / "proc"


@pytest.fixture
def v2(tmp_path):
    group = "cg/app.slice/ballast/"
    write(tmp_path, {
        "cg/cgroup.controllers": "cpu io memory pids\n",
        group + "memory.max": f"{2 * GB}\n",
        group + "memory.current": f"{GB}\n",
        group + "memory.stat": f"anon 100\ninactive_file {GB // 4}\nactive_file 5\n",
        group + "cpu.max": "150000 100000\n",
        group + "cpu.stat": "usage_usec 1000000\nuser_usec 1\nsystem_usec 1\nnr_periods 10\nnr_throttled 2\n",
        group + "memory.pressure": "some avg10=12.25 avg60=3 avg300=1 total=9\nfull avg10=1 avg60=0 avg300=0 total=1\n",
    })
    return tmp_path / "cg"


def test_cgroup_v2_limits_usage_and_pressure(v2, proc):
    source = find_container(v2, proc)
    assert isinstance(source, CgroupV2)
    assert source.memory_limit() == 2 * GB
    assert source.memory_used() == GB - GB // 4  # working set: current less inactive_file
    assert source.cpu_quota() == 1.5
    assert source.cpu_usage_seconds() == 1.0
    assert source.cpu_throttled() == 2
    assert source.pressure("memory") == 12.25


def test_unlimited_v2_reports_none(v2, proc):
    group = v2 / "app.slice/ballast"
    (group / "memory.max").write_text("max\n")
    (group / "cpu.max").write_text("max 100000\n")
    source = find_container(v2, proc)
    assert source.memory_limit() is None and source.cpu_quota() is None


def test_the_reader_uses_the_container_not_the_host(v2, proc):
    """On a four-CPU host, all of them allowed (injected: `taskset` around the test changes nothing)."""
    (proc / "stat").write_text(stat((0, 0), (0, 0), (0, 0), (0, 0)))
    clock = Clock()
    reader = SystemReader(cgroup_root=v2, proc=proc, clock=clock, allowed=lambda: frozenset(range(4)))
    clock.now += 2.0
    cpu_stat = v2 / "app.slice/ballast/cpu.stat"
    cpu_stat.write_text("usage_usec 2500000\nnr_throttled 5\n")  # 1.5 s of CPU in 2 s on a 1.5-core quota
    reading = reader.read()
    assert reading.source == "cgroup v2"
    assert reading.memory_limit_bytes == 2 * GB  # not the host's memory
    assert reading.memory_percent == pytest.approx(37.5)
    assert reading.cpu_capacity == 1.5
    assert reading.cpu_percent == pytest.approx(50.0)
    assert reading.cpu_throttled == 3
    assert reading.memory_pressure == 12.25
    assert reading.cpu_pressure == 7.5  # the group keeps none for cpu: the system's


def stat(*cpus: tuple[int, int]) -> str:
    """A /proc/stat with one line per CPU: (busy ticks, idle ticks) each; the aggregate line lags on purpose."""
    lines = ["cpu  1 0 0 1 0 0 0 0 0 0"]
    for n, (busy, idle) in enumerate(cpus):
        lines.append(f"cpu{n} {busy - 10} 0 10 {idle} 0 0 0 0 0 0")
    return "\n".join(lines + ["intr 12345", "ctxt 99"]) + "\n"


@pytest.fixture
def host(tmp_path):
    """No cgroup limits; a two-CPU host in /proc/stat (100 ticks a second) and a process clock we set."""
    write(tmp_path, {"proc/self/cgroup": "0::/\n", "proc/stat": stat((1000, 1000), (1000, 1000))})
    clock, cpu = Clock(), [0.0]

    def reader(allowed=frozenset({0, 1})):
        return SystemReader(
            cgroup_root=tmp_path / "nothing", proc=tmp_path / "proc", clock=clock, process_cpu=lambda: cpu[0], allowed=lambda: allowed,
        )

    return tmp_path / "proc", clock, cpu, reader


def test_the_host_scope_adds_up_every_cpu(host, monkeypatch):
    monkeypatch.setattr("os.sysconf", lambda name: 100)
    proc, clock, cpu, reader = host
    made = reader()
    (proc / "stat").write_text(stat((1100, 1100), (1150, 1050)))  # 1 s + 1.5 s busy in 2 s
    clock.now += 2.0
    cpu[0] = 0.5  # this process: half a core for those 2 s
    reading = made.read()
    assert reading.cpu_scope == "host, 2 CPUs" and reading.cpu_capacity == 2.0
    assert reading.cpu_percent == pytest.approx(62.5)  # 2.5 CPU-seconds of 4
    assert reading.process_cpu_percent == pytest.approx(12.5)
    assert reading.neighbours_cpu_percent == pytest.approx(50.0)
    assert reading.window_s == pytest.approx(2.0)


def test_an_affinity_mask_reads_exactly_its_own_cpus(host, monkeypatch):
    monkeypatch.setattr("os.sysconf", lambda name: 100)
    proc, clock, cpu, reader = host
    made = reader(allowed=frozenset({1}))  # taskset -c 1
    (proc / "stat").write_text(stat((1200, 1000), (1050, 1150)))  # CPU 0 busy, CPU 1 a quarter busy
    clock.now += 2.0
    cpu[0] = 0.3
    reading = made.read()
    assert reading.cpu_scope == "CPUs 1" and reading.cpu_capacity == 1.0
    assert reading.cpu_percent == pytest.approx(25.0)  # CPU 1 only: not the whole host's 62.5%
    assert reading.process_cpu_percent == pytest.approx(15.0)


def test_a_change_of_scope_starts_the_differences_again(host, monkeypatch):
    monkeypatch.setattr("os.sysconf", lambda name: 100)
    proc, clock, cpu, reader = host
    allowed = [frozenset({0, 1})]
    made = SystemReader(cgroup_root=proc.parent / "nothing", proc=proc, clock=clock, process_cpu=lambda: cpu[0], allowed=lambda: allowed[0])
    allowed[0] = frozenset({0})
    (proc / "stat").write_text(stat((1200, 1000), (1000, 1200)))
    clock.now += 1.0
    first = made.read()
    assert first.cpu_scope == "CPUs 0" and first.cpu_percent == 0.0  # no difference across scopes
    (proc / "stat").write_text(stat((1250, 1050), (1000, 1300)))
    clock.now += 1.0
    assert made.read().cpu_percent == pytest.approx(50.0)


def test_a_cgroup_quota_pairs_with_the_cgroups_usage_whatever_the_affinity(v2, proc):
    clock = Clock()
    reader = SystemReader(cgroup_root=v2, proc=proc, clock=clock, allowed=lambda: frozenset({0}))
    clock.now += 1.0
    (v2 / "app.slice/ballast/cpu.stat").write_text("usage_usec 1750000\n")
    reading = reader.read()
    assert reading.cpu_scope == "cgroup v2 quota, 1.5 CPUs" and reading.cpu_capacity == 1.5
    assert reading.cpu_percent == pytest.approx(50.0)  # 0.75 s of 1.5 cores


def test_a_cgroup_without_a_quota_reads_the_cpus(v2, proc, monkeypatch):
    monkeypatch.setattr("os.sysconf", lambda name: 100)
    (v2 / "app.slice/ballast/cpu.max").write_text("max 100000\n")
    (proc / "stat").write_text(stat((1000, 1000), (1000, 1000), (1000, 1000), (1000, 1000)))
    reader = SystemReader(cgroup_root=v2, proc=proc, allowed=lambda: frozenset({2, 3}))
    assert reader.read().cpu_scope == "CPUs 2,3" and reader.read().cpu_capacity == 2.0


def test_cgroup_v1_as_on_our_build_machines(tmp_path):
    write(tmp_path, {
        "proc/self/cgroup": "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n",
        "cg/memory/process_api/abc/memory.limit_in_bytes": f"{GB}\n",
        "cg/memory/process_api/abc/memory.usage_in_bytes": f"{GB // 2}\n",
        "cg/memory/process_api/abc/memory.stat": f"cache 5\ntotal_inactive_file {GB // 8}\n",
        "cg/cpu/cpu.cfs_quota_us": "50000\n",
        "cg/cpu/cpu.cfs_period_us": "100000\n",
        "cg/cpuacct/cpuacct.usage": "3000000000\n",
        "cg/unified/cgroup.controllers": "cpu io\n",  # v2 mounted, but without memory
    })
    source = find_container(tmp_path / "cg", tmp_path / "proc")
    assert isinstance(source, CgroupV1)
    assert source.memory_limit() == GB
    assert source.memory_used() == GB // 2 - GB // 8
    assert source.cpu_quota() == 0.5
    assert source.cpu_usage_seconds() == 3.0


def test_v1_without_a_limit(tmp_path):
    write(tmp_path, {
        "proc/self/cgroup": "4:memory:/\n",
        "cg/memory/memory.limit_in_bytes": "9223372036854771712\n",
        "cg/memory/memory.usage_in_bytes": "100\n",
        "cg/cpu/cpu.cfs_quota_us": "-1\n",
        "cg/cpu/cpu.cfs_period_us": "100000\n",
    })
    source = find_container(tmp_path / "cg", tmp_path / "proc")
    assert source.memory_limit() is None and source.cpu_quota() is None


def test_no_cgroup_means_the_host(tmp_path):
    write(tmp_path, {"proc/self/cgroup": "0::/\n"})
    assert find_container(tmp_path / "nothing", tmp_path / "proc") is None
    reading = SystemReader(cgroup_root=tmp_path / "nothing", proc=tmp_path / "proc").read()
    assert reading.source == "host" and reading.memory_limit_bytes > 0 and reading.rss_bytes > 0
    assert reading.cpu_pressure is None  # no PSI files: optional


@pytest.mark.parametrize("text, value", [("some avg10=1.50 avg60=0 avg300=0 total=1\n", 1.5), ("garbage", None), ("", None)])
def test_psi_parsing(tmp_path, text, value):
    (tmp_path / "cpu").write_text(text)
    assert some_avg10(tmp_path / "cpu") == value


def test_this_machine_reads_without_error():
    reading = SystemReader().read()
    assert reading.cpu_capacity >= 1 and 0 <= reading.memory_percent <= 100
