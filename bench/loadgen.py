"""HTTP load generator: fixed concurrency for a fixed duration, aiohttp, one process.

``python -m bench.loadgen URL [--key K] [--concurrency C] [--duration S] [--warmup S]``
prints one JSON line: requests, ok (2xx), other statuses, requests/s, p50 and p99 (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def main(args: argparse.Namespace) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    lat: list[float] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        start = time.perf_counter()
        measure_from = start + args.warmup
        stop = measure_from + args.duration

        async def worker() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop:
                    return
                async with session.get(args.url) as r:
                    await r.read()
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    lat.append(t1 - t0)
                    statuses[r.status] = statuses.get(r.status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    lat.sort()
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {
        "requests": len(lat), "ok": ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "rps": ok / args.duration,
        "p50_ms": lat[len(lat) // 2] * 1000 if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000 if lat else None,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--key", default="")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    a = p.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main(a))
    else:
        result = uvloop.run(main(a))
    print(json.dumps(result), flush=True)
