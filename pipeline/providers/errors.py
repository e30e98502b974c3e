"""The typed errors of the provider clients.

Every kind of trouble an upstream call can meet is mapped, in one place
(:func:`pipeline.providers.client.classify` and the transport wrapper around it),
to one of these classes; callers never see an aiohttp exception::

    ProviderError                  provider, status, message, retryable, retry_after
    ├── AuthError                  bad or missing key: RapidAPI 401/403 "Invalid API key",
    │                              envelope ``errors.token``                  (not retryable)
    ├── NotSubscribed              RapidAPI 403 "You are not subscribed"     (not retryable)
    ├── QuotaExceeded              daily quota spent: envelope ``errors.requests``, RapidAPI
    │                              429 "DAILY quota"; retry_after = seconds to the reset
    │                              (``x-ratelimit-requests-reset``, else 00:00 UTC)
    │                                                               (not retryable before it)
    ├── RateLimited                per-minute limit: envelope ``errors.rateLimit``, RapidAPI
    │                              429 "rate limit per minute"; retry_after = seconds to the
    │                              next minute       (retryable, but paced by the budget, not
    │                                                 retried inside the client)
    ├── BadRequest                 any other non-empty ``errors`` (``required``, a parameter
    │                              conflict), other 4xx                       (not retryable)
    ├── UpstreamError              5xx, 499, an HTML page                         (retryable)
    ├── MalformedResponse          empty, non-JSON or truncated body, JSON without the
    │                              envelope                                       (retryable)
    ├── Timeout                    no complete answer within the timeout          (retryable)
    ├── ConnectionFailed           DNS, refused or reset connection               (retryable)
    └── CircuitOpen                the provider's circuit is open: no call was made;
                                   retry_after = seconds until it half-opens (not retryable)

``status`` is the HTTP status of the answer, 0 when there was none. ``record`` is
the :class:`~tables.records.RawFetch` of the attempt that failed, set by the
client, so a caller that catches the error can still publish what came back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from tables.records import RawFetch

__all__ = [
    "AuthError",
    "BadRequest",
    "CircuitOpen",
    "ConnectionFailed",
    "MalformedResponse",
    "NotSubscribed",
    "ProviderError",
    "QuotaExceeded",
    "RateLimited",
    "Timeout",
    "UpstreamError",
]


class ProviderError(Exception):
    """Base class of every provider failure."""

    #: Whether the same call may succeed if made again soon.
    default_retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str = "", status: int = 0,
                 retry_after: float | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.retryable = self.default_retryable if retryable is None else retryable
        self.record: RawFetch | None = None

    def __str__(self) -> str:
        where = f"{self.provider} " if self.provider else ""
        status = f"HTTP {self.status}: " if self.status else ""
        return f"{where}{status}{self.message}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.message!r}, provider={self.provider!r}, "
                f"status={self.status}, retry_after={self.retry_after!r})")


class AuthError(ProviderError):
    """The key is missing, unknown or refused."""


class NotSubscribed(ProviderError):
    """The RapidAPI key is valid but not subscribed to this API."""


class QuotaExceeded(ProviderError):
    """The daily quota is spent; ``retry_after`` is the time to the daily reset."""


class RateLimited(ProviderError):
    """The per-minute limit is reached; ``retry_after`` is the time to the next minute."""

    default_retryable = True


class BadRequest(ProviderError):
    """The provider refused the request itself (missing or conflicting parameters)."""


class UpstreamError(ProviderError):
    """The provider or its gateway failed (5xx, 499, an HTML error page)."""

    default_retryable = True


class MalformedResponse(ProviderError):
    """The answer is not a complete API envelope (empty, not JSON, truncated)."""

    default_retryable = True


class Timeout(ProviderError):
    """No complete answer arrived within the client's timeout."""

    default_retryable = True


class ConnectionFailed(ProviderError):
    """The provider could not be reached (DNS, refused or reset connection)."""

    default_retryable = True


class CircuitOpen(ProviderError):
    """The provider's circuit is open, so no call was made."""
