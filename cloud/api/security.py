"""Authentication and authorisation of every request, in one place.

A route states the one permission it needs by taking ``allowed(Permission.X)``; that
dependency checks the key (401), the address's recent failures (429) and the role
(403), and hands the route a ``Principal`` whose ``scope`` every query of the route
filters by. An object outside the scope is answered 404 by the route's query finding
nothing, so another community's ids cannot even be probed.

Keys travel as ``Authorization: Bearer anju_…``. Failed authentications are counted
per client address; past ``ANJU_API_AUTH_FAILURE_LIMIT`` within
``ANJU_API_AUTH_FAILURE_WINDOW_S`` the address gets 429 with ``Retry-After`` until the
window ends, valid key or not, so keys cannot be guessed at speed. The counts live in
the API process (several API processes each count their own).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud.api.deps import ConnectionDep
from cloud.auth.errors import KeyRefused
from cloud.auth.keys import authenticate
from cloud.auth.principal import Principal
from cloud.auth.roles import GRANTS, Permission

_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="anju"'}
_MAX_TRACKED: Final = 10_000

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An Anju API key (`anju cloud key create`), as `Authorization: Bearer anju_…`",
)


@dataclass(slots=True)
class FailureLimiter:
    """Failed authentications per client address in fixed windows."""

    limit: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        now = self.clock()
        started, failures = self._windows.get(address, (now, 0))
        if now - started >= self.window_s:
            self._windows.pop(address, None)
            return None
        if failures < self.limit:
            return None
        return max(1, math.ceil(started + self.window_s - now))

    def failed(self, address: str) -> None:
        now = self.clock()
        if len(self._windows) >= _MAX_TRACKED:
            self._forget_before(now - self.window_s)
        started, failures = self._windows.get(address, (now, 0))
        if now - started >= self.window_s:
            started, failures = now, 0
        self._windows[address] = (started, failures + 1)

    def _forget_before(self, instant: float) -> None:
        for address in [a for a, (started, _) in self._windows.items() if started < instant]:
            del self._windows[address]


async def get_limiter(request: Request) -> FailureLimiter:
    limiter = request.app.state.auth_failures
    assert isinstance(limiter, FailureLimiter)
    return limiter


async def get_principal(
    request: Request,
    conn: ConnectionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    limiter: Annotated[FailureLimiter, Depends(get_limiter)],
) -> Principal:
    """The principal of the request's key; 429 while its address is locked out, 401
    (with the reason) when the key is missing or does not authenticate."""
    address = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(address)
    if wait is not None:
        raise HTTPException(
            HTTPStatus.TOO_MANY_REQUESTS,
            f"too many failed authentications from {address}; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    if credentials is None:
        limiter.failed(address)
        raise HTTPException(
            HTTPStatus.UNAUTHORIZED,
            "an API key is required: send 'Authorization: Bearer anju_…'",
            headers=_CHALLENGE,
        )
    try:
        return await authenticate(conn, credentials.credentials)
    except KeyRefused as exc:
        limiter.failed(address)
        raise HTTPException(HTTPStatus.UNAUTHORIZED, exc.reason, headers=_CHALLENGE) from None


class Requirement:
    """The dependency of a route needing ``permission``; ``permission`` stays readable
    on the route (the tenancy tests list every route's requirement)."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.can(self.permission):
            roles = ", ".join(sorted(GRANTS[self.permission]))
            raise HTTPException(
                HTTPStatus.FORBIDDEN,
                f"a {principal.role} key may not do this ({self.permission}: {roles})",
            )
        return principal


def allowed(permission: Permission) -> Any:
    """``principal: Annotated[Principal, allowed(Permission.X)]`` in a route."""
    return Depends(Requirement(permission))
