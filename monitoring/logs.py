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
