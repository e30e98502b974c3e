"""Alert rules, evaluated continuously in every worker.

An :class:`Observations` is what a worker knows of itself at one moment (quota
used, provider calls and failures, circuits, live matches without data, consumer
lag, sinks retrying). Each :class:`Rule` turns it into the set of conditions that
hold now, each named by a key (``quota_95:apifootball``). The
:class:`RuleEngine` remembers which keys are firing, so an alert **fires once**
when its condition starts and **resolves once** when the condition has been gone
for ``clear_after`` seconds (a short hold, so a condition that flickers does not
page twice).

Every transition is written to the log, published to the ``alerts`` topic, kept
in Redis (``{prefix}alerts``, the newest 200, for ``bts-guru status`` and
``/admin``) and, when ``ALERT_WEBHOOK_URL`` is set, POSTed there as
Slack-compatible JSON ``{"text": ...}`` with retries.

Rules (thresholds are the constants below, documented in ``docs/monitoring.md``):

| rule | fires when | key |
|---|---|---|
| ``quota_80`` / ``quota_95`` | a provider's daily quota is 80 % / 95 % used | per provider |
| ``provider_errors`` | at least half of at least 5 calls in the last minute failed | per provider |
| ``circuit_open`` | a provider's circuit breaker is not closed | per provider |
| ``live_stale`` | a live match has had no data for 60 s | per match |
| ``consumer_lag`` | the worker's consumer lag is over 1000 records | one |
| ``sink_retrying`` | a store failed a write (or a recovery read) and has not succeeded since | per sink |
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from mode import Service
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

QUOTA_LEVELS = (0.80, 0.95)
ERROR_RATE = 0.5
ERROR_MIN_CALLS = 5
ERROR_WINDOW = 60.0
STALE_AFTER = 60.0
LAG_BOUND = 1000
CLEAR_AFTER = 10.0
EVALUATE_EVERY = 1.0
WEBHOOK_ATTEMPTS = 5
RECENT_KEPT = 200


@dataclass
class Observations:
    """What one worker sees of itself at one moment."""

    #: provider → share of the daily quota used (0 … 1)
    quota_used: dict[str, float] = field(default_factory=dict)
    #: provider → (calls, failed calls) in the last :data:`ERROR_WINDOW` seconds
    calls: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: provider → circuit breaker state (``closed``, ``open``, ``half-open``)
    circuits: dict[str, str] = field(default_factory=dict)
    #: live match id → seconds since the last data about it
    silent_live: dict[str, float] = field(default_factory=dict)
    #: records behind the end of the worker's assigned partitions
    lag: int = 0
    #: sink → failed writes since its last successful one
    sinks_retrying: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Condition:
    rule: str
    key: str
    severity: str
    summary: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    """One transition of one alert: ``state`` is ``firing`` or ``resolved``."""

    rule: str
    key: str
    state: str
    severity: str
    summary: str
    labels: dict[str, str]
    ts: float
    since: float
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def text(self) -> str:
        icon = ":rotating_light:" if self.state == "firing" else ":white_check_mark:"
        return f"{icon} [{self.state.upper()}] {self.rule} ({self.severity}): {self.summary}"


class Rule:
    """One kind of alert; :meth:`check` returns the conditions that hold now."""

    name = ""
    severity = "warning"

    def check(self, obs: Observations) -> Iterable[Condition]:
        raise NotImplementedError

    def condition(self, key: str, summary: str, **labels: str) -> Condition:
        return Condition(self.name, f"{self.name}:{key}" if key else self.name, self.severity,
                         summary, labels)


class QuotaRule(Rule):
    def __init__(self, level: float) -> None:
        self.level = level
        self.name = f"quota_{round(level * 100)}"
        self.severity = "critical" if level >= 0.95 else "warning"

    def check(self, obs: Observations) -> Iterable[Condition]:
        for provider, used in sorted(obs.quota_used.items()):
            if used >= self.level:
                yield self.condition(provider, f"{provider} has used {used:.0%} of its daily quota",
                                     provider=provider)


class ErrorRateRule(Rule):
    name = "provider_errors"
    severity = "critical"

    def __init__(self, rate: float = ERROR_RATE, min_calls: int = ERROR_MIN_CALLS) -> None:
        self.rate = rate
        self.min_calls = min_calls

    def check(self, obs: Observations) -> Iterable[Condition]:
        for provider, (calls, failed) in sorted(obs.calls.items()):
            if calls >= self.min_calls and failed / calls >= self.rate:
                yield self.condition(
                    provider, f"{provider}: {failed} of the last {calls} calls failed", provider=provider)


class CircuitRule(Rule):
    name = "circuit_open"
    severity = "critical"

    def check(self, obs: Observations) -> Iterable[Condition]:
        for provider, state in sorted(obs.circuits.items()):
            if state != "closed":
                yield self.condition(provider, f"{provider}: circuit breaker {state}",
                                     provider=provider)


class StaleLiveRule(Rule):
    name = "live_stale"

    def __init__(self, after: float = STALE_AFTER) -> None:
        self.after = after

    def check(self, obs: Observations) -> Iterable[Condition]:
        for match_id, age in sorted(obs.silent_live.items()):
            if age >= self.after:
                yield self.condition(match_id, f"live match {match_id} has had no data for "
                                     f"{age:.0f}s", match_id=match_id)


class LagRule(Rule):
    name = "consumer_lag"

    def __init__(self, bound: int = LAG_BOUND) -> None:
        self.bound = bound

    def check(self, obs: Observations) -> Iterable[Condition]:
        if obs.lag > self.bound:
            yield self.condition("", f"consumer lag {obs.lag} records (bound {self.bound})")


class SinkRetryRule(Rule):
    name = "sink_retrying"
    severity = "critical"

    def check(self, obs: Observations) -> Iterable[Condition]:
        for sink, retries in sorted(obs.sinks_retrying.items()):
            if retries > 0:
                yield self.condition(sink, f"sink {sink} is retrying ({retries} failed writes)",
                                     sink=sink)


def default_rules() -> list[Rule]:
    return [QuotaRule(level) for level in QUOTA_LEVELS] + [
        ErrorRateRule(), CircuitRule(), StaleLiveRule(), LagRule(), SinkRetryRule()]


class RuleEngine:
    """Remembers what is firing; :meth:`evaluate` returns only the transitions."""

    def __init__(self, rules: list[Rule] | None = None, *, clear_after: float = CLEAR_AFTER,
                 source: str = "") -> None:
        self.rules = default_rules() if rules is None else rules
        self.clear_after = clear_after
        self.source = source
        self.firing: dict[str, Alert] = {}
        self._gone_since: dict[str, float] = {}

    def evaluate(self, obs: Observations, now: float | None = None) -> list[Alert]:
        now = time.time() if now is None else now
        holding: dict[str, Condition] = {}
        for rule in self.rules:
            for cond in rule.check(obs):
                holding[cond.key] = cond
        out: list[Alert] = []
        for key, cond in holding.items():
            self._gone_since.pop(key, None)
            if key not in self.firing:
                alert = Alert(cond.rule, key, "firing", cond.severity, cond.summary, cond.labels,
                              now, now, self.source)
                self.firing[key] = alert
                out.append(alert)
        for key in list(self.firing):
            if key in holding:
                continue
            gone = self._gone_since.setdefault(key, now)
            if now - gone >= self.clear_after:
                fired = self.firing.pop(key)
                del self._gone_since[key]
                out.append(dataclasses.replace(fired, state="resolved", ts=now,
                                               summary="resolved: " + fired.summary))
        return out


class Webhook:
    """POSTs alerts as Slack-compatible JSON, retrying with capped exponential backoff."""

    def __init__(self, url: str, *, attempts: int = WEBHOOK_ATTEMPTS, base: float = 0.5,
                 timeout: float = 5.0) -> None:
        self.url = url
        self.attempts = attempts
        self.base = base
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def payload(alert: Alert) -> dict[str, Any]:
        return {"text": alert.text()}

    async def send(self, alert: Alert) -> bool:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = self.payload(alert)
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._session.post(self.url, json=body) as resp:
                    if resp.status < 300:
                        return True
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                problem = repr(exc)
            if attempt < self.attempts:
                delay = min(10.0, self.base * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
                log.warning("alert webhook failed (%s), attempt %d of %d, retrying in %.1fs",
                            problem, attempt, self.attempts, delay)
                await asyncio.sleep(delay)
            else:
                log.error("alert webhook failed (%s), giving up on %s", problem, alert.key)
        return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


Publish = Callable[[bytes, bytes], Awaitable[Any]]


class Alerting(Service):
    """Evaluates the rules every second and sends each transition everywhere it goes."""

    def __init__(self, source: Callable[[], Observations], *, publish: Publish | None = None,
                 webhook_url: str = "", redis: aioredis.Redis | None = None,
                 redis_prefix: str = "bts:", engine: RuleEngine | None = None,
                 interval: float = EVALUATE_EVERY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.publish = publish
        self.webhook = Webhook(webhook_url) if webhook_url else None
        self.redis = redis
        self.recent_key = f"{redis_prefix}alerts"
        self.engine = engine or RuleEngine()
        self.interval = interval
        self.sent: list[Alert] = []
        self._deliveries: set[asyncio.Task[bool]] = set()
        self._last_delivery: asyncio.Task[bool] | None = None
        self.on_alert: list[Callable[[Alert], object]] = []

    async def on_stop(self) -> None:
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=5)
        if self.webhook is not None:
            await self.webhook.close()

    @Service.task
    async def _evaluate_forever(self) -> None:
        while not self.should_stop:
            try:
                await self.evaluate()
            except Exception:  # noqa: BLE001 - a broken evaluation must not stop the next one
                log.exception("alert evaluation failed")
            await self.sleep(self.interval)

    async def evaluate(self, now: float | None = None) -> list[Alert]:
        """Evaluate once and dispatch the transitions; returns them."""
        alerts = self.engine.evaluate(self.source(), now)
        for alert in alerts:
            await self.dispatch(alert)
        return alerts

    async def dispatch(self, alert: Alert) -> None:
        level = logging.WARNING if alert.state == "firing" else logging.INFO
        log.log(level, "alert %s %s: %s", alert.state, alert.key, alert.summary,
                extra={"alert": alert.as_json()})
        self.sent.append(alert)
        del self.sent[:-RECENT_KEPT]
        for callback in self.on_alert:
            callback(alert)
        data = json.dumps(alert.as_json()).encode()
        if self.publish is not None:
            try:
                await self.publish(alert.key.encode(), data)
            except Exception as exc:  # noqa: BLE001 - the broker may be away; the log has it
                log.warning("alert not published to the alerts topic: %r", exc)
        if self.redis is not None:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.lpush(self.recent_key, data)
                    pipe.ltrim(self.recent_key, 0, RECENT_KEPT - 1)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.debug("alert not kept in redis: %r", exc)
        if self.webhook is not None:
            task = asyncio.ensure_future(self._deliver(self._last_delivery, alert))
            self._last_delivery = task
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, previous: asyncio.Task[bool] | None, alert: Alert) -> bool:
        """Send after the previous delivery, so the receiver sees transitions in order."""
        if previous is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(previous)
        assert self.webhook is not None
        return await self.webhook.send(alert)

    async def drain(self) -> None:
        """Wait for the webhook deliveries in flight (tests, shutdown)."""
        with contextlib.suppress(Exception):
            if self._deliveries:
                await asyncio.wait(set(self._deliveries), timeout=30)


def firing_summary(alerts: Mapping[str, Alert]) -> list[dict[str, Any]]:
    return [a.as_json() for a in sorted(alerts.values(), key=lambda a: a.since)]
