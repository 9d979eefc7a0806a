"""LOG_FORMAT=json: one JSON object per line, with run/task/worker ids where given."""

import json
import logging
from datetime import UTC, datetime

CONTEXT_KEYS = ("run_id", "task_id", "worker_id")


class JsonFormatter(logging.Formatter):
    def format(self, record):
        payload = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
