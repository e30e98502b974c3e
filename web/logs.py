"""Logging of the edge: API keys given as query parameters never reach a log line.

Nor do credentials in headers, which uvicorn's WebSocket handshake logs one by one
at debug level (``< x-api-key: …``, ``< authorization: Bearer …``): the header
name and value arrive as separate arguments, so the formatted line is checked too.
"""

from __future__ import annotations

import logging
import re

_KEY_RE = re.compile(r"(api_key=|[?&]key=)[^&\s\"']+|(bts_[0-9a-f]{12}_)[A-Za-z0-9_-]+")
_HEADER_RE = re.compile(
    r"((?:authorization|x-api-key|x-admin-key)\s*[:=]\s*(?:(?:bearer|basic)\s+)?)[^\s\"',]+",
    re.IGNORECASE)


def redact(text: str) -> str:
    text = _KEY_RE.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)
    return _HEADER_RE.sub(lambda m: m.group(1) + "***", text)


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)  # type: ignore[assignment]
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if record.args and record.name != "uvicorn.access":  # its formatter needs the args
            try:
                text = record.getMessage()
            except (TypeError, ValueError):
                return True
            clean = redact(text)
            if clean != text:
                record.msg, record.args = clean, ()
        return True


def install() -> None:
    """Attach the filter to every logger (and handler) that may see a request line."""
    f = RedactKeys()
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn", ""):
        logger = logging.getLogger(name)
        logger.addFilter(f)
        for handler in logger.handlers:
            handler.addFilter(f)
