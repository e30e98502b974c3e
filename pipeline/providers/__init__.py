"""Provider clients: API-Football v3, API-Basketball v1 and API-Hockey v1.

``build_client(sport, key, ...)`` gives the :class:`ProviderClient` of a sport's
provider; its calls come back as :class:`~tables.records.RawFetch` records or as
the typed errors of :mod:`pipeline.providers.errors`.
"""

from pipeline.providers.client import (
    APIS,
    CircuitBreaker,
    ProviderClient,
    Quota,
    build_client,
    classify,
)
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

__all__ = [
    "APIS",
    "AuthError",
    "BadRequest",
    "CircuitBreaker",
    "CircuitOpen",
    "ConnectionFailed",
    "MalformedResponse",
    "NotSubscribed",
    "ProviderClient",
    "ProviderError",
    "Quota",
    "QuotaExceeded",
    "RateLimited",
    "Timeout",
    "UpstreamError",
    "build_client",
    "classify",
]
