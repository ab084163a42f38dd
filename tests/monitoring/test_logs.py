import json
import logging
import subprocess
import sys

from monitoring.logs import JsonLines

from ..conftest import ROOT, child_env


def test_json_lines_carry_the_context_fields():
    record = logging.LogRecord("syncapp.steps", logging.INFO, __file__, 1, "[users run 7] %s", ("completed",), None)
    record.run, record.step, record.tenant = 7, "users", "acme"
    line = json.loads(JsonLines().format(record))
    assert line["message"] == "[users run 7] completed" and line["level"] == "INFO"
    assert (line["run"], line["step"], line["tenant"]) == (7, "users", "acme") and "owner" not in line


def test_log_format_json_switches_the_console_to_json_lines():
    setup = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); import logging; logging.getLogger('syncapp.steps').info('hello', extra={'run': 3})"],
        cwd=ROOT, env=child_env(LOG_FORMAT="json", DJANGO_SETTINGS_MODULE="project.settings"), capture_output=True, text=True,
    )
    assert setup.returncode == 0, setup.stderr
    assert json.loads(setup.stderr.strip().splitlines()[-1]) | {"time": None} == {
        "time": None, "level": "INFO", "logger": "syncapp.steps", "message": "hello", "run": 3,
    }


FAIL_A_REQUEST = """
import django; django.setup()
from django.test import Client
from monitoring import views
def boom():
    raise RuntimeError("boom")
views.readiness = boom
print(Client(raise_request_exception=False).get("/readyz", HTTP_HOST="127.0.0.1").status_code)
"""


def test_every_500_logs_its_traceback_in_text_and_in_json():
    for log_format in ("text", "json"):
        done = subprocess.run(
            [sys.executable, "-c", FAIL_A_REQUEST], cwd=ROOT, capture_output=True, text=True,
            env=child_env(LOG_FORMAT=log_format, DEBUG="false", DJANGO_SETTINGS_MODULE="project.settings"),
        )
        assert done.stdout.strip() == "500", done.stderr
        if log_format == "text":
            assert "ERROR django.request Internal Server Error: /readyz" in done.stderr
            assert "Traceback (most recent call last)" in done.stderr and "RuntimeError: boom" in done.stderr
        else:
            [line] = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{") and "django.request" in x]
            assert line["level"] == "ERROR" and line["exception"].rstrip().endswith("RuntimeError: boom")


def test_a_request_for_a_host_not_allowed_is_one_warning_line_not_a_traceback():
    script = ("import django; django.setup(); from django.test import Client; "
              "print(Client().get('/admin/login/', HTTP_HOST='scanner.example').status_code)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env=child_env(DEBUG="false", DJANGO_SETTINGS_MODULE="project.settings"))
    assert done.stdout.strip() == "400", done.stderr
    [line] = done.stderr.strip().splitlines()
    assert " WARNING django.security.DisallowedHost Invalid HTTP_HOST header: 'scanner.example'." in line
