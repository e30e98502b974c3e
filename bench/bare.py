"""The REST reference: a bare Starlette route returning the same JSON as ``/v1/matches/{id}``.

``python -m bench.bare PORT FILE`` serves the bytes of FILE (a stored snapshot) on
uvicorn with the edge's server settings, with no middleware, auth, limits or store.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def make_app(data: bytes) -> Starlette:
    body = b'{"data":' + data + b"}"

    async def match(request: Request) -> Response:
        return Response(body, media_type="application/json",
                        headers={"X-Cache": "hit", "Cache-Control": "no-cache"})

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[Route("/v1/matches/{match_id}", match), Route("/healthz", healthz)])


if __name__ == "__main__":
    uvicorn.run(make_app(Path(sys.argv[2]).read_bytes()), host="127.0.0.1", port=int(sys.argv[1]),
                log_level="warning", lifespan="on")
