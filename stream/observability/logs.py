"""Logging set-up: human-readable text or one JSON object per line.

Structured fields passed with ``extra=`` (topic, partition, offset, generation,
partitions) appear as JSON keys, so that every warning on the rebalance and
commit paths can be searched by partition and offset.

    >>> import io, json, logging
    >>> buf = io.StringIO()
    >>> logger = configure_logging("json", "INFO", stream=buf, name="doctest")
    >>> logger.warning("commit failed", extra={"partition": 3, "offset": 42})
    >>> rec = json.loads(buf.getvalue())
    >>> rec["message"], rec["partition"], rec["offset"], rec["level"]
    ('commit failed', 3, 42, 'WARNING')
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO

__all__ = ["configure_logging", "JsonFormatter", "StderrHandler"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return base


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each record, not as it was when the handler was made.

    Why: a process that swaps ``sys.stderr`` (a test harness capturing output, an application embedding
    ``run_cli``) and later closes the old stream would otherwise fail every record logged afterwards,
    the client libraries' background threads' among them, with "I/O operation on closed file".
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # (StreamHandler's own would pin the stream)

    @property
    def stream(self) -> IO[str]:  # type: ignore[override]
        return sys.stderr


def configure_logging(fmt: str = "text", level: str = "INFO", *, stream: IO[str] | None = None,
                      name: str | None = None) -> logging.Logger:
    """Send ``name``'s records (the root logger's when None) to ``stream`` (default: ``sys.stderr``, looked
    up at each record), as text or JSON lines."""
    handler = logging.StreamHandler(stream) if stream is not None else StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    if name is None:
        logging.getLogger("kafka").setLevel(max(logging.WARNING, logger.level))
        # kafka-python's IO loop warns whenever the GIL-holding batch work delays it by >100 ms: noise here
        logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    else:
        logger.propagate = False
    return logger
