"""Capped exponential backoff with jitter, for every loop in the cloud tier that retries."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays that double from ``initial`` up to ``cap`` seconds, each jittered.

    "Equal jitter": a delay ``d`` becomes uniform in ``[d/2, d]``, so workers that failed
    together do not retry together, and no delay is ever near zero. ``reset()`` after a
    success starts again from ``initial``.
    """

    def __init__(
        self, *, initial: float, cap: float, uniform: Callable[[float, float], float] | None = None
    ) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial} and {cap}")
        self.initial = initial
        self.cap = cap
        self._uniform = uniform or random.uniform
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        """The next delay in seconds (at most ``cap``)."""
        ceiling = min(self.cap, self.initial * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return self._uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0
