"""Clients of the shared servers, built the same way in every process from :class:`Settings`.

Redis: ``REDIS_URL`` (``redis://``, ``rediss://`` for TLS, ``unix://``), or through
Sentinel when ``REDIS_SENTINELS`` is set; the URL then still gives the password,
database and TLS options.

Kafka: ``KAFKA_SECURITY_PROTOCOL`` with SASL/SCRAM or PLAIN credentials and a CA
bundle, handed to Faust (workers), aiokafka (the edge's delta feed) and
kafka-python (replay, status) in each one's own terms.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, urlparse

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from pipeline.settings import Settings


#: Connections one client keeps to Redis at most. Past that, a command waits for a free
#: connection (up to its socket timeout, else 5 s); redis-py's default pool instead fails
#: every command past 100 at once, which a burst of clients connecting to an edge reaches.
REDIS_MAX_CONNECTIONS = 64


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (the master's address from the Sentinels, rediscovered after a
    failover) with the waiting of :class:`~redis.asyncio.BlockingConnectionPool`: at most
    ``max_connections``, and a command past them waits for one to be free."""


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """A Redis client for ``settings``; ``options`` are redis-py connection options."""
    if not settings.redis_sentinels:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=REDIS_MAX_CONNECTIONS,
            timeout=options.get("socket_timeout") or 5, **options)
        return aioredis.Redis.from_pool(pool)
    url = urlparse(settings.redis_url)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    db = int(url.path.lstrip("/") or query.get("db", 0) or 0)
    conn: dict[str, Any] = {"db": db, **options}
    if url.username:
        conn["username"] = url.username
    if url.password:
        conn["password"] = url.password
    if url.scheme == "rediss":
        conn["ssl"] = True
        if "ssl_ca_certs" in query:
            conn["ssl_ca_certs"] = query["ssl_ca_certs"]
    sentinels = []
    for part in settings.redis_sentinels.split(","):
        host, _, port = part.strip().rpartition(":")
        sentinels.append((host, int(port)))
    sentinel = Sentinel(sentinels, sentinel_kwargs={k: v for k, v in conn.items()
                                                     if k in ("password", "username", "ssl")},
                        **conn)
    return sentinel.master_for(settings.redis_sentinel_master, redis_class=aioredis.Redis,
                               connection_pool_class=BlockingSentinelPool,
                               max_connections=REDIS_MAX_CONNECTIONS,
                               timeout=options.get("socket_timeout") or 5)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Security options for ``AIOKafkaConsumer`` / ``AIOKafkaProducer`` / the admin client."""
    opts: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    ctx = ssl_context(settings)
    if ctx is not None:
        opts["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL"):
        opts.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                    sasl_plain_username=settings.kafka_sasl_username,
                    sasl_plain_password=settings.kafka_sasl_password)
    return opts


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Security options for kafka-python's ``KafkaConsumer`` / ``KafkaProducer``."""
    opts: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.endswith("SSL") and settings.kafka_ssl_cafile:
        opts["ssl_cafile"] = settings.kafka_ssl_cafile
    if settings.kafka_security_protocol.startswith("SASL"):
        opts.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                    sasl_plain_username=settings.kafka_sasl_username,
                    sasl_plain_password=settings.kafka_sasl_password)
    return opts


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for the Faust app, or None for plaintext."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    ctx = ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(ctx)
    return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                 password=settings.kafka_sasl_password, ssl_context=ctx,
                                 mechanism=settings.kafka_sasl_mechanism)
