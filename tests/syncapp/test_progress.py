"""What `sync --wait` and `demo` show while a run goes on: bars on a terminal, plain lines
elsewhere, nothing with --quiet."""

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from syncapp import progress
from syncapp.models import SyncRun

from ..conftest import ROOT, child_env
from ..factories import TenantFactory
from ..fakegoogle import USERS_PATH, google_error

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def sync(*args) -> str:
    out = StringIO()
    call_command("sync", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_plain_lines_elsewhere_than_a_terminal_at_most_every_few_seconds(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 3600.0)  # so only the first and the last line may print
    TenantFactory(slug="acme", provider_config={"users": 40, "apps": 5})
    lines = sync("acme", "--in-process").splitlines()
    run = SyncRun.objects.get()
    assert len(lines) == 3, lines  # the first look, the last, and the outcome
    last = lines[1]
    assert last.startswith(f"run #{run.pk} acme: completed (")
    assert re.search(r"\| users 100% 40 of 40 users, [\d,]+/s, done in \d+ s \|", last), last
    assert re.search(r"\| tokens 100% 40 of 40 users asked, ", last) and re.search(r"\| relations 100% (\d+) of \1 tokens, ", last), last
    assert lines[2] == f"Run #{run.pk} Completed in {run.duration_s:.1f} s."


@pytest.mark.django_db(transaction=True)
def test_quiet_says_only_how_it_ended():
    TenantFactory(slug="acme", provider_config={"users": 10})
    out = sync("acme", "--in-process", "--quiet")
    assert re.fullmatch(r"Run #\d+ Completed in [\d.]+ s\.\n", out), out


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death this test causes
def test_a_run_whose_worker_here_dies_before_finishing_it_is_not_followed_for_ever(monkeypatch):
    """Found by the hostile-input suite: the command waited for ever on a run its thread would
    never finish."""
    def dies(run_id):
        raise RuntimeError("the worker died")

    monkeypatch.setattr(progress, "run_in_process", dies)
    TenantFactory(slug="acme", provider_config={"users": 10})
    out = StringIO()
    with pytest.raises(CommandError):  # a run that did not complete exits 1
        call_command("sync", "acme", "--in-process", stdout=out, stderr=StringIO())
    assert "The run's worker stopped before finishing it: see the log for why." in out.getvalue()
    assert SyncRun.objects.get().finished_at is None


def _in_a_terminal(command: list[str], columns: int, env: dict) -> str:
    """Run a command on a pseudo-terminal `columns` wide; return all it wrote there."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=120)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.django_db(transaction=True)
def test_bars_fit_the_terminal_and_log_lines_go_above_them(fake_google):
    users = [{"id": str(1000 + i), "primaryEmail": f"u{i}@example.org", "name": {"fullName": f"U {i}"}} for i in range(30)]
    fake_google.load(users, {u["id"]: [{"clientId": "a.apps", "displayText": "A", "scopes": ["openid"]}] for u in users})
    fake_google.fail_next(f"{USERS_PATH}/1007/tokens", 404, google_error(404, "Resource Not Found: userKey", "notFound"))
    TenantFactory(slug="acme", provider="google", provider_config={"base_url": fake_google.url, "access_token": "static-test-token"})
    screen = _in_a_terminal(
        [sys.executable, "manage.py", "sync", "acme", "--in-process"], 60, child_env(COLUMNS="", TERM="xterm-256color"),
    )
    assert "Traceback" not in screen
    lines = [ANSI.sub("", line) for line in re.split(r"\r\n|\r|\n", screen)]
    logged = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) ")
    shown = [line for line in lines if not logged.match(line)]
    assert max(len(line) for line in shown) <= 60, [line for line in shown if len(line) > 60]
    # The warning starts a line of its own (folded to the width, as a terminal would); no bar is glued to it.
    assert any(line.startswith("WARNING syncapp.steps.tokens", 24) for line in lines if logged.match(line))
    assert "tokens of user 1007 not read: GET /admin/directory/v1/users/1007/tokens: 404 Resource Not Found: userKey" in "".join(lines)
    assert not any("━" in line and ("WARNING" in line or "INFO" in line) for line in lines)
    # The last look: at 60 columns the bar gives way, each step keeps one whole line.
    run = SyncRun.objects.get()
    last = lines[-6:-2]
    assert last[0] == f"run #{run.pk} acme: completed with errors ({round(run.duration_s)} s)"
    assert re.fullmatch(r"  users +30 of 30 users +[\d,]+/s +done in \d+ s *", last[1]), last
    assert re.fullmatch(r"  tokens +30 of 30 users asked +[\d,]+/s +with errors in \d+ s *", last[2]), last
    assert re.fullmatch(r"  relations +29 of 29 tokens +[\d,]+/s +done in \d+ s *", last[3]), last
