"""The database backends serving the process count as its own CPU where they are seen: a fake
/proc for the rules, and a real PostgreSQL backend on this machine for the reading itself."""

import os
import time

import pytest
from django.db import connection

from monitoring.governor.readings.database import DatabaseCpu, Where, database_cpu, own_cpu_seconds

TICKS = os.sysconf("SC_CLK_TCK")


def write_stat(proc, pid: int, command: str, cpu_s: float, started: int = 1000) -> None:
    """/proc/PID/stat as Linux writes it: utime (14th field) holds the CPU, starttime the 22nd."""
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    fields = ["S", "1", str(pid), str(pid), "0", "-1", "4194368", "0", "0", "0", "0", str(round(cpu_s * TICKS)), "0",
              "0", "0", "20", "0", "1", "0", str(started), "224452608", "3191"]
    (proc / str(pid) / "stat").write_text(f"{pid} ({command}) {' '.join(fields)}\n")


def test_a_backend_on_this_machine_counts_from_when_it_began_serving_us(tmp_path):
    write_stat(tmp_path, 4242, "postgres", cpu_s=5.0)
    cpu = DatabaseCpu(tmp_path)
    cpu.connected("postgresql", 4242, "127.0.0.1")
    assert cpu.where is Where.HERE and cpu.usable_cores() == 2.0 and cpu.note() == ""
    assert cpu.seconds() == 0.0  # what it used before is another client's
    write_stat(tmp_path, 4242, "postgres", cpu_s=6.5)
    assert cpu.seconds() == pytest.approx(1.5)


def test_a_backend_that_went_keeps_what_it_used_and_a_pid_used_again_is_not_it(tmp_path):
    write_stat(tmp_path, 10, "postgres", cpu_s=1.0)
    write_stat(tmp_path, 11, "postgres", cpu_s=0.0)
    cpu = DatabaseCpu(tmp_path)
    cpu.connected("postgresql", 10, "/var/run/postgresql")  # a socket directory: this machine
    cpu.connected("postgresql", 11, "localhost")
    write_stat(tmp_path, 10, "postgres", cpu_s=3.0)
    write_stat(tmp_path, 11, "postgres", cpu_s=0.5)
    assert cpu.seconds() == pytest.approx(2.5)
    (tmp_path / "10" / "stat").unlink()  # its connection closed
    write_stat(tmp_path, 11, "postgres", cpu_s=9.0, started=2000)  # another process now has the pid
    assert cpu.seconds() == pytest.approx(2.5)  # a counter: it never goes back


def test_a_pooled_connection_handed_out_again_keeps_its_count(tmp_path):
    write_stat(tmp_path, 7, "postgres", cpu_s=1.0)
    cpu = DatabaseCpu(tmp_path)
    cpu.connected("postgresql", 7, "127.0.0.1")
    write_stat(tmp_path, 7, "postgres", cpu_s=2.0)
    cpu.connected("postgresql", 7, "127.0.0.1")
    assert cpu.seconds() == pytest.approx(1.0)


@pytest.mark.parametrize("host, command", [("db.internal", "postgres"), ("127.0.0.1", "pgbouncer"), ("127.0.0.1", None)])
def test_a_database_whose_backends_are_not_seen_here_is_said_to_be_elsewhere(tmp_path, host, command):
    if command:
        write_stat(tmp_path, 99, command, cpu_s=1.0)
    cpu = DatabaseCpu(tmp_path)
    cpu.connected("postgresql", 99, host)
    assert cpu.where is Where.ELSEWHERE and cpu.seconds() == 0.0 and cpu.usable_cores() == 1.0
    assert cpu.note() == "; the database's CPU is elsewhere, not counted"


def test_sqlite_is_the_process_itself(tmp_path):
    cpu = DatabaseCpu(tmp_path)
    cpu.connected("sqlite")
    assert cpu.where is Where.IN_PROCESS and cpu.note() == "" and cpu.usable_cores() == 1.0


@pytest.mark.django_db
def test_the_cpu_a_statement_costs_the_backend_is_the_process_own():
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL backend on this machine")
    connection.ensure_connection()
    assert database_cpu.where is Where.HERE
    process, own = time.process_time(), own_cpu_seconds()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM generate_series(1, 3000000)")  # work for the backend alone
    backend = (own_cpu_seconds() - own) - (time.process_time() - process)
    assert backend >= 0.05  # the backend's seconds, not this process's (which only waited)
