"""JSON encoding used on every topic and in Redis: compact UTF-8 (orjson)."""

from __future__ import annotations

from typing import Any

import orjson

DecodeError = orjson.JSONDecodeError
#: Raised by :func:`dumps` for what a record cannot carry: an integer beyond 64 bits, a
#: string with a lone surrogate, an object of another type (orjson's ``TypeError``).
EncodeError = orjson.JSONEncodeError


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)
