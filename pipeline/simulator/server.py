"""The provider simulator as an HTTP server: a :class:`World` behind the real APIs' doors.

One port answers both ways the providers are reached:

- RapidAPI: the request names the API in ``x-rapidapi-host``
  (``api-football-v1.p.rapidapi.com`` with paths under ``/v3/``,
  ``api-basketball.p.rapidapi.com``, ``api-hockey.p.rapidapi.com``) and carries its key
  in ``x-rapidapi-key``. Gateway refusals are ``{"message": ...}`` bodies with 401, 403,
  404 or 429.
- Direct (API-Sports): no ``x-rapidapi-host``; the sport is the path prefix
  (``/football/v3/fixtures``, ``/basketball/games``, ``/hockey/games``), or the real
  direct host in ``Host`` with the bare path. The key is in ``x-apisports-key``;
  refusals are HTTP 200 envelopes whose ``errors`` is an object.

Quotas are kept per (key, sport) in simulated time: the day ends at 00:00 UTC, the
minute window is the current simulated minute. ``/status`` is free; refused requests
use nothing.

``/_sim/`` is the control API (no key): queued faults (``/_sim/faults``), the state
(``/_sim/state``) and, for a world on a :class:`ManualClock`, the clock
(``/_sim/clock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pipeline.simulator.model import SPORTS, ManualClock, SimClock, World, dumps_wire, envelope

log = logging.getLogger("pipeline.simulator")

DAY = 86_400

#: Plan → (requests per day, per minute over the direct API, per minute over RapidAPI).
PLANS: dict[str, tuple[int, int, int]] = {
    "free": (100, 10, 30),
    "pro": (7_500, 300, 300),
    "ultra": (75_000, 450, 450),
    "mega": (150_000, 900, 900),
}
#: The plans' names on RapidAPI (its free tier is "Basic").
RAPIDAPI_PLAN = {"free": "BASIC", "pro": "PRO", "ultra": "ULTRA", "mega": "MEGA"}

RAPIDAPI_HOSTS = {
    "api-football-v1.p.rapidapi.com": "football",
    "api-basketball.p.rapidapi.com": "basketball",
    "api-hockey.p.rapidapi.com": "hockey",
}
DIRECT_HOSTS = {
    "v3.football.api-sports.io": "football",
    "v1.basketball.api-sports.io": "basketball",
    "v1.hockey.api-sports.io": "hockey",
}
RAPIDAPI_SLUG = {"football": "api-football", "basketball": "api-basketball", "hockey": "api-hockey"}
ENDPOINTS = {
    "football": frozenset({"fixtures", "fixtures/events", "fixtures/statistics", "fixtures/lineups",
                           "fixtures/players", "status"}),
    "basketball": frozenset({"games", "status"}),
    "hockey": frozenset({"games", "status"}),
}

MSG_NO_API = "API doesn't exists"
MSG_BAD_KEY = "Invalid API key. Go to https://docs.rapidapi.com/docs/keys for more info."
MSG_UNSUBSCRIBED = "You are not subscribed to this API."
MSG_RAPID_DAY = ("You have exceeded the DAILY quota for Requests on your current plan, {plan}. "
                 "Upgrade your plan at https://rapidapi.com/api-sports/api/{slug}")
MSG_RAPID_MINUTE = ("You have exceeded the rate limit per minute for your plan, {plan}, "
                    "by the API provider")
MSG_TIMEOUT = ("The request to the API has timed out. Please try again later, or if the issue "
               "persists, please contact the API provider")
ERR_TOKEN = {"token": "Error/Missing application key. Go to https://www.api-football.com/"
                      "documentation-v3 to learn how to get your API application key."}
ERR_DAY = {"requests": "You have reached the request limit for the day, Go to "
                       "https://dashboard.api-football.com to upgrade your plan."}
ERR_MINUTE = "Too many requests. Your rate limit is {n} requests per minute."

FAULT_KINDS = ("error500", "error502", "error503", "timeout", "malformed", "truncated", "html",
               "slow", "empty204", "quota_day", "quota_minute", "stale")
#: Seconds (real for timeout and slow; simulated for stale: how old the answer is).
DEFAULT_DELAY = {"timeout": 30.0, "slow": 2.0, "stale": 600.0}
UNSUBSCRIBED = "unsubscribed"
SIM_PATHS = frozenset({"/_sim/faults", "/_sim/state", "/_sim/clock"})

HTML_502 = """<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""

