"""This process: its identity, stop requests from signals, a worker that lost its supervisor."""

import os
import signal

import pytest

from monitoring.ledger import processes as process
from monitoring.ledger.processes import ProcessId, gone, request_stop_on_signals, restore_signals, stop_if_orphaned, stop_request, this_process, working


@pytest.fixture
def request_():
    """The process's stop request, cleared afterwards (every later test's steps would stop)."""
    request = stop_request()
    yield request
    request.clear()
    request.exit_when_idle = False


@pytest.fixture
def exits(monkeypatch):
    happened = []
    monkeypatch.setattr(process, "_exit", lambda: happened.append("exit"))
    return happened


def test_a_process_is_known_by_host_pid_and_start_time():
    me = this_process()
    assert me.pid == os.getpid() and not gone(me)
    assert gone(ProcessId(me.host, me.pid, me.started - 60))  # our pid, but its holder started before us: another process
    assert gone(ProcessId(me.host, 999_999, me.started))
    assert not gone(ProcessId("another-host", 999_999, me.started))  # nothing can be seen of another machine's processes


def test_signals_become_a_stop_request_that_knows_a_person_from_a_supervisor(request_):
    previous = request_stop_on_signals(signal.SIGINT, signal.SIGTERM, by_person=(signal.SIGINT,))
    try:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: handled, no KeyboardInterrupt
        assert request_.wait(5) and request_.by_person and request_.reason == "stopped by SIGINT"
        request_.clear()
        os.kill(os.getpid(), signal.SIGTERM)
        assert request_.wait(5) and not request_.by_person and request_.reason == "stopped by SIGTERM"
    finally:
        restore_signals(previous)
    assert signal.getsignal(signal.SIGTERM) is previous[signal.SIGTERM]


def test_an_orphaned_worker_finishes_its_work_then_exits(request_, exits, monkeypatch):
    parent = os.getppid()
    stop_if_orphaned(parent)
    assert not request_.is_set()  # its supervisor lives
    monkeypatch.setattr(os, "getppid", lambda: 1)  # adopted: the sentinel died
    with working():
        stop_if_orphaned(parent)
        assert request_.is_set() and "supervisor (process" in request_.reason
        assert exits == []  # not in the middle of a step
    assert exits == ["exit"]  # once the step ended


def test_an_idle_orphan_exits_at_once(request_, exits, monkeypatch):
    parent = os.getppid()
    monkeypatch.setattr(os, "getppid", lambda: 1)
    stop_if_orphaned(parent)
    assert exits == ["exit"]
