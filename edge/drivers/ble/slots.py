"""Connection slots of one adapter, handed out first come, first served.

A BlueZ adapter holds a handful of connections (often 5 to 10). When more bands need
one, a band that has held its slot for the rotation period gives it up to the band
that has waited longest and queues again behind the others, so every band is heard
in turn rather than the first K forever.
"""

import asyncio
from collections import deque


class Slots:
    """At most ``size`` holders; waiters are served in the order they came."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.rotations = 0
        """Slots given up for a waiting band (``rotation_s`` elapsed)."""

    @property
    def contended(self) -> bool:
        """Whether a band is waiting for a slot."""
        return any(not waiter.done() for waiter in self._waiters)

    async def acquire(self) -> None:
        if self.held < self.size and not self.contended:
            self.held += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted, then cancelled before it could be used
            raise

    def release(self) -> None:
        self.held -= 1
        self._hand_on()

    def _hand_on(self) -> None:
        """Give a free slot to the longest waiter, if any."""
        while self._waiters and self.held < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.held += 1
                waiter.set_result(None)
