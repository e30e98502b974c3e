"""One HTTP client per provider (API-Football v3, API-Basketball v1, API-Hockey v1).

A :class:`ProviderClient` owns one aiohttp session, created lazily inside the
running loop and closed by :meth:`ProviderClient.close`. It speaks either to the
RapidAPI gateway (``x-rapidapi-key`` and ``x-rapidapi-host``) or to the direct
API-Sports host (``x-apisports-key`` only; those hosts reject other headers).

Two ways to call:

- :meth:`ProviderClient.call` returns the :class:`~tables.records.RawFetch` of a
  successful answer and raises the typed errors of :mod:`pipeline.providers.errors`;
- :meth:`ProviderClient.fetch` wraps it and never raises for provider trouble: it
  returns the record of the last attempt with ``error`` filled in. Only
  cancellation goes through.

Every attempt updates :attr:`ProviderClient.quota` from the rate-limit headers;
an attempt answered without them (a timeout, a bare 5xx) is counted down from the
last known figures, so the caller's ledger sees every request that may have been
billed. Retryable errors are retried at most ``retries`` times with exponential
backoff and full jitter; :class:`RateLimited` is not retried here, because the
quota budget paces the calls. After ``breaker_threshold`` consecutive calls that
failed with an upstream fault, the provider's circuit opens for
``breaker_cooldown`` seconds; then one trial call goes through (half-open), and its
outcome closes or re-opens the circuit.

With ``base_url`` (the simulator, or a proxy) the paths are the gateway's in
RapidAPI mode (``/v3/fixtures``, ``/games``); in direct mode they are prefixed by
the sport (``/football/v3/fixtures``, ``/basketball/games``), because one server
stands in for every direct host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import aiohttp

from pipeline.providers.errors import (
    AuthError,
    BadRequest,
    CircuitOpen,
    ConnectionFailed,
    MalformedResponse,
    NotSubscribed,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    Timeout,
    UpstreamError,
)
from tables.records import RECORD_VERSION, RawFetch

log = logging.getLogger(__name__)

#: Longest pause between two attempts, whatever the backoff doubling reaches.
MAX_BACKOFF = 5.0
#: Envelope keys whose presence makes a JSON body an API answer.
ENVELOPE_KEYS = ("errors", "response")
#: Errors that say the upstream itself is unwell; only these move the circuit breaker.
UPSTREAM_FAULTS: tuple[type[ProviderError], ...] = (
    UpstreamError, MalformedResponse, Timeout, ConnectionFailed,
)


@dataclass(frozen=True)
class Api:
    """Where one sport's API lives."""

    provider: str
    rapidapi_host: str
    prefix: str  # path prefix on the gateway ("/v3" for football)
    direct_url: str


APIS: dict[str, Api] = {
    "football": Api("apifootball", "api-football-v1.p.rapidapi.com", "/v3",
                    "https://v3.football.api-sports.io"),
    "basketball": Api("apibasketball", "api-basketball.p.rapidapi.com", "",
                      "https://v1.basketball.api-sports.io"),
    "hockey": Api("apihockey", "api-hockey.p.rapidapi.com", "",
                  "https://v1.hockey.api-sports.io"),
}


# -- quota --------------------------------------------------------------------------------


