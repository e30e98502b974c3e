"""Validate records against the JSON schemas that ship in ``tables/schemas/``.

The schemas (JSON Schema draft 2020-12) are the partner contract for the
records of :mod:`tables.records`; ``asyncapi.json`` beside them describes the
public topics. Schemas are read from the installed package once and their
validators cached.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

__all__ = ["KINDS", "SchemaError", "schema", "validate"]

#: Record kinds, each with ``tables/schemas/{kind}.schema.json``.
KINDS: tuple[str, ...] = ("match", "delta", "raw-fetch", "dead-letter")


class SchemaError(ValueError):
    """A record does not match its schema.

    ``kind`` is the record kind, ``path`` the JSON path of the offending value
    (``$.events[2].minute``) and ``reason`` the validator's message.
    """

    def __init__(self, kind: str, path: str, reason: str) -> None:
        super().__init__(f"{kind} record invalid at {path}: {reason}")
        self.kind = kind
        self.path = path
        self.reason = reason


def _read(name: str) -> dict[str, Any]:
    text = resources.files("tables").joinpath("schemas", name).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def schema(kind: str) -> dict[str, Any]:
    """The JSON schema of a record kind (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise KeyError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    return _read(f"{kind}.schema.json")


@cache
def _validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(schema(kind), format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate(kind: str, record: Any) -> None:
    """Raise :class:`SchemaError` unless ``record`` is a valid record of ``kind``."""
    error = best_match(_validator(kind).iter_errors(record))
    if error is not None:
        raise SchemaError(kind, error.json_path, error.message)
