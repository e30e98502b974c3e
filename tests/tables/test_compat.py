"""The partner contract may only evolve compatibly.

``contract/`` holds a frozen copy of the v1 schemas of the public topics
(``match-snapshots``: Match, ``match-deltas``: Delta). The shipped schemas in
``tables/schemas/`` must stay backward compatible with them, compared
structurally: a required field is never removed and no field becomes required,
no type, enum, const, pattern or bound is narrowed, no field of a closed object
disappears, and no ``oneOf`` / ``anyOf`` alternative goes away. Records made
today must still validate against the frozen contract.

A change that fails here needs a new record ``version`` and a new topic (see
docs/partners.md, "Compatibility"), not an edit of the frozen copy.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tables.schema_check import schema

CONTRACT = Path(__file__).parent / "contract"
PUBLIC = ("match", "delta")
ALL_TYPES = frozenset({"null", "boolean", "object", "array", "number", "string", "integer"})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def frozen(kind: str) -> dict[str, Any]:
    return json.loads((CONTRACT / f"{kind}.schema.json").read_text())


class Walker:
    def __init__(self, old_root: dict[str, Any], new_root: dict[str, Any]) -> None:
        self.roots = (old_root, new_root)
        self.problems: list[str] = []

    @staticmethod
    def _resolve(node: Any, root: dict[str, Any]) -> Any:
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), f"only local refs are supported: {ref}"
            target: Any = root
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            extra = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **extra}
            seen += 1
            assert seen < 50, f"recursive $ref {ref}"
        return node

    @staticmethod
    def _values(node: dict[str, Any]) -> set[str] | None:
        """The JSON values a node allows, when it lists them (const / enum)."""
        if "const" in node:
            return {json.dumps(node["const"], sort_keys=True)}
        if "enum" in node:
            return {json.dumps(v, sort_keys=True) for v in node["enum"]}
        return None

    @staticmethod
    def _types(node: dict[str, Any]) -> set[str]:
        t = node.get("type")
        if t is None and ("const" in node or "enum" in node):
            values = [node["const"]] if "const" in node else node["enum"]
            t = sorted({_json_type(v) for v in values})
        if t is None:
            return set(ALL_TYPES)
        types = {t} if isinstance(t, str) else set(t)
        if "number" in types:
            types.add("integer")
        return types

    def compare(self, old: Any, new: Any, path: str = "$") -> list[str]:
        old = self._resolve(old, self.roots[0])
        new = self._resolve(new, self.roots[1])
        if old is True or old == {}:
            if not (new is True or new == {}):
                self.problems.append(f"{path}: was unconstrained, now constrained")
            return self.problems
        if new is True or new == {}:
            return self.problems
        if old is False or new is False:
            if new is False and old is not False:
                self.problems.append(f"{path}: no longer allowed")
            return self.problems

        lost = self._types(old) - self._types(new)
        if lost:
            self.problems.append(f"{path}: type narrowed, no longer {sorted(lost)}")
        old_vals, new_vals = self._values(old), self._values(new)
        if new_vals is not None and (old_vals is None or not old_vals <= new_vals):
            gone = sorted(old_vals - new_vals) if old_vals is not None else "any value"
            self.problems.append(f"{path}: enum/const narrowed, no longer {gone}")

        for key, tighter in (("minimum", max), ("exclusiveMinimum", max), ("minLength", max),
                             ("minItems", max), ("minProperties", max), ("maximum", min),
                             ("exclusiveMaximum", min), ("maxLength", min), ("maxItems", min),
                             ("maxProperties", min)):
            if key in new and (key not in old or tighter(old[key], new[key]) != old[key]):
                self.problems.append(f"{path}: {key} tightened to {new[key]}")
        for key in ("pattern", "format"):
            if key in new and new.get(key) != old.get(key):
                self.problems.append(f"{path}: {key} changed to {new[key]!r}")
        if new.get("uniqueItems") and not old.get("uniqueItems"):
            self.problems.append(f"{path}: uniqueItems added")

        old_req, new_req = set(old.get("required", ())), set(new.get("required", ()))
        for name in sorted(old_req - new_req):
            self.problems.append(f"{path}: required field {name!r} removed")
        for name in sorted(new_req - old_req):
            self.problems.append(f"{path}: new required field {name!r}")

        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        new_extra = new.get("additionalProperties", True)
        for name, sub in old_props.items():
            if name in new_props:
                self.compare(sub, new_props[name], f"{path}.{name}")
            else:
                self.compare(sub, new_extra, f"{path}.{name}")
        old_extra = old.get("additionalProperties", True)
        self.compare(old_extra, new_extra, f"{path}.*")

        if "items" in old or "items" in new:
            self.compare(old.get("items", True), new.get("items", True), f"{path}[]")

        for key in ("oneOf", "anyOf"):
            if key not in new:
                continue
            if key not in old:
                self.problems.append(f"{path}: {key} added")
                continue
            for i, alt in enumerate(old[key]):
                if not any(not Walker(*self.roots).compare(alt, cand, f"{path}.{key}[{i}]")
                           for cand in new[key]):
                    self.problems.append(f"{path}.{key}[{i}]: alternative removed or narrowed")
        if "allOf" in new and new.get("allOf") != old.get("allOf"):
            self.problems.append(f"{path}: allOf changed")
        return self.problems


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return Walker(old, new).compare(old, new)


@pytest.mark.parametrize("kind", PUBLIC)
def test_shipped_schema_is_backward_compatible_with_the_v1_contract(kind):
    assert breaking_changes(frozen(kind), schema(kind)) == []


@pytest.mark.parametrize("kind", PUBLIC)
def test_every_record_carries_a_version(kind):
    for s in (frozen(kind), schema(kind)):
        assert "version" in s["required"]
        assert s["properties"]["version"] == {**s["properties"]["version"], "const": 1}


@pytest.mark.parametrize("kind", PUBLIC)
def test_the_checker_sees_each_kind_of_break(kind):
    old = frozen(kind)
    required = old["required"]

    def changed(edit) -> list[str]:
        new = copy.deepcopy(old)
        edit(new)
        return breaking_changes(old, new)

    assert changed(lambda s: s["required"].remove(required[1]))  # removed required field
    assert changed(lambda s: s["required"].append("partner_id"))  # new required field
    assert changed(lambda s: s["properties"].pop(required[1]))  # field of a closed object gone
    assert changed(lambda s: s["properties"]["sport"].update(enum=["football"]))  # narrowed enum
    assert changed(lambda s: s["properties"]["version"].update(const=2))
    assert changed(lambda s: s["properties"]["seq"].update(type="string"))  # changed type
    assert changed(lambda s: s["properties"]["seq"].update(minimum=5))  # tightened bound
    # Compatible: a new optional field, a new enum value, a wider type.
    assert not changed(lambda s: s["properties"].update(extra={"type": "string"}))
    assert not changed(lambda s: s["properties"]["sport"]["enum"].append("tennis"))
    assert not changed(lambda s: s["properties"]["seq"].update(type=["integer", "null"]))


def test_the_checker_follows_refs_and_alternatives():
    old = frozen("delta")
    narrowed = copy.deepcopy(old)
    narrowed["$defs"]["operation"]["oneOf"].pop()  # "copy" operations no longer allowed
    assert any("oneOf" in p for p in breaking_changes(old, narrowed))
    team = copy.deepcopy(frozen("match"))
    team["$defs"]["team"]["properties"]["name"]["type"] = "null"
    assert any("home.name" in p for p in breaking_changes(frozen("match"), team))


def test_records_made_today_still_match_the_frozen_contract():
    from tests.pipeline.test_replay import run_diff

    delta_v1 = Draft202012Validator(frozen("delta"), format_checker=Draft202012Validator.FORMAT_CHECKER)
    match_v1 = Draft202012Validator(frozen("match"), format_checker=Draft202012Validator.FORMAT_CHECKER)
    for d, snap in run_diff("football-apifootball-1149519"):
        assert not list(delta_v1.iter_errors(d)), d
        assert not list(match_v1.iter_errors(snap)), snap
