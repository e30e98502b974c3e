from __future__ import annotations

import copy
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from jsonschema import Draft202012Validator

from tables import records, schema_check, topics
from tables.schema_check import SchemaError, schema, validate

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tables" / "schemas"

MATCH: dict[str, Any] = {
    "version": 1,
    "id": "football-apifootball-1149519",
    "sport": "football",
    "provider": "apifootball",
    "provider_id": "1149519",
    "league": {"id": "39", "name": "Premier League", "country": "England", "season": "2024",
               "round": "Regular Season - 13"},
    "home": {"id": "40", "name": "Liverpool", "logo": None},
    "away": {"id": "50", "name": "Manchester City", "logo": "https://media.example/50.png"},
    "status": {"phase": "live", "code": "2H", "label": "Second Half", "period": 2,
               "clock": "67"},
    "score": {"home": 1, "away": 0, "periods": {"1H": {"home": 1, "away": 0},
                                                "2H": {"home": None, "away": None}}},
    "start_time": "2024-12-01T16:00:00Z",
    "venue": None,
    "events": [{"id": "e1", "type": "goal", "minute": 23, "extra": None, "team": "home",
                "player": {"id": "306", "name": "Salah"}, "assist": None,
                "detail": "Normal Goal", "comments": None}],
    "detail": {"statistics": [{"team": "home", "shots": 7}]},
    "seq": 4,
    "updated_at": 1732840000.5,
    "fetched_at": 1732840000.1,
}

DELTA: dict[str, Any] = {
    "version": 1, "match_id": "football-apifootball-1149519", "seq": 7, "ts": 1732840000.5,
    "sport": "football", "league": "39", "kinds": ["score", "events"],
    "changes": [{"op": "replace", "path": "/score/home", "value": 2},
                {"op": "add", "path": "/events/1", "value": {"id": "e2"}},
                {"op": "remove", "path": "/detail/statistics"},
                {"op": "move", "from": "/a~1b", "path": "/c"}],
    "events": [{"type": "goal", "team": "home", "minute": 70, "player": "Salah",
                "score": {"home": 2, "away": 0}}],
    "fetched_at": 1732840000.1,
}

RAW_FETCH: dict[str, Any] = {
    "version": 1, "provider": "apifootball", "sport": "football", "endpoint": "fixtures",
    "params": {"live": "all"}, "status": 200,
    "headers": {"x-ratelimit-requests-remaining": "7400"}, "latency_ms": 41.2,
    "fetched_at": 1732840000.123, "body": "{\"response\": []}", "error": None,
}

DEAD_LETTER: dict[str, Any] = {
    "version": 1, "stage": "normalise", "reason": "unknown status code 'XX'",
    "error_type": "UnknownStatus", "provider": "apifootball", "sport": "football",
    "endpoint": "fixtures", "body": "{}", "ts": 1732840001.0,
}

VALID = {"match": MATCH, "delta": DELTA, "raw-fetch": RAW_FETCH, "dead-letter": DEAD_LETTER}


@pytest.mark.parametrize("kind", schema_check.KINDS)
def test_schemas_are_valid_json_schema(kind: str) -> None:
    doc = schema(kind)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(doc)
    assert json.loads((SCHEMAS / f"{kind}.schema.json").read_text()) == doc


@pytest.mark.parametrize("kind", schema_check.KINDS)
def test_valid_record_passes(kind: str) -> None:
    validate(kind, VALID[kind])


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(KeyError):
        schema("goal")


