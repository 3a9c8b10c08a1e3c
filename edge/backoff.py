"""Exponential backoff with full jitter and a cap, for every retry loop of the agent,
and the wait between two tries that a stop request cuts short."""

import asyncio
import contextlib
import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of ``initial * 2**n`` seconds up to ``cap``, each drawn uniformly below that.

    Full jitter keeps a hundred gateways that lost the same broker from reconnecting in
    step when it returns.
    """

    initial_s: float = 0.5
    cap_s: float = 30.0
    _attempt: int = 0
    _random: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.initial_s * 2**self._attempt)
        self._attempt += 1
        return self._random.uniform(self.initial_s / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile: a retry loop that is asked
    to stop does not sit out its backoff first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
