"""One attempt at one delivery: check the URL, sign, POST with httpx, classify the answer.

The sender knows nothing of the database; ``cloud.webhooks.delivery`` decides what
an ``Attempt`` means for the row. Every failure is an outcome, never an exception:
a refused URL, a DNS failure, a refused connection, a timeout and a 500 all come
back as an ``Attempt`` with the reason in ``error``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import httpx

from cloud.settings import WebhookSettings
from cloud.webhooks.errors import UnsafeUrl
from cloud.webhooks.retry import parse_retry_after
from cloud.webhooks.signing import signed_headers
from cloud.webhooks.ssrf import AddressPolicy, resolve

USER_AGENT: Final = "anju-webhooks/0.1"
_ERROR_BODY_BYTES: Final = 200
"""How much of a failed response's body is kept in ``last_error``, for the operator."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to: ``status_code`` None when no response arrived."""

    status_code: int | None
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        """Whether the receiver took it (any 2xx): the only success."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """Whether the receiver answered 410 Gone: it wants no more webhooks."""
        return self.status_code == 410


class Sender:
    """Sends signed webhooks; an async context manager owning one httpx client.

    The client never follows redirects (a 3xx is a failure, and a redirect must not
    lead a delivery past the SSRF check), ignores proxy variables of the environment,
    and keeps no connections alive, so every attempt connects to the address checked
    for it.
    """

    def __init__(
        self, settings: WebhookSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._policy = AddressPolicy.from_settings(settings)
        self._clock = clock
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._settings.timeout_s),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"user-agent": USER_AGENT},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(
        self, *, url: str, secrets: Sequence[str], message_id: str, body: bytes
    ) -> Attempt:
        """POST ``body`` to ``url`` signed with every secret; never raises for a failure.

        The whole attempt (DNS, connecting, sending, the response's status line and
        headers) is bounded by ``timeout_s``; the response body is not awaited beyond
        a short excerpt of a failure's. Raises RuntimeError outside ``async with``.
        """
        if self._client is None:
            raise RuntimeError("Sender.send outside 'async with Sender(...)'")
        timeout_s = self._settings.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                target = await resolve(url, self._policy, timeout_s=timeout_s)
                request_url, extra_headers, extensions = target.pinned()
                headers = {
                    "content-type": "application/json",
                    **extra_headers,
                    **signed_headers(
                        secrets, message_id=message_id, timestamp=int(self._clock()), body=body
                    ),
                }
                request = self._client.build_request(
                    "POST", request_url, content=body, headers=headers, extensions=extensions
                )
                response = await self._client.send(request, stream=True)
                try:
                    return await _attempt(response)
                finally:
                    await response.aclose()
        except UnsafeUrl as exc:
            return Attempt(None, exc.reason)
        except (TimeoutError, httpx.TimeoutException):
            return Attempt(None, f"no answer within {timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


async def _attempt(response: httpx.Response) -> Attempt:
    code = response.status_code
    if 200 <= code < 300:
        return Attempt(code)
    excerpt = b""
    async for chunk in response.aiter_bytes():
        excerpt += chunk
        if len(excerpt) >= _ERROR_BODY_BYTES:
            break
    text = excerpt[:_ERROR_BODY_BYTES].decode("utf-8", "replace").strip()
    reason = response.reason_phrase or "error"
    return Attempt(
        code,
        f"HTTP {code} {reason}" + (f": {text}" if text else ""),
        parse_retry_after(response.headers.get("retry-after")),
    )
