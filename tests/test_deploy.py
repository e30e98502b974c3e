"""The production deployment files agree with the code.

``docker-compose.yml``, ``Dockerfile``, ``deploy/`` and ``docs/operations.md``
are read as text and parsed; nothing is started. Each check fails when a file
drifts from what the code reads: an environment variable no setting reads, a
command the CLI does not have, an edge missing from the load balancer or from
Prometheus, topic settings that differ from ``tables/topics.py``.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.settings import Settings, SettingsError
from tables import topics

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
NGINX = ROOT / "deploy" / "nginx.conf"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
CREATE_TOPICS = ROOT / "deploy" / "kafka" / "create-topics.sh"
OPERATIONS = ROOT / "docs" / "operations.md"

#: Variables a BTS Guru container may set that Settings does not read, and who reads them.
NOT_SETTINGS = {
    "PYTHONUNBUFFERED": "the Python interpreter",
    "PYTHONDONTWRITEBYTECODE": "the Python interpreter",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip, at image build time",
    "FORWARDED_ALLOW_IPS": "uvicorn (trust X-Forwarded-For from the load balancer)",
}

#: Read by Settings.from_env but not written back by Settings.env().
ALSO_READ = {"RAPIDAPI_KEY"}

#: A value standing in for every ``${VAR:?}`` secret the operator must provide.
SECRET = "s3cret"

_VAR_RE = re.compile(
    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Docker Compose variable substitution with ``env`` as the shell environment."""
    env = env or {}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset else current  # type: ignore[return-value]
        if op in (":?", "?"):
            return SECRET if unset else current  # type: ignore[return-value]
        return current or ""

    return _VAR_RE.sub(sub, value)


def _dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def _dockerfile_env() -> dict[str, str]:
    """ENV of the final stage (``ENV A=1 \\ B=2`` form)."""
    text = _dockerfile().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            for part in shlex.split(line[4:]):
                key, _, val = part.partition("=")
                env[key] = val
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the image built from our Dockerfile."""
    return {
        name: svc for name, svc in compose["services"].items()
        if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile") == "Dockerfile"
    }


def _command(svc: dict[str, Any]) -> list[str]:
    cmd = interpolate(svc.get("command", []))
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _role(compose: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _app_services(compose).items() if _command(s)[:1] == [role]}


def _env(svc: dict[str, Any]) -> dict[str, str]:
    """The process environment: the image's ENV, then the service's (interpolated)."""
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env = dict(_dockerfile_env())
    env.update({k: "" if v is None else str(v) for k, v in interpolate(raw).items()})
    return env


def _settings(svc: dict[str, Any]) -> Settings:
    return Settings.from_env(_env(svc))


def _host(name: str, svc: dict[str, Any]) -> str:
    return svc.get("hostname", name)


# -- Dockerfile ---------------------------------------------------------------


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    scripts = pyproject["project"]["scripts"]
    assert scripts.get("bts-guru") == "pipeline.cli:main"
    entry = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", _dockerfile(), re.M)
    assert entry, "Dockerfile has no exec-form ENTRYPOINT"
    assert json.loads(entry.group(1)) == ["bts-guru"]
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", _dockerfile(), re.M)
    assert cmd, "Dockerfile has no exec-form CMD"
    build_parser().parse_args(json.loads(cmd.group(1)))


def test_dockerfile_is_multi_stage_slim_non_root_with_healthcheck() -> None:
    text = _dockerfile()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(bases) >= 2 and all(b == "python:3.11-slim" for b in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0", "0:0")
    assert re.search(r"^HEALTHCHECK\s+.*CMD", text.replace("\\\n", " "), re.M)
    # No extras: the embedded servers are for `dev` and tests, never for the image.
    install = re.search(r"pip install[^\n]*\bbts-guru(\S*)", text)
    assert install and "[" not in install.group(1)


def test_dockerfile_env_is_read_by_settings() -> None:
    env = _dockerfile_env()
    known = set(Settings().env()) | ALSO_READ | set(NOT_SETTINGS)
    assert set(env) <= known, f"Dockerfile sets variables nothing reads: {sorted(set(env) - known)}"
    Settings.from_env(env)


def test_the_wheel_ships_every_data_file_of_the_packages() -> None:
    """The image installs a wheel, so a file missing from package-data is missing in production."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"]["setuptools"]["package-data"]
    missing = []
    for package in ("pipeline", "tables", "web"):
        base = ROOT / package
        for path in base.rglob("*"):
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(base)
            if not any(rel.match(glob) for glob in package_data.get(package, [])):
                missing.append(f"{package}/{rel.as_posix()}")
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for entry in (".git", ".venv", ".bts-data", "tests"):
        assert entry in ignored


