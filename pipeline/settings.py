"""Settings, read once per process from the environment.

Every process (worker, edge, simulator, dev) builds one :class:`Settings` with
:meth:`Settings.from_env` at start-up and hands it on; nothing else reads
``os.environ``. A malformed value raises :class:`SettingsError` naming the
variable, so the CLI can print it and exit with status 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse


#: What a worker runs (``bts-guru worker --role``): everything; the pipeline (pollers,
#: normalise, detect); or the Redis and Postgres sinks, as a consumer group of their own.
WORKER_ROLES = ("all", "pipeline", "sinks")

class SettingsError(ValueError):
    """A setting is missing or malformed; ``name`` is the environment variable."""

    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(f"{name}={value!r} is not valid: expected {expected}")
        self.name = name
        self.value = value


_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip() or default
    if not value:
        return ""
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
        raise SettingsError(name, value, f"a URL starting with {' or '.join(s + '://' for s in schemes)}")
    try:
        _ = parsed.port
    except ValueError:
        raise SettingsError(name, value, "a URL with a numeric port") from None
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, raw, f"an integer from {lo} to {hi}") from None
    if not lo <= value <= hi:
        raise SettingsError(name, raw, f"an integer from {lo} to {hi}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, raw, f"a number from {lo} to {hi}") from None
    if not lo <= value <= hi:
        raise SettingsError(name, raw, f"a number from {lo} to {hi}")
    return value


def _name(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _NAME_RE.match(raw):
        raise SettingsError(name, raw, "1-64 characters of letters, digits, '.', '_' or '-'")
    return raw


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    by_lower = {c.lower(): c for c in choices}
    if raw.lower() not in by_lower:
        raise SettingsError(name, raw, "one of " + ", ".join(choices))
    return by_lower[raw.lower()]


def _file(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip()
    if raw and not os.path.isfile(raw):
        raise SettingsError(name, raw, "the path of an existing file")
    return raw


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(name, raw, "true or false")


def _hostports(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return ""
    for part in raw.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(name, raw, "comma-separated host:port pairs")
    return raw


def _secret(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if len(raw) > 256 or any(c.isspace() for c in raw):
        raise SettingsError(name, "<hidden>", "1-256 characters without spaces")
    return raw


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about its surroundings."""

    kafka_url: str = "kafka://127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    #: Prefix of every topic, Faust app id and consumer group, so that runs never mix.
    topic_prefix: str = ""
    #: Prefix of every Redis key.
    redis_prefix: str = "bts:"
    #: Postgres schema that holds the tables.
    db_schema: str = "public"
    app_id: str = "bts-guru"
    partitions: int = 8
    #: How long the broker may hold a fetch when no data is ready (ms).
    fetch_wait_ms: int = 10
    #: The same for a ``--role sinks`` worker: nothing waits on its hop, so its fetches
    #: can wait longer, and a broker then answers fewer of them.
    sinks_fetch_wait_ms: int = 100
    edge_host: str = "127.0.0.1"
    edge_port: int = 8000
    #: Seconds between the heartbeats every stream gets (SSE comment, WebSocket ping).
    edge_heartbeat: int = 15
    #: Milliseconds a snapshot read from Redis may be served from the edge's memory (0: never).
    edge_snapshot_cache_ms: int = 1000
    worker_web_port: int = 6066
    #: Provider API base URL; empty means the real RapidAPI hosts.
    provider_url: str = ""
    provider_mode: str = "rapidapi"
    apifootball_key: str = ""
    apibasketball_key: str = ""
    apihockey_key: str = ""
    #: Plan of the provider keys (quota budget): free, pro, ultra or mega.
    provider_plan: str = "pro"
    #: Provider time runs this much faster than the wall clock (the simulator's speed).
    clock_speed: float = 1.0
    #: Provider time at start-up (epoch seconds); 0 means the wall clock.
    clock_start: float = 0.0
    store: str = "rocksdb"
    #: TOML file of subscription tiers; empty means the shipped defaults (web/tiers.toml).
    tiers_file: str = ""
    #: Origins allowed by CORS, comma-separated; "*" allows any.
    cors_origins: str = "*"
    data_dir: str = ".bts-data"
    log_format: str = "json"
    log_level: str = "info"
    #: How workers and edges connect to the brokers (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    #: CA bundle of the brokers' certificates; empty: the system store.
    kafka_ssl_cafile: str = ""
    #: Replicas of the topics workers create (1 on a single broker, 3 on a cluster).
    kafka_replication_factor: int = 1
    #: Redis Sentinels, comma-separated host:port; empty: connect to REDIS_URL's host.
    redis_sentinels: str = ""
    redis_sentinel_master: str = "mymaster"
    #: Where alerts are POSTed as Slack-compatible JSON; empty: nowhere.
    alert_webhook_url: str = ""
    #: Key of the /admin page; empty: the page is disabled.
    admin_key: str = ""
    #: The Pusher app served at ``/app/{key}`` (development defaults; set real ones in production).
    pusher_app_id: str = "bts-guru"
    pusher_app_key: str = "bts-guru-key"
    pusher_app_secret: str = "bts-guru-secret"
    #: TOML file of several Pusher apps; when set it replaces the single app above.
    pusher_apps_file: str = ""
    #: Whether Pusher clients may send ``client-*`` events (apps may override).
    pusher_client_events: bool = False
    #: Seconds of silence before a Pusher client should ping (sent in connection_established).
    pusher_activity_timeout: int = 120
    #: Seconds a silent Pusher connection has to answer the server's ping before 4201.
    pusher_pong_timeout: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        e = os.environ if env is None else env
        values: dict[str, Any] = dict(
            kafka_url=_url(e, "KAFKA_URL", ("kafka",), cls.kafka_url),
            redis_url=_url(e, "REDIS_URL", ("redis", "rediss", "unix"), cls.redis_url),
            database_url=_url(e, "DATABASE_URL", ("postgresql", "postgres"), cls.database_url),
            topic_prefix=_name(e, "BTS_TOPIC_PREFIX", "") if e.get("BTS_TOPIC_PREFIX") else "",
            redis_prefix=e.get("BTS_REDIS_PREFIX", cls.redis_prefix) or cls.redis_prefix,
            db_schema=_name(e, "BTS_DB_SCHEMA", cls.db_schema),
            app_id=_name(e, "BTS_APP_ID", cls.app_id),
            partitions=_int(e, "BTS_PARTITIONS", cls.partitions, 1, 1024),
            fetch_wait_ms=_int(e, "KAFKA_FETCH_WAIT_MS", cls.fetch_wait_ms, 0, 60_000),
            sinks_fetch_wait_ms=_int(e, "SINKS_FETCH_WAIT_MS", cls.sinks_fetch_wait_ms, 0, 60_000),
            edge_host=e.get("EDGE_HOST", cls.edge_host) or cls.edge_host,
            edge_port=_int(e, "EDGE_PORT", cls.edge_port, 0, 65535),
            edge_heartbeat=_int(e, "EDGE_HEARTBEAT_SECONDS", cls.edge_heartbeat, 1, 300),
            edge_snapshot_cache_ms=_int(e, "EDGE_SNAPSHOT_CACHE_MS", cls.edge_snapshot_cache_ms,
                                        0, 60_000),
            worker_web_port=_int(e, "WORKER_WEB_PORT", cls.worker_web_port, 0, 65535),
            provider_url=_url(e, "PROVIDER_URL", ("http", "https"), ""),
            provider_mode=_choice(e, "PROVIDER_MODE", cls.provider_mode, ("rapidapi", "direct")),
            apifootball_key=e.get("APIFOOTBALL_KEY", ""),
            apibasketball_key=e.get("APIBASKETBALL_KEY", ""),
            apihockey_key=e.get("APIHOCKEY_KEY", ""),
            provider_plan=_choice(e, "PROVIDER_PLAN", cls.provider_plan, ("free", "pro", "ultra", "mega")),
            clock_speed=_float(e, "PROVIDER_CLOCK_SPEED", cls.clock_speed, 0.001, 100_000),
            clock_start=_float(e, "PROVIDER_CLOCK_START", cls.clock_start, 0, 4e9),
            store=_choice(e, "BTS_STORE", cls.store, ("rocksdb", "memory")),
            tiers_file=_file(e, "BTS_TIERS_FILE"),
            cors_origins=e.get("BTS_CORS_ORIGINS", cls.cors_origins).strip() or cls.cors_origins,
            data_dir=e.get("BTS_DATA_DIR", cls.data_dir) or cls.data_dir,
            log_format=_choice(e, "LOG_FORMAT", cls.log_format, ("json", "text")),
            log_level=_choice(e, "LOG_LEVEL", cls.log_level, ("debug", "info", "warning", "error")),
            kafka_security_protocol=_choice(
                e, "KAFKA_SECURITY_PROTOCOL", cls.kafka_security_protocol,
                ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")),
            kafka_sasl_mechanism=_choice(e, "KAFKA_SASL_MECHANISM", cls.kafka_sasl_mechanism,
                                         ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")),
            kafka_sasl_username=e.get("KAFKA_SASL_USERNAME", "").strip(),
            kafka_sasl_password=_secret(e, "KAFKA_SASL_PASSWORD", ""),
            kafka_ssl_cafile=_file(e, "KAFKA_SSL_CAFILE"),
            kafka_replication_factor=_int(e, "KAFKA_REPLICATION_FACTOR", cls.kafka_replication_factor,
                                          1, 7),
            redis_sentinels=_hostports(e, "REDIS_SENTINELS"),
            redis_sentinel_master=_name(e, "REDIS_SENTINEL_MASTER", cls.redis_sentinel_master),
            alert_webhook_url=_url(e, "ALERT_WEBHOOK_URL", ("http", "https"), ""),
            admin_key=_secret(e, "ADMIN_KEY", ""),
            pusher_app_id=_name(e, "PUSHER_APP_ID", cls.pusher_app_id),
            pusher_app_key=_name(e, "PUSHER_APP_KEY", cls.pusher_app_key),
            pusher_app_secret=_secret(e, "PUSHER_APP_SECRET", cls.pusher_app_secret),
            pusher_apps_file=_file(e, "PUSHER_APPS_FILE"),
            pusher_client_events=_bool(e, "PUSHER_CLIENT_EVENTS", cls.pusher_client_events),
            pusher_activity_timeout=_int(e, "PUSHER_ACTIVITY_TIMEOUT", cls.pusher_activity_timeout,
                                         1, 3600),
            pusher_pong_timeout=_int(e, "PUSHER_PONG_TIMEOUT", cls.pusher_pong_timeout, 1, 600),
        )
        if "RAPIDAPI_KEY" in e and not values["apifootball_key"]:
            values["apifootball_key"] = e["RAPIDAPI_KEY"]
        values.update(overrides)
        return cls(**values)

    def topic(self, name: str) -> str:
        """The broker-side name of a logical topic (``match-deltas`` → ``{prefix}match-deltas``)."""
        return f"{self.topic_prefix}{name}"

    @property
    def faust_id(self) -> str:
        return f"{self.topic_prefix}{self.app_id}"

    @property
    def sinks_group_id(self) -> str:
        """The Faust app id, and consumer group, of ``worker --role sinks``."""
        return f"{self.faust_id}-sinks"

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port[,host:port]`` for plain Kafka clients (aiokafka, kafka-python)."""
        return ",".join(
            part.split("://", 1)[-1] for part in self.kafka_url.split(";") if part
        )

    def env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {
            "KAFKA_URL": self.kafka_url,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "BTS_TOPIC_PREFIX": self.topic_prefix,
            "BTS_REDIS_PREFIX": self.redis_prefix,
            "BTS_DB_SCHEMA": self.db_schema,
            "BTS_APP_ID": self.app_id,
            "BTS_PARTITIONS": str(self.partitions),
            "KAFKA_FETCH_WAIT_MS": str(self.fetch_wait_ms),
            "SINKS_FETCH_WAIT_MS": str(self.sinks_fetch_wait_ms),
            "EDGE_HOST": self.edge_host,
            "EDGE_PORT": str(self.edge_port),
            "EDGE_HEARTBEAT_SECONDS": str(self.edge_heartbeat),
            "EDGE_SNAPSHOT_CACHE_MS": str(self.edge_snapshot_cache_ms),
            "WORKER_WEB_PORT": str(self.worker_web_port),
            "PROVIDER_URL": self.provider_url,
            "PROVIDER_MODE": self.provider_mode,
            "APIFOOTBALL_KEY": self.apifootball_key,
            "APIBASKETBALL_KEY": self.apibasketball_key,
            "APIHOCKEY_KEY": self.apihockey_key,
            "PROVIDER_PLAN": self.provider_plan,
            "PROVIDER_CLOCK_SPEED": repr(self.clock_speed),
            "PROVIDER_CLOCK_START": repr(self.clock_start),
            "BTS_STORE": self.store,
            "BTS_TIERS_FILE": self.tiers_file,
            "BTS_CORS_ORIGINS": self.cors_origins,
            "BTS_DATA_DIR": self.data_dir,
            "LOG_FORMAT": self.log_format,
            "LOG_LEVEL": self.log_level,
            "KAFKA_SECURITY_PROTOCOL": self.kafka_security_protocol,
            "KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
            "KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "KAFKA_REPLICATION_FACTOR": str(self.kafka_replication_factor),
            "REDIS_SENTINELS": self.redis_sentinels,
            "REDIS_SENTINEL_MASTER": self.redis_sentinel_master,
            "ALERT_WEBHOOK_URL": self.alert_webhook_url,
            "ADMIN_KEY": self.admin_key,
            "PUSHER_APP_ID": self.pusher_app_id,
            "PUSHER_APP_KEY": self.pusher_app_key,
            "PUSHER_APP_SECRET": self.pusher_app_secret,
            "PUSHER_APPS_FILE": self.pusher_apps_file,
            "PUSHER_CLIENT_EVENTS": "1" if self.pusher_client_events else "0",
            "PUSHER_ACTIVITY_TIMEOUT": str(self.pusher_activity_timeout),
            "PUSHER_PONG_TIMEOUT": str(self.pusher_pong_timeout),
        }
