"""Log set-up: one line per event, human-readable or JSON, with job id and attempt when known."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_JOB_FIELDS = ("job_id", "attempt", "worker_id", "outcome")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ctx = " ".join(
            f"{name}={getattr(record, name)}" for name in _JOB_FIELDS if hasattr(record, name)
        )
        line = f"{stamp}.{int(record.msecs):03d}Z {record.levelname} {record.name}"
        if ctx:
            line += f" [{ctx}]"
        line += f" {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _JOB_FIELDS:
            if hasattr(record, name):
                body[name] = getattr(record, name)
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party clients log every request at INFO; keep the daemon's log about jobs.
    for noisy in ("httpx", "httpcore", "urllib3", "langfuse", "opentelemetry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