def _set(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(record)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(("kind", "path", "value", "json_path"), [
    ("match", "status.phase", "halftime", "$.status.phase"),
    ("match", "status.period", "2", "$.status.period"),
    ("match", "events.0.minute", "23", "$.events[0].minute"),
    ("match", "events.0.team", "Liverpool", "$.events[0].team"),
    ("match", "score.periods.1H.home", -1, "$.score.periods['1H'].home"),
    ("match", "home.colour", "red", "$.home"),
    ("match", "seq", _DELETE, "$"),
    ("match", "sport", "cricket", "$.sport"),
    ("match", "start_time", "2024-12-01 16:00", "$.start_time"),
    ("match", "_absent", ["events"], "$"),
    ("delta", "kinds.0", "goal", "$.kinds[0]"),
    ("delta", "kinds", [], "$.kinds"),
    ("delta", "seq", 0, "$.seq"),
    ("delta", "version", 2, "$.version"),
    ("delta", "changes.0.op", "merge", "$.changes[0]"),
    ("delta", "events.0", {"team": "home"}, "$.events[0]"),
    ("raw-fetch", "params.live", 1, "$.params.live"),
    ("raw-fetch", "body", None, "$.body"),
    ("dead-letter", "ts", "yesterday", "$.ts"),
])
def test_broken_record_fails_naming_the_path(
        kind: str, path: str, value: Any, json_path: str) -> None:
    broken = _set(VALID[kind], path, value)
    with pytest.raises(SchemaError) as info:
        validate(kind, broken)
    assert info.value.path == json_path
    assert info.value.kind == kind
    assert json_path in str(info.value) and info.value.reason in str(info.value)
    assert isinstance(info.value, ValueError)


# -- the schemas state exactly the contract of tables/records.py ---------------------------

def _schema_of(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` and pick the object branch of a nullable ``oneOf``."""
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _schema_of(target, root)
    if "oneOf" in node:
        objects = [b for b in node["oneOf"] if b.get("type") != "null"]
        assert len(objects) == 1
        return _schema_of(objects[0], root)
    return node


def _typeddict(hint: Any) -> Any:
    if typing.is_typeddict(hint):
        return hint
    if get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in get_args(hint) if typing.is_typeddict(a)]
        return found[0] if found else None
    return None


def _compare(td: Any, node: dict[str, Any], root: dict[str, Any], where: str) -> None:
    hints = get_type_hints(td)
    node = _schema_of(node, root)
    assert node.get("additionalProperties") is False, where
    assert set(node["properties"]) == set(hints), where
    assert set(node["required"]) == set(hints), where
    for name, hint in hints.items():
        sub = _typeddict(hint)
        if sub is not None:
            _compare(sub, node["properties"][name], root, f"{where}.{name}")


@pytest.mark.parametrize(("kind", "record_type"), [
    ("match", records.Match), ("delta", records.Delta),
    ("raw-fetch", records.RawFetch), ("dead-letter", records.DeadLetter),
])
def test_schema_fields_are_those_of_the_record_type(kind: str, record_type: Any) -> None:
    doc = schema(kind)
    _compare(record_type, doc, doc, kind)


def test_nested_match_records_are_strict() -> None:
    doc = schema("match")
    props = doc["properties"]
    _compare(records.Event, props["events"]["items"], doc, "events[]")
    _compare(records.PeriodScore, props["score"]["properties"]["periods"]
             ["additionalProperties"], doc, "score.periods")
    _compare(records.Ref, doc["$defs"]["ref"], doc, "ref")
    assert props["detail"]["type"] == ["object", "null"]
    assert "additionalProperties" not in props["detail"]


def test_enums_are_those_of_the_records_module() -> None:
    match, delta = schema("match"), schema("delta")
    assert tuple(match["properties"]["status"]["properties"]["phase"]["enum"]) == records.PHASES
    assert tuple(delta["properties"]["kinds"]["items"]["enum"]) == records.DELTA_KINDS
    for doc in (match, delta, schema("raw-fetch")):
        assert tuple(doc["properties"]["sport"]["enum"]) == records.SPORTS
    for kind in schema_check.KINDS:
        assert schema(kind)["properties"]["version"] == {
            "const": records.RECORD_VERSION,
            "description": schema(kind)["properties"]["version"]["description"],
        }


def test_ids_made_by_match_id_are_valid() -> None:
    pattern = re.compile(schema("match")["properties"]["id"]["pattern"])
    for sport, provider in (("football", "apifootball"), ("basketball", "apibasketball"),
                            ("hockey", "apihockey")):
        assert pattern.search(records.match_id(sport, provider, 1149519))


# -- AsyncAPI and topic docs ----------------------------------------------------------------

def _asyncapi() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / "asyncapi.json").read_text())
    return data


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_asyncapi_references_existing_schema_files_and_resolves() -> None:
    doc = _asyncapi()
    assert doc["asyncapi"].startswith("3.")
    files = set()
    for ref in _refs(doc):
        if ref.startswith("#/"):
            target: Any = doc
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
        else:
            path = SCHEMAS / ref
            assert path.is_file(), ref
            Draft202012Validator.check_schema(json.loads(path.read_text()))
            files.add(path.name)
    assert files == {"delta.schema.json", "match.schema.json"}


def test_asyncapi_channels_are_the_public_topics() -> None:
    doc = _asyncapi()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {topics.MATCH_DELTAS, topics.MATCH_SNAPSHOTS}
    for channel in doc["channels"].values():
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]
        policy = channel["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"]
        assert policy == [topics.TOPIC_CONFIG[channel["address"]]["cleanup.policy"]]
    for operation in doc["operations"].values():
        assert operation["action"] == "receive"
        assert "groupId" in operation["bindings"]["kafka"]
    for message in doc["components"]["messages"].values():
        assert message["contentType"] == "application/json"
        assert "key" in message["bindings"]["kafka"]


def test_topic_docs_mention_every_topic() -> None:
    text = (ROOT / "docs" / "topics.md").read_text()
    names = [v for k, v in vars(topics).items() if k.isupper() and isinstance(v, str)]
    assert names
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"docs/topics.md does not mention {missing}"


#: The v1 partner contract: a field a consumer may rely on. Removing one, renaming it or
#: making it optional breaks consumers and needs a new record version.
V1_REQUIRED = {
    "match": {"version", "id", "sport", "provider", "provider_id", "league", "home", "away",
              "status", "score", "start_time", "venue", "events", "detail", "seq",
              "updated_at", "fetched_at"},
    "delta": {"version", "match_id", "seq", "ts", "sport", "league", "kinds", "changes",
              "events", "fetched_at"},
}


@pytest.mark.parametrize("kind", sorted(V1_REQUIRED))
def test_v1_partner_fields_stay_required(kind: str) -> None:
    doc = schema(kind)
    assert V1_REQUIRED[kind] <= set(doc["required"])
    assert doc["properties"]["version"]["const"] == 1


def test_v1_phases_and_kinds_are_not_removed() -> None:
    assert set(records.PHASES) >= {"scheduled", "live", "break", "finished", "postponed",
                                   "cancelled", "suspended", "abandoned"}
    assert set(records.DELTA_KINDS) >= {"created", "score", "status", "events", "clock",
                                        "detail"}
