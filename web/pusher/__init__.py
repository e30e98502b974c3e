"""The Pusher Channels protocol (v7) on the edge, for pusher-js and Laravel Echo.

- :mod:`~web.pusher.protocol` frames, error codes, signatures
- :mod:`~web.pusher.apps` configured apps (id, key, secret, origins)
- :mod:`~web.pusher.presence` what the edges share in Redis: presence, occupancy, the bus
- :mod:`~web.pusher.server` the per-edge service: connections, fan-out of bus events, drain
- :mod:`~web.pusher.socket` the ``/app/{key}`` WebSocket
- :mod:`~web.pusher.http_api` the signed HTTP API and the channel auth endpoints
"""

from web.pusher.apps import App, AppConfigError, Apps
from web.pusher.server import PusherServer

__all__ = ["App", "AppConfigError", "Apps", "PusherServer"]