# -- docker-compose.yml ---------------------------------------------------------


def test_interpolation_follows_compose_rules() -> None:
    assert interpolate("${A:-x}", {}) == "x"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    assert interpolate("${A:?need A}", {}) == SECRET
    assert interpolate("p$${A}q${B}", {"B": "b"}) == "p${A}qb"


def test_every_app_service_sets_only_what_settings_read(compose: dict[str, Any]) -> None:
    known = set(Settings().env()) | ALSO_READ | set(NOT_SETTINGS)
    services = _app_services(compose)
    assert services
    for name, svc in services.items():
        env = _env(svc)
        unknown = set(env) - known
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
        try:
            Settings.from_env(env)
        except SettingsError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{name}: {exc}")


def test_every_app_service_runs_a_real_command(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, svc in _app_services(compose).items():
        cmd = _command(svc)
        assert cmd, f"{name} has no command"
        try:
            parser.parse_args(cmd)
        except SystemExit:  # pragma: no cover
            pytest.fail(f"{name}: `bts-guru {' '.join(cmd)}` is not a valid command")


def test_at_least_two_workers_and_two_edges(compose: dict[str, Any]) -> None:
    assert len(_role(compose, "worker")) >= 2
    assert len(_role(compose, "edge")) >= 2
    assert len(_role(compose, "migrate")) == 1


def test_the_sinks_run_in_workers_of_their_own(compose: dict[str, Any]) -> None:
    """Pipeline workers and sink workers, never a sink worker beside an ``all`` worker
    (both would write every row)."""
    parser = build_parser()
    roles = [parser.parse_args(_command(svc)).role for svc in _role(compose, "worker").values()]
    assert roles.count("pipeline") >= 2 and roles.count("sinks") >= 2, roles
    assert "all" not in roles, roles


def test_processes_share_the_cluster_settings(compose: dict[str, Any]) -> None:
    """Workers and edges must agree on topics, consumer group, partitions, Redis and Postgres."""
    shared = ("kafka_url", "redis_url", "database_url", "topic_prefix", "redis_prefix",
              "db_schema", "app_id", "partitions")
    procs = {**_role(compose, "worker"), **_role(compose, "edge"), **_role(compose, "migrate")}
    seen = {name: tuple(getattr(_settings(svc), f) for f in shared) for name, svc in procs.items()}
    assert len(set(seen.values())) == 1, seen
    assert _settings(next(iter(procs.values()))).partitions >= 12


def test_workers_keep_local_state_on_their_own_volume(compose: dict[str, Any]) -> None:
    volumes = set()
    for name, svc in _role(compose, "worker").items():
        s = _settings(svc)
        mounts = [v.split(":") for v in svc.get("volumes", []) if isinstance(v, str)]
        own = [src for src, target, *_ in mounts if target == s.data_dir]
        assert own, f"{name}: BTS_DATA_DIR {s.data_dir} is not on a volume"
        assert own[0] in compose.get("volumes", {}), f"{name}: {own[0]} is not a named volume"
        volumes.add(own[0])
        assert s.worker_web_port > 0
    assert len(volumes) == len(_role(compose, "worker")), "workers share a data volume"


def test_edges_listen_on_every_interface(compose: dict[str, Any]) -> None:
    for name, svc in _role(compose, "edge").items():
        s = _settings(svc)
        assert s.edge_host == "0.0.0.0", name
        assert s.edge_port > 0
        assert svc.get("healthcheck", {}).get("disable") is not True, name


def test_workers_and_edges_start_after_the_migration(compose: dict[str, Any]) -> None:
    for name, svc in {**_role(compose, "worker"), **_role(compose, "edge")}.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        migrate = next(iter(_role(compose, "migrate")))
        assert deps.get(migrate, {}).get("condition") == "service_completed_successfully", name
        for dep, cond in deps.items():
            assert dep in compose["services"], f"{name} depends on unknown {dep}"
            assert cond.get("condition") in (
                "service_started", "service_healthy", "service_completed_successfully")
    for svc in _role(compose, "migrate").values():
        assert svc.get("restart", "no") == "no"


def test_simulator_is_behind_a_profile(compose: dict[str, Any]) -> None:
    sims = _role(compose, "simulate")
    assert sims
    for name, svc in sims.items():
        assert svc.get("profiles") == ["simulator"], name
        cmd = build_parser().parse_args(_command(svc))
        assert cmd.host == "0.0.0.0", "the simulator must be reachable from the workers"
    for name, svc in compose["services"].items():
        if name not in sims:
            assert "profiles" not in svc, f"{name} should start by default"


def test_secrets_come_from_the_environment(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "PUSHER_APP_SECRET"):
        assert f"${{{secret}:?" in text
    for name, svc in _app_services(compose).items():
        env = svc.get("environment") or {}
        for key in ("APIFOOTBALL_KEY", "APIBASKETBALL_KEY", "APIHOCKEY_KEY", "RAPIDAPI_KEY",
                    "PUSHER_APP_SECRET", "ADMIN_KEY"):
            if key in env:
                assert str(env[key]).startswith("${"), f"{name}: {key} written in the file"


def test_kafka_is_kraft_and_advertises_what_the_processes_use(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = interpolate(kafka["environment"])
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    assert any(target.startswith("/var/lib/kafka") for target in
               (v.split(":")[1] for v in kafka["volumes"]))
    advertised = {a.split("://", 1)[1] for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, svc in {**_role(compose, "worker"), **_role(compose, "edge")}.items():
        for server in _settings(svc).kafka_bootstrap.split(","):
            assert server in advertised, f"{name} uses {server}, broker advertises {advertised}"


def test_topic_script_matches_the_topic_contract(compose: dict[str, Any]) -> None:
    init = compose["services"]["kafka-init"]
    assert any("create-topics.sh" in v for v in init["volumes"])
    init_env = interpolate(init["environment"])
    worker = _settings(next(iter(_role(compose, "worker").values())))
    assert int(init_env["BTS_PARTITIONS"]) == worker.partitions
    assert init_env.get("BTS_TOPIC_PREFIX", "") == worker.topic_prefix
    assert init_env["BTS_APP_ID"] == worker.app_id
    script = CREATE_TOPICS.read_text(encoding="utf-8")
    app_id = re.search(r'^APP_ID="\$\{BTS_APP_ID:-[^}]*\}"$', script, re.M)
    assert app_id, "create-topics.sh must take the app id from BTS_APP_ID"
    created: dict[str, dict[str, str]] = {}
    for line in script.splitlines():
        if line.startswith("create "):
            name, *configs = shlex.split(line)[1:]
            name = name.replace("${APP_ID}", init_env["BTS_APP_ID"])
            created[name] = dict(c.split("=", 1) for c in configs)
    changelog = worker.faust_id.removeprefix(worker.topic_prefix) + "-matches-changelog"
    expected = {topics.RAW_FETCHES, topics.DEAD_LETTERS, *topics.KEYED_BY_MATCH,
                *topics.TOPIC_CONFIG, changelog}
    assert set(created) == expected
    for name, config in topics.TOPIC_CONFIG.items():
        assert created[name] == config, name
    assert created[changelog] == {"cleanup.policy": "compact"}
    for name, svc in {**_role(compose, "worker"), **_role(compose, "edge")}.items():
        cond = (svc.get("depends_on") or {}).get("kafka-init", {}).get("condition")
        assert cond == "service_completed_successfully", name


# -- nginx ------------------------------------------------------------------------


def _nginx_blocks(text: str, keyword: str) -> dict[str, str]:
    """``location X { ... }`` / ``upstream X { ... }`` bodies by name (no nesting inside)."""
    return {m.group(1).strip(): m.group(2) for m in
            re.finditer(rf"^\s*{keyword}\s+([^{{]+)\{{(.*?)^\s*\}}", text, re.M | re.S)}


def _directives(body: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^\s*{name}\s+([^;]*);", body, re.M)]


def _seconds(value: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert m, value
    return int(m.group(1)) * {"ms": 0, None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def test_nginx_balances_every_edge(compose: dict[str, Any]) -> None:
    text = NGINX.read_text(encoding="utf-8")
    upstreams = _nginx_blocks(text, "upstream")
    assert len(upstreams) == 1
    (upstream_name, body), = upstreams.items()
    servers = {d.split()[0] for d in _directives(body, "server")}
    edges = {f"{_host(n, s)}:{_settings(s).edge_port}" for n, s in _role(compose, "edge").items()}
    assert servers == edges
    locations = _nginx_blocks(text, "location")
    for path in ("/v1/ws", "/app/", "/v1/stream", "/"):
        assert path in locations, f"no location {path}"
        assert _directives(locations[path], "proxy_pass") == [f"http://{upstream_name}"]
    nginx = compose["services"]["nginx"]
    assert any(v.startswith("./deploy/nginx.conf:") for v in nginx["volumes"])


def test_nginx_upgrades_websockets_and_streams_sse() -> None:
    text = NGINX.read_text(encoding="utf-8")
    server = text[text.index("server {"):]
    server_level = re.split(r"^\s*location\s", server, flags=re.M)[0]
    headers = {d.split()[0].lower(): d.split(None, 1)[1]
               for d in _directives(server_level, "proxy_set_header")}
    assert headers["upgrade"] == "$http_upgrade"
    assert headers["connection"] == "$connection_upgrade"
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade", text)
    assert _directives(server_level, "proxy_http_version") == ["1.1"]
    locations = _nginx_blocks(text, "location")
    for path in ("/v1/ws", "/app/", "/v1/stream"):
        body = locations[path]
        # A location with its own proxy_set_header would drop the upgrade headers above.
        assert not _directives(body, "proxy_set_header"), path
        assert _directives(body, "proxy_buffering") == ["off"], path
        assert _seconds(_directives(body, "proxy_read_timeout")[0]) >= 3600, path
    assert "X-Accel-Buffering" in locations["/v1/stream"]


# -- Prometheus ---------------------------------------------------------------------


def test_prometheus_scrapes_every_worker_and_edge(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    targets = set()
    for job in config["scrape_configs"]:
        if job.get("metrics_path", "/metrics") != "/metrics":
            continue
        for static in job.get("static_configs", []):
            targets.update(static["targets"])
    workers = {f"{_host(n, s)}:{_settings(s).worker_web_port}"
               for n, s in _role(compose, "worker").items()}
    edges = {f"{_host(n, s)}:{_settings(s).edge_port}" for n, s in _role(compose, "edge").items()}
    assert workers <= targets, workers - targets
    assert edges <= targets, edges - targets
    stale = {t for t in targets if not t.startswith("localhost:")} - workers - edges
    assert not stale, f"Prometheus scrapes services that do not exist: {stale}"
    prom = compose["services"]["prometheus"]
    assert any(v.startswith("./deploy/prometheus.yml:") for v in prom["volumes"])


# -- docs/operations.md ---------------------------------------------------------------

_APP_VAR = re.compile(
    r"`((?:KAFKA|REDIS|DATABASE|BTS|EDGE|WORKER|PROVIDER|APIFOOTBALL|APIBASKETBALL|APIHOCKEY"
    r"|RAPIDAPI|LOG|PUSHER|ADMIN|ALERT)_[A-Z0-9_]+)`")


def test_operations_doc_names_only_variables_the_code_reads() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    named = set(_APP_VAR.findall(text))
    assert "BTS_PARTITIONS" in named
    deployment = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text(encoding="utf-8")))
    deployment |= set(re.findall(r"\$\{([A-Z0-9_]+)", CREATE_TOPICS.read_text(encoding="utf-8")))
    known = set(Settings().env()) | ALSO_READ | deployment
    missing = sorted(named - known)
    assert not missing, f"docs/operations.md names variables settings.py does not read: {missing}"
