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
