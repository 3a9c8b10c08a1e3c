"""When a failed delivery is tried again: the schedule, its jitter and ``Retry-After``.

Pure functions of the attempt count, the settings and the receiver's answer; the
delivery worker stores the result as the row's ``next_attempt_at``, so the schedule
lives in the database and survives any restart.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from cloud.settings import WebhookSettings


def retry_delay(
    settings: WebhookSettings,
    *,
    attempts: int,
    retry_after_s: float | None = None,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float | None:
    """Seconds until the next attempt after ``attempts`` failed ones, or None: dead letter.

    The delay is the schedule's entry for this attempt stretched by a random fraction
    up to ``settings.jitter``; a ``Retry-After`` the receiver sent wins when it is
    longer, up to ``settings.max_retry_after_s``. A shorter ``Retry-After`` does not
    speed the schedule up: the schedule is the least a failing endpoint is left alone.
    """
    if attempts < 1:
        raise ValueError(f"a retry follows at least one attempt, not {attempts}")
    if attempts >= settings.max_attempts:
        return None
    delay = settings.retry_schedule_s[attempts - 1] * (1 + uniform(0, settings.jitter))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, settings.max_retry_after_s))
    return delay


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delta-seconds or an HTTP date.

    None when the header is absent or malformed; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())
