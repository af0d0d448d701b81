"""``--log-format json``: one JSON object per line (time, level, logger, message, node when known).

The node comes from the record's ``node`` attribute, which the per-tunnel ``LoggerAdapter``s
set (``extra={"node": ...}``). Default stays the text format.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

__all__ = ["LOG_FORMATS", "JsonFormatter", "add_log_format_argument", "setup_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        node = getattr(record, "node", None)
        if node is not None:
            entry["node"] = str(node)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format", default="text", choices=LOG_FORMATS,
        help="text (default: time level logger message) or json (one object per line: time, level, logger, "
        "message, node)",
    )


def setup_logging(level: str, fmt: str = "text") -> None:
    """Configure the root logger once, in ``main`` (style 4.7)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
