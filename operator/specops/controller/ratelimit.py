"""A token bucket: the operator's budget of status writes that carry only fresh figures.

Such writes (status.observed refreshed while the policy's state is unchanged) are wanted by every
resource at every evaluation; one bucket shared by all resources keeps their rate at ``rate`` per
second however many resources there are.  Writes that change the policy's state never ask it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from specops.controller import metrics


class TokenBucket:
    """``rate`` tokens a second, up to ``burst`` saved; ``take`` is thread-safe."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """One token if there is one (True), else False: the caller does without, now."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


def figure_write_budget(rate: float, burst: float | None = None) -> Callable[[], bool]:
    """The operator's figure-only status writes: ``rate`` a second (burst: 10 s worth, at least 1);
    each one refused is counted in ``specops_status_figure_writes_deferred_total``."""
    bucket = TokenBucket(rate, burst if burst is not None else max(1.0, 10 * rate))

    def may_write() -> bool:
        if bucket.take():
            return True
        metrics.FIGURE_WRITES_DEFERRED.inc()
        return False

    return may_write
