"""Logging of the edge: API keys given as query parameters never reach a log line."""

from __future__ import annotations

import logging
import re

_KEY_RE = re.compile(r"(api_key=)[^&\s\"']+|(bts_[0-9a-f]{12}_)[A-Za-z0-9_-]+")


def redact(text: str) -> str:
    return _KEY_RE.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)  # type: ignore[assignment]
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install() -> None:
    """Attach the filter to every logger (and handler) that may see a request line."""
    f = RedactKeys()
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn", ""):
        logger = logging.getLogger(name)
        logger.addFilter(f)
        for handler in logger.handlers:
            handler.addFilter(f)