# -- quotas -----------------------------------------------------------------------------------


class Quotas:
    """Daily and per-minute counters per (key, sport), in simulated time."""

    def __init__(self, plan: str, rapidapi_minute: bool = True) -> None:
        if plan not in PLANS:
            raise ValueError(f"unknown plan {plan!r}; one of {', '.join(PLANS)}")
        self.plan = plan
        self.per_day, self._minute_direct, self._minute_rapid = PLANS[plan]
        if not rapidapi_minute:
            self._minute_rapid = self._minute_direct
        self._day: dict[tuple[str, str], tuple[int, int]] = {}  # → (day index, count)
        self._minute: dict[tuple[str, str], tuple[int, int]] = {}  # → (minute index, count)

    def per_minute(self, mode: str) -> int:
        return self._minute_rapid if mode == "rapidapi" else self._minute_direct

    def used(self, key: str, sport: str, now: float) -> tuple[int, int]:
        """Requests counted today and in the current minute."""
        day, n_day = self._day.get((key, sport), (-1, 0))
        minute, n_min = self._minute.get((key, sport), (-1, 0))
        return (n_day if day == int(now // DAY) else 0,
                n_min if minute == int(now // 60) else 0)

    def over(self, key: str, sport: str, mode: str, now: float) -> str | None:
        """``"day"`` or ``"minute"`` when one more request would pass a limit."""
        n_day, n_min = self.used(key, sport, now)
        if n_day >= self.per_day:
            return "day"
        if n_min >= self.per_minute(mode):
            return "minute"
        return None

    def take(self, key: str, sport: str, now: float) -> None:
        n_day, n_min = self.used(key, sport, now)
        self._day[(key, sport)] = (int(now // DAY), n_day + 1)
        self._minute[(key, sport)] = (int(now // 60), n_min + 1)

    def headers(self, key: str, sport: str, mode: str, now: float, *,
                exhausted: str | None = None) -> dict[str, str]:
        n_day, n_min = self.used(key, sport, now)
        day_left = max(0, self.per_day - n_day)
        min_left = max(0, self.per_minute(mode) - n_min)
        if exhausted == "day":
            day_left = 0
        elif exhausted == "minute":
            min_left = 0
        out = {"x-ratelimit-requests-limit": str(self.per_day),
               "x-ratelimit-requests-remaining": str(day_left)}
        if mode == "rapidapi":
            out["x-ratelimit-requests-reset"] = str(DAY - int(now) % DAY)
        out["X-RateLimit-Limit"] = str(self.per_minute(mode))
        out["X-RateLimit-Remaining"] = str(min_left)
        return out


# -- faults -----------------------------------------------------------------------------------


@dataclass
class Fault:
    id: int
    kind: str
    count: int  # -1: until cleared
    sport: str | None
    delay: float

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "count": self.count, "sport": self.sport,
                "delay": self.delay}


class Faults:
    """Faults queued by ``POST /_sim/faults``, consumed in order by matching requests."""

    def __init__(self) -> None:
        self._queue: list[Fault] = []
        self._next = 1

    def add(self, spec: Mapping[str, Any]) -> Fault:
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        count = spec.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or (count < 1 and count != -1):
            raise ValueError("count must be a positive integer, or -1 for until cleared")
        sport = spec.get("sport")
        if sport is not None and sport not in SPORTS:
            raise ValueError(f"sport must be one of {', '.join(SPORTS)}")
        delay = spec.get("delay", DEFAULT_DELAY.get(kind, 0.0))
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError("delay must be a number of seconds, 0 or more")
        fault = Fault(self._next, kind, count, sport, float(delay))
        self._next += 1
        self._queue.append(fault)
        return fault

    def take(self, sport: str) -> Fault | None:
        for fault in self._queue:
            if fault.sport is None or fault.sport == sport:
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self._queue.remove(fault)
                return fault
        return None

    def clear(self) -> int:
        n = len(self._queue)
        self._queue.clear()
        return n

    def listing(self) -> list[dict[str, Any]]:
        return [f.as_json() for f in self._queue]


# -- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    mode: str  # "rapidapi" or "direct"
    sport: str
    endpoint: str  # below the API root: "fixtures", "games", "status", ...


def _json(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=dumps_wire(obj).encode(),
                        headers={"Content-Type": "application/json", **(headers or {})})


class Simulator:
    """The request handling around one :class:`World`; see the module's docstring."""

    def __init__(self, world: World, plan: str = "pro", keys: set[str] | None = None,
                 rapidapi_minute: bool = True) -> None:
        self.world = world
        self.plan = plan
        self.quotas = Quotas(plan, rapidapi_minute)
        self.keys = set(keys) if keys is not None else None
        self.faults = Faults()
        self.counted = {s: 0 for s in SPORTS}
        self.received = {s: 0 for s in SPORTS}
        self.quota_errors = {s: 0 for s in SPORTS}
        self.closing = asyncio.Event()

    # -- routing --------------------------------------------------------------------------

    @staticmethod
    def route(request: web.Request) -> Route | web.Response:
        path = request.path
        host = request.headers.get("x-rapidapi-host")
        if host is not None:
            sport = RAPIDAPI_HOSTS.get(host.strip().lower())
            if sport is None:
                return _json(404, {"message": MSG_NO_API}, {"server": "RapidAPI-1.2.8"})
            if sport != "football":
                return Route("rapidapi", sport, path.strip("/"))
            if not path.startswith("/v3/"):
                return _json(404, {"message": f"Endpoint '{path}' does not exist"},
                             {"server": "RapidAPI-1.2.8"})
            return Route("rapidapi", sport, path[len("/v3/"):].strip("/"))
        direct = DIRECT_HOSTS.get(request.host.split(":")[0].lower())
        if direct is not None:
            endpoint = path
            if direct == "football" and path.startswith("/v3/"):
                endpoint = path[len("/v3/"):]
            return Route("direct", direct, endpoint.strip("/"))
        first, _, rest = path.strip("/").partition("/")
        if first == "football" and rest.startswith("v3/"):
            return Route("direct", first, rest[len("v3/"):].strip("/"))
        if first in ("basketball", "hockey"):
            return Route("direct", first, rest.strip("/"))
        return _json(404, {"message": f"Endpoint '{path}' does not exist"})

    # -- answers --------------------------------------------------------------------------

    def _headers(self, route: Route) -> dict[str, str]:
        if route.mode == "rapidapi":
            return {"server": "RapidAPI-1.2.8", "x-rapidapi-version": "1.2.8",
                    "x-rapidapi-region": "AWS - eu-central-1"}
        return {"server": "nginx", "access-control-allow-origin": "*"}

    def _refusal(self, route: Route, params: Mapping[str, str], status: int, message: str,
                 errors: dict[str, str], extra: Mapping[str, str] | None = None) -> web.Response:
        headers = {**self._headers(route), **(extra or {})}
        if route.mode == "rapidapi":
            return _json(status, {"message": message}, headers)
        return _json(200, envelope(route.sport, route.endpoint, params, errors, []), headers)

    def _quota_refusal(self, route: Route, key: str, params: Mapping[str, str], which: str,
                       now: float) -> web.Response:
        self.quota_errors[route.sport] += 1
        headers = self.quotas.headers(key, route.sport, route.mode, now, exhausted=which)
        plan = RAPIDAPI_PLAN[self.plan]
        if which == "day":
            msg = MSG_RAPID_DAY.format(plan=plan, slug=RAPIDAPI_SLUG[route.sport])
            errors = ERR_DAY
        else:
            msg = MSG_RAPID_MINUTE.format(plan=plan)
            errors = {"rateLimit": ERR_MINUTE.format(n=self.quotas.per_minute(route.mode))}
        return self._refusal(route, params, 429, msg, errors, headers)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closing.wait(), seconds)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/_sim" or request.path.startswith("/_sim/"):
            if request.path in SIM_PATHS:
                return _json(405, {"error": "Method Not Allowed"})
            return _json(404, {"error": f"no such control endpoint: {request.path}"})
        route = self.route(request)
        if isinstance(route, web.Response):
            return route
        if request.method != "GET":
            return _json(405, {"message": "Method Not Allowed"},
                         {**self._headers(route), "Allow": "GET"})
        params = dict(request.query)
        self.received[route.sport] += 1

        header = "x-rapidapi-key" if route.mode == "rapidapi" else "x-apisports-key"
        key = request.headers.get(header, "")
        if key == UNSUBSCRIBED:
            return self._refusal(route, params, 403, MSG_UNSUBSCRIBED, ERR_TOKEN)
        if not key or (self.keys is not None and key not in self.keys):
            return self._refusal(route, params, 401, MSG_BAD_KEY, ERR_TOKEN)

        fault = self.faults.take(route.sport)
        kind = fault.kind if fault else None
        if fault is not None:
            answer = await self._fault(fault, route, key, params)
            if answer is not None:
                return answer

        now = self.world.now()
        if route.endpoint == "status":
            used, _ = self.quotas.used(key, route.sport, now)
            status, body = self.world.status_json(route.sport, plan=self.plan, current=used,
                                                  limit_day=self.quotas.per_day, now=now)
            return _json(status, body, self._headers(route))
        if route.endpoint not in ENDPOINTS[route.sport]:
            status, body = self.world.fixtures_json(route.endpoint, params, sport=route.sport,
                                                    now=now)
            return _json(status, body, self._headers(route))
        which = self.quotas.over(key, route.sport, route.mode, now)
        if which is not None:
            return self._quota_refusal(route, key, params, which, now)
        # A stale answer: what a provider cache that stopped updating still serves.
        seen = now - fault.delay if kind == "stale" and fault is not None else now
        status, body = self.world.fixtures_json(route.endpoint, params, sport=route.sport, now=seen)
        if status == 200:
            self.quotas.take(key, route.sport, now)
            self.counted[route.sport] += 1
        headers = {**self._headers(route), **self.quotas.headers(key, route.sport, route.mode, now)}
        wire = dumps_wire(body)
        if kind == "malformed":
            wire = wire.replace(",", ",,", 1) if "," in wire else wire + "}"
        elif kind == "truncated":
            wire = wire[: len(wire) // 2]
        return web.Response(status=status, body=wire.encode(),
                            headers={"Content-Type": "application/json", **headers})

    async def _fault(self, fault: Fault, route: Route, key: str,
                     params: Mapping[str, str]) -> web.Response | None:
        """The answer a fault puts in place of the real one; None to go on with the real one."""
        kind = fault.kind
        headers = self._headers(route)
        if kind == "slow":
            await self._sleep(fault.delay)
            return None
        if kind in ("malformed", "truncated", "stale"):
            return None
        if kind == "timeout":
            await self._sleep(fault.delay)
            return _json(504, {"message": MSG_TIMEOUT}, headers)
        if kind == "error500":
            return _json(500, {"message": "Internal Server Error"}, headers)
        if kind == "error502":
            return _json(502, {"message": "Bad Gateway"}, headers)
        if kind == "error503":
            return _json(503, {"message": "Service Unavailable"}, headers)
        if kind == "html":
            return web.Response(status=502, body=HTML_502.encode(),
                                headers={**headers, "Content-Type": "text/html"})
        if kind == "empty204":
            return web.Response(status=204, headers=headers)
        now = self.world.now()
        which = "day" if kind == "quota_day" else "minute"
        return self._quota_refusal(route, key, params, which, now)

    # -- control API ----------------------------------------------------------------------

    async def faults_get(self, request: web.Request) -> web.Response:
        return _json(200, {"faults": self.faults.listing()})

    async def faults_post(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _json(400, {"error": "the body must be a JSON object"})
        if not isinstance(spec, dict):
            return _json(400, {"error": "the body must be a JSON object"})
        try:
            fault = self.faults.add(spec)
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        return _json(201, {"fault": fault.as_json(), "faults": self.faults.listing()})

    async def faults_delete(self, request: web.Request) -> web.Response:
        return _json(200, {"cleared": self.faults.clear()})

    async def state(self, request: web.Request) -> web.Response:
        clock = self.world.clock
        now = self.world.now()
        return _json(200, {
            "now": now, "speed": clock.speed, "start": clock.start, "plan": self.plan,
            "requests": dict(self.counted), "received": dict(self.received),
            "quota_errors": dict(self.quota_errors), "faults": self.faults.listing(),
            "summary": self.world.summary(now),
        })

    async def clock(self, request: web.Request) -> web.Response:
        clock = self.world.clock
        if not isinstance(clock, ManualClock):
            return _json(400, {"error": "the clock runs by itself: only a manual clock moves"})
        try:
            spec = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            spec = None
        if not isinstance(spec, dict) or not ({"advance", "set"} & set(spec)):
            return _json(400, {"error": 'expected {"advance": seconds} or {"set": epoch}'})
        try:
            for field in ("advance", "set"):
                if field in spec:
                    value = spec[field]
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise ValueError(f"{field} must be a number")
                    (clock.advance if field == "advance" else clock.set)(float(value))
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, {"now": clock.now()})

    async def on_shutdown(self, app: web.Application) -> None:
        self.closing.set()


WORLD = web.AppKey("world", World)
SIM = web.AppKey("simulator", Simulator)


def make_app(world: World, *, plan: str = "pro", keys: set[str] | None = None,
             rapidapi_minute: bool = True) -> web.Application:
    """The simulator's application for ``world``.

    ``keys``: the accepted keys (None: any non-empty key). ``rapidapi_minute``: apply
    RapidAPI's own per-minute limit in RapidAPI mode (30 on the free plan); when False,
    both modes get the direct API's.
    """
    sim = Simulator(world, plan, keys, rapidapi_minute)
    app = web.Application()
    app[WORLD] = world
    app[SIM] = sim
    app.router.add_get("/_sim/faults", sim.faults_get, allow_head=False)
    app.router.add_post("/_sim/faults", sim.faults_post)
    app.router.add_delete("/_sim/faults", sim.faults_delete)
    app.router.add_get("/_sim/state", sim.state, allow_head=False)
    app.router.add_post("/_sim/clock", sim.clock)
    app.router.add_route("*", "/{tail:.*}", sim.handle)
    app.on_shutdown.append(sim.on_shutdown)
    return app


@contextlib.asynccontextmanager
async def serve(world: World, host: str = "127.0.0.1", port: int = 0,
                **make_app_kwargs: Any) -> AsyncIterator[str]:
    """Serve ``world`` in this event loop; yields the base URL (``http://host:port``)."""
    app = make_app(world, **make_app_kwargs)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


def run(host: str, port: int, *, seed: int = 7, speed: float = 1.0, plan: str = "pro",
        start: float | None = None, sizes: dict[str, int] | None = None) -> None:
    """Serve a world built from ``seed`` until SIGINT or SIGTERM (``bts-guru simulate``)."""
    if plan not in PLANS:
        raise ValueError(f"unknown plan {plan!r}; one of {', '.join(PLANS)}")
    world = World(seed, SimClock(speed, start), sizes)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with serve(world, host, port, plan=plan) as url:
            log.info("simulator listening on %s", url)
            await stop.wait()
        log.info("simulator stopped")

    asyncio.run(main())
