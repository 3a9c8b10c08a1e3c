"""Waiting in tests for something that happens elsewhere (a driver, a simulator, the
cloud), on a deadline rather than a sleep, so a loaded machine is slower, not red."""

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.02


async def until(what: str, timeout_s: float, check: Callable[[], T | Awaitable[T]]) -> T:
    """Call ``check`` (plain or async) until it returns something truthy, and return
    that; fail saying ``what`` did not happen within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found  # type: ignore[return-value]
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        await asyncio.sleep(POLL_S)
