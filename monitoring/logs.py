"""Log formats: one line per event, as text or (LOG_FORMAT=json) as JSON lines carrying the
run, step and tenant as fields when the event has them (logger.info(..., extra={"run": 42}))."""

import json
import logging

CONTEXT_FIELDS = ("run", "step", "tenant", "route", "owner")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class Repeats:
    """At most one log line per condition per `every_s` seconds; the ones held back are counted
    and told with the next line that goes out ("and 4 more like it")."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self._last: dict = {}  # condition → (time of the last line out, lines held back since)

    def allow(self, condition, now: float) -> tuple[bool, int]:
        """(may this line go out now, how many were held back before it)."""
        last, held = self._last.get(condition, (float("-inf"), 0))
        if now - last < self.every_s:
            self._last[condition] = (last, held + 1)
            return False, held + 1
        self._last[condition] = (now, 0)
        return True, held


class OneWarningLine(logging.Filter):
    """A condition worth a warning, not an error's traceback: Django logs a request for a host
    that ALLOWED_HOSTS does not name (every scanner sends some) as an ERROR with its traceback;
    its message alone says everything ("Invalid HTTP_HOST header: 'x'. You may need to add…")."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info = record.exc_text = None
        record.stack_info = None
        return True