@dataclass
class Quota:
    """What the provider last said about this key's quota; None until it said it."""

    daily_limit: int | None = None
    daily_remaining: int | None = None
    minute_limit: int | None = None
    minute_remaining: int | None = None
    #: Requests sent by this client, every attempt included.
    requests: int = 0

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the daily and per-minute figures of one attempt (lower-cased headers)."""
        self.requests += 1
        daily = _int(headers.get("x-ratelimit-requests-remaining"))
        minute = _int(headers.get("x-ratelimit-remaining"))
        self.daily_limit = _int(headers.get("x-ratelimit-requests-limit")) or self.daily_limit
        self.minute_limit = _int(headers.get("x-ratelimit-limit")) or self.minute_limit
        if daily is not None:
            self.daily_remaining = daily
        elif self.daily_remaining is not None:
            self.daily_remaining = max(0, self.daily_remaining - 1)
        if minute is not None:
            self.minute_remaining = minute
        elif self.minute_remaining is not None:
            self.minute_remaining = max(0, self.minute_remaining - 1)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# -- circuit breaker ----------------------------------------------------------------------


class CircuitBreaker:
    """Consecutive upstream faults open the circuit; one trial call half-opens it.

    ``state`` is ``"closed"``, ``"open"`` or ``"half-open"`` (the cooldown is over
    and the next call is the trial).
    """

    def __init__(self, threshold: int, cooldown: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def admit(self) -> float | None:
        """None when a call may go ahead, else the seconds until it may."""
        state = self.state
        if state == "closed":
            return None
        assert self._opened_at is not None
        if state == "open":
            return self._opened_at + self.cooldown - self.clock()
        if self._trial:
            return min(self.cooldown, 1.0)
        self._trial = True
        return None

    def release(self) -> None:
        """The trial ended without an outcome (cancelled): let another one through."""
        self._trial = False

    def success(self) -> None:
        """The upstream answered (even with a request-level error)."""
        self.failures = 0
        self._opened_at = None
        self._trial = False

    def failure(self, trial: bool = False) -> bool:
        """An upstream fault ended a call (``trial``: the half-open one); True when it opened."""
        self.failures += 1
        if trial:
            self._trial = False
        if trial or self.failures >= self.threshold:
            self._opened_at = self.clock()
            return True
        return False


# -- classification -----------------------------------------------------------------------


def seconds_to_utc_midnight(now: float) -> float:
    return 86_400.0 - (now % 86_400.0)


def seconds_to_next_minute(now: float) -> float:
    return 60.0 - (now % 60.0)


def classify(provider: str, status: int, headers: Mapping[str, str], body: str,
             now: float | None = None) -> ProviderError | None:
    """The typed error an answer stands for, or None when it is a usable envelope.

    ``headers`` are lower-cased. Pure: ``now`` (epoch seconds) only sets ``retry_after``.
    """
    now = time.time() if now is None else now
    text = body.strip()
    ctype = headers.get("content-type", "").lower()

    def error(cls: type[ProviderError], message: str) -> ProviderError:
        return _with_retry_after(cls(message, provider=provider, status=status), headers, now)

    if status >= 500 or status == 499:
        return error(UpstreamError, _message_of(text) or f"HTTP {status}")
    if not text:
        if status in (401, 403, 429):
            return _gateway(provider, status, "", headers, now)
        return error(MalformedResponse, "empty body")
    if "html" in ctype or text.startswith("<"):
        if status in (401, 403, 429):
            return _gateway(provider, status, _excerpt(text), headers, now)
        return error(UpstreamError, f"HTML body: {_excerpt(text)}")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        if status in (401, 403, 429) or 400 <= status < 500:
            return _gateway(provider, status, _excerpt(text), headers, now)
        return error(MalformedResponse, f"body is not JSON ({exc.msg} at {exc.pos}): "
                                        f"{_excerpt(text)}")
    if isinstance(data, dict) and all(k in data for k in ENVELOPE_KEYS):
        problems = data["errors"]
        if problems:
            return _envelope(provider, status, problems, headers, now)
        if 200 <= status < 300:
            return None
        return _gateway(provider, status, f"HTTP {status}", headers, now)
    if isinstance(data, dict) and "message" in data:
        return _gateway(provider, status, str(data["message"]), headers, now)
    if 200 <= status < 300:
        return error(MalformedResponse, f"JSON without the envelope: {_excerpt(text)}")
    return _gateway(provider, status, _excerpt(text), headers, now)


def _envelope(provider: str, status: int, problems: Any, headers: Mapping[str, str],
              now: float) -> ProviderError:
    """A non-empty ``errors`` member: an object keyed by field, sometimes a list."""
    if isinstance(problems, dict):
        items = [(str(k), str(v)) for k, v in problems.items()]
    elif isinstance(problems, list):
        items = [("", str(v)) for v in problems]
    else:
        items = [("", str(problems))]
    keys = {k.lower() for k, _ in items}
    message = "; ".join(f"{k}: {v}" if k else v for k, v in items)
    cls: type[ProviderError]
    if "token" in keys:
        cls = AuthError
    elif "requests" in keys:
        cls = QuotaExceeded
    elif "ratelimit" in keys:
        cls = RateLimited
    else:
        return _gateway(provider, status, message, headers, now, default=BadRequest)
    return _with_retry_after(cls(message, provider=provider, status=status), headers, now)


def _gateway(provider: str, status: int, message: str, headers: Mapping[str, str], now: float,
             *, default: type[ProviderError] | None = None) -> ProviderError:
    """A RapidAPI gateway answer (``{"message": ...}``) or a bare status, by status and text."""
    low = message.lower()
    cls: type[ProviderError]
    if "not subscribed" in low:
        cls = NotSubscribed
    elif "invalid api key" in low or "application key" in low or status == 401:
        cls = AuthError
    elif "daily" in low or "limit for the day" in low:
        cls = QuotaExceeded
    elif status == 429 or "rate limit" in low or "too many requests" in low:
        cls = QuotaExceeded if headers.get("x-ratelimit-requests-remaining") == "0" else RateLimited
    elif status == 403:
        cls = AuthError
    elif default is not None:
        cls = default
    elif 400 <= status < 500:
        cls = BadRequest
    else:
        cls = UpstreamError
    err = cls(message or f"HTTP {status}", provider=provider, status=status)
    return _with_retry_after(err, headers, now)


def _with_retry_after(err: ProviderError, headers: Mapping[str, str], now: float) -> ProviderError:
    if isinstance(err, QuotaExceeded):
        reset = headers.get("x-ratelimit-requests-reset")
        try:
            err.retry_after = float(reset) if reset is not None else seconds_to_utc_midnight(now)
        except ValueError:
            err.retry_after = seconds_to_utc_midnight(now)
    elif isinstance(err, RateLimited):
        err.retry_after = seconds_to_next_minute(now)
    return err


def _message_of(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return _excerpt(text)
    if isinstance(data, dict) and "message" in data:
        return str(data["message"])
    return _excerpt(text)


def _excerpt(text: str, size: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[:size] + "..."


def useful_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth keeping on a record, lower-cased."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low.startswith("x-ratelimit-") or low in ("content-type", "server"):
            out[low] = value
    return out


# -- the client ---------------------------------------------------------------------------


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: str
    latency_ms: float
    fetched_at: float


class ProviderClient:
    """The HTTP client of one provider (one key, one session, one circuit)."""

    def __init__(self, sport: str, key: str, *, base_url: str | None = None,
                 rapidapi: bool = True, timeout: float = 10.0, retries: int = 2,
                 backoff: float = 0.2, breaker_threshold: int = 5,
                 breaker_cooldown: float = 30.0) -> None:
        if sport not in APIS:
            raise ValueError(f"unknown sport {sport!r}; expected one of {sorted(APIS)}")
        self.sport = sport
        self.api = APIS[sport]
        self.provider = self.api.provider
        self.rapidapi = rapidapi
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.quota = Quota()
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown)
        base = base_url.rstrip("/") if base_url else None
        if rapidapi:
            self._root = (base or f"https://{self.api.rapidapi_host}") + self.api.prefix
            self._headers = {"x-rapidapi-key": key, "x-rapidapi-host": self.api.rapidapi_host}
        else:
            self._root = (f"{base}/{sport}{self.api.prefix}" if base else self.api.direct_url)
            self._headers = {"x-apisports-key": key}
        self._session: aiohttp.ClientSession | None = None

    def url(self, endpoint: str) -> str:
        return f"{self._root}/{endpoint.strip('/')}"

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- calls ----------------------------------------------------------------------------

    async def fetch(self, endpoint: str, params: Mapping[str, str]) -> RawFetch:
        """The record of one call, success or typed error; raises only on cancellation."""
        try:
            return await self.call(endpoint, params)
        except ProviderError as exc:
            assert exc.record is not None
            return exc.record

    async def call(self, endpoint: str, params: Mapping[str, str]) -> RawFetch:
        """The record of a successful answer; raises a :class:`ProviderError` otherwise."""
        endpoint = endpoint.strip("/")
        query = {str(k): str(v) for k, v in params.items()}
        trial = self.breaker.state == "half-open"
        wait = self.breaker.admit()
        if wait is not None:
            err: ProviderError = CircuitOpen(
                f"circuit open after {self.breaker.failures} consecutive failures",
                provider=self.provider, retry_after=max(0.0, wait))
            err.record = self._record(endpoint, query, None, err)
            raise err
        settled = False
        try:
            attempt = 0
            while True:
                answer, err_or_none = await self._attempt(endpoint, query)
                if err_or_none is None:
                    self.breaker.success()
                    settled = True
                    return self._record(endpoint, query, answer, None)
                err = err_or_none
                err.record = self._record(endpoint, query, answer, err)
                if (not err.retryable or isinstance(err, RateLimited)
                        or attempt >= self.retries):
                    break
                delay = random.uniform(0, min(MAX_BACKOFF, self.backoff * 2 ** attempt))
                log.info("%s %s: %r; retry %d in %.2fs", self.provider, endpoint, err,
                         attempt + 1, delay)
                await asyncio.sleep(delay)
                attempt += 1
            if isinstance(err, UPSTREAM_FAULTS):
                if self.breaker.failure(trial):
                    log.warning("%s: circuit open for %.1fs after %r", self.provider,
                                self.breaker.cooldown, err)
            else:
                self.breaker.success()
            settled = True
            raise err
        finally:
            if trial and not settled:
                self.breaker.release()

    async def _attempt(self, endpoint: str,
                       query: dict[str, str]) -> tuple[_Answer | None, ProviderError | None]:
        """One HTTP request; transport failures are mapped here, answers by :func:`classify`."""
        session = self._client_session()
        started = time.monotonic()
        status = 0
        headers: dict[str, str] = {}
        chunks: list[bytes] = []

        def answer() -> _Answer:
            return _Answer(status, headers, b"".join(chunks).decode("utf-8", "replace"),
                           round((time.monotonic() - started) * 1000, 1), time.time())

        def failed(cls: type[ProviderError], message: str) -> tuple[_Answer, ProviderError]:
            self.quota.observe(headers)
            return answer(), cls(message, provider=self.provider, status=status)

        try:
            async with session.get(self.url(endpoint), params=query) as resp:
                status = resp.status
                headers = useful_headers(resp.headers)
                async for chunk in resp.content.iter_any():
                    chunks.append(chunk)
        except TimeoutError:
            return failed(Timeout, f"no complete answer within {self.timeout:g}s")
        except aiohttp.ClientPayloadError as exc:
            return failed(MalformedResponse, f"truncated body: {exc}")
        except aiohttp.ClientError as exc:
            if status:
                return failed(MalformedResponse, f"answer cut short: {exc!r}")
            return failed(ConnectionFailed, f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return failed(ConnectionFailed, f"{type(exc).__name__}: {exc}")
        result = answer()
        self.quota.observe(headers)
        err = classify(self.provider, status, headers, result.body, result.fetched_at)
        if isinstance(err, QuotaExceeded):
            self.quota.daily_remaining = 0
        elif isinstance(err, RateLimited):
            self.quota.minute_remaining = 0
        return result, err

    def _record(self, endpoint: str, params: dict[str, str], answer: _Answer | None,
                err: ProviderError | None) -> RawFetch:
        return {
            "version": RECORD_VERSION,
            "provider": self.provider,
            "sport": self.sport,
            "endpoint": endpoint,
            "params": params,
            "status": answer.status if answer else 0,
            "headers": answer.headers if answer else {},
            "latency_ms": answer.latency_ms if answer else 0.0,
            "fetched_at": answer.fetched_at if answer else time.time(),
            "body": answer.body if answer else "",
            "error": None if err is None else {"type": type(err).__name__, "message": err.message},
        }


def build_client(sport: str, key: str, *, base_url: str | None = None, rapidapi: bool = True,
                 timeout: float = 10.0, retries: int = 2, backoff: float = 0.2,
                 breaker_threshold: int = 5, breaker_cooldown: float = 30.0) -> ProviderClient:
    """The client of ``sport``'s provider; its session opens on the first call."""
    return ProviderClient(sport, key, base_url=base_url, rapidapi=rapidapi, timeout=timeout,
                          retries=retries, backoff=backoff, breaker_threshold=breaker_threshold,
                          breaker_cooldown=breaker_cooldown)
