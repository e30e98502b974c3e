"""Clocks: the providers' time, real or scaled (the simulator runs faster than real time).

The poller plans in provider time: intervals, the quota day and the dates it asks
for. With ``speed`` 1 and no start this is the wall clock.
"""

from __future__ import annotations

import time


class ScaledClock:
    """``start + (wall time since creation) * speed``."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        self.speed = speed
        self._wall0 = time.time()
        self._start = self._wall0 if not start else start

    def now(self) -> float:
        return self._start + (time.time() - self._wall0) * self.speed

    def real_seconds(self, provider_seconds: float) -> float:
        """How long ``provider_seconds`` of provider time last on the wall clock."""
        return provider_seconds / self.speed
