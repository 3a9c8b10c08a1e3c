"""The cloud's HTTP API as the installer's commands use it (``anju provision``, ``anju device
add|list|remove|move|import``).

Where the cloud is comes from ``--cloud``, else ``$ANJU_CLOUD_URL``, else the gateway
config's ``cloud:`` key (written by ``anju provision gateway``); the key from
``$ANJU_API_KEY``, else a prompt that does not echo when a person is at the terminal.
A key on the command line would stay in the shell's history, so there is no option
for it.

Every failure is one of these, each saying what to do about it::

    ApiError               anything that kept a request from its answer
    ├── ApiSetupError      no cloud URL or no key, or a malformed URL (a usage error)
    ├── ApiUnreachable     no answer: refused, unresolvable, TLS failure, timed out
    └── ApiProblem         the API answered with an error (RFC 9457 problem details):
                           its status, its detail and each refused field
"""

import getpass
import ipaddress
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NoReturn, Self
from urllib.parse import quote, urlsplit

import httpx
import typer
import yaml

from anju.commands.common import CLOUD_URL_VAR, fail

API_KEY_VAR: Final = "ANJU_API_KEY"
TIMEOUT_S: Final = 15.0
_PAGE: Final = 500


class ApiError(Exception):
    """A request to the cloud's API that did not get the answer it asked for."""


class ApiSetupError(ApiError):
    """The command cannot reach the API as set up: no URL, a malformed one, or no key."""


class ApiUnreachable(ApiError):
    """No HTTP answer from ``url``: the reason is the transport's."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the cloud at {url}: {reason}")


@dataclass(frozen=True)
class FieldProblem:
    """One refused field of a request: where (``body.devices.3.address``) and why."""

    loc: tuple[str | int, ...]
    msg: str

    @property
    def where(self) -> str:
        return ".".join(str(part) for part in self.loc)


class ApiProblem(ApiError):
    """The API refused ``method path`` with ``status``; ``detail`` says why, ``errors``
    which fields (422)."""

    def __init__(
        self,
        method: str,
        path: str,
        status: int,
        detail: str,
        errors: tuple[FieldProblem, ...] = (),
        body: dict[str, Any] | None = None,
    ) -> None:
        self.body = body
        """The answer's JSON object, when it was one."""
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        self.errors = errors
        lines = [f"{detail} ({method} {path}: {status})"]
        lines += [f"  {error.where}: {error.msg}" for error in errors]
        super().__init__("\n".join(lines))


def cloud_url(option: str | None, config_cloud: str | None = None) -> str:
    """The API's base URL: ``option``, else ``$ANJU_CLOUD_URL``, else ``config_cloud``.

    Raises ApiSetupError when none is given, or the URL is not https://HOST[:PORT][/PATH]
    (http:// only to this machine).
    """
    url = option or os.environ.get(CLOUD_URL_VAR) or config_cloud
    if not url:
        raise ApiSetupError(
            f"no cloud URL: pass --cloud https://api.example.cn, or set {CLOUD_URL_VAR}"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiSetupError(f"cloud URL {url!r}: expected https://HOST[:PORT][/PATH]")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ApiSetupError(
            f"cloud URL {url!r}: use https://; over plain http the API key, and the broker "
            "password the cloud hands back, would cross the network in clear (http:// is "
            "taken only for this machine: localhost, 127.0.0.1, ::1)"
        )
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key(environ: Mapping[str, str] | None = None) -> str:
    """The API key: ``$ANJU_API_KEY``, else asked for without echo at a terminal.

    Raises ApiSetupError when there is neither (a script, a pipe).
    """
    found = (os.environ if environ is None else environ).get(API_KEY_VAR, "").strip()
    if found:
        return found
    if sys.stdin.isatty():
        typed = getpass.getpass("API key (anju_...; input hidden): ").strip()
        if typed:
            return typed
    raise ApiSetupError(
        f"no API key: set {API_KEY_VAR} to an installer key for this community "
        "(an admin makes one: anju cloud key create --role installer --scope STREET/COMMUNITY)"
    )


class CloudApi:
    """One connection to the API holding one key; a context manager that closes it.

    Each method returns the JSON body of the answer and raises ApiUnreachable or
    ApiProblem. ``transport`` is for tests that serve the app in-process.
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
            follow_redirects=False,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int | bool | float] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """The decoded JSON answer of ``method path``; an error status raises ApiProblem.

        ``timeout_s`` replaces the client's timeout for a request the API itself holds
        open for a while (a device test)."""
        response = self._send(method, path, body=body, params=params, timeout_s=timeout_s)
        return self._json(method, path, response)

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int | bool | float] | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        timeout = self._http.timeout if timeout_s is None else httpx.Timeout(timeout_s)
        try:
            response = self._http.request(method, path, json=body, params=params, timeout=timeout)
        except httpx.TimeoutException:
            raise ApiUnreachable(self.base_url, "no answer in time") from None
        except httpx.HTTPError as exc:
            raise ApiUnreachable(self.base_url, str(exc) or type(exc).__name__) from None
        if response.is_error:
            raise _problem(method, path, response)
        return response

    @staticmethod
    def _json(method: str, path: str, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ApiProblem(
                method, path, response.status_code, "the answer is not JSON: is this the Anju API?"
            ) from None

    # Gateways

    def register_gateway(
        self, gateway: str, community: str, *, auth: str, csr: str | None
    ) -> tuple[dict[str, Any], bool]:
        """``POST /gateways``: the gateway, its fresh credentials and config version, and
        whether it is new (False: it was registered there already; its old credentials
        no longer work)."""
        body = {"id": gateway, "community": community, "auth": auth, "csr": csr}
        response = self._send("POST", "/gateways", body=body)
        found: dict[str, Any] = self._json("POST", "/gateways", response)
        return found, response.status_code == 201

    def issue_credentials(self, gateway: str, *, auth: str, csr: str | None) -> dict[str, Any]:
        """``POST /gateways/{id}/credentials``: new credentials; the old ones stop at once."""
        body = {"auth": auth, "csr": csr}
        found: dict[str, Any] = self.request(
            "POST", f"/gateways/{_seg(gateway)}/credentials", body=body
        )
        return found

    def revoke_gateway(self, gateway: str) -> dict[str, Any]:
        """``POST /gateways/{id}/revoke``: the gateway, now revoked."""
        found: dict[str, Any] = self.request("POST", f"/gateways/{_seg(gateway)}/revoke")
        return found

    def gateway_config(self, gateway: str) -> dict[str, Any]:
        """``GET /gateways/{id}/config``: the device config the cloud keeps for it."""
        found: dict[str, Any] = self.request("GET", f"/gateways/{_seg(gateway)}/config")
        return found

    # Devices

    def add_device(self, device: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /devices``: the device registered behind its gateway."""
        found: dict[str, Any] = self.request("POST", "/devices", body=device)
        return found

    def get_device(self, device: str) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", f"/devices/{_seg(device)}")
        return found

    def change_device(self, device: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /devices/{id}``: the device moved, re-placed or re-addressed."""
        found: dict[str, Any] = self.request("PATCH", f"/devices/{_seg(device)}", body=changes)
        return found

    def remove_device(self, device: str) -> dict[str, Any]:
        """``DELETE /devices/{id}``: the device, now disabled and out of its gateway's config."""
        found: dict[str, Any] = self.request("DELETE", f"/devices/{_seg(device)}")
        return found

    def test_device(
        self, device: str, *, timeout_s: float, gateway: str | None = None
    ) -> dict[str, Any]:
        """``POST /devices/{id}/test``: the device read once through its gateway, which
        the API waits up to ``timeout_s`` for (504 when it does not answer in time)."""
        params: dict[str, str | int | bool | float] = {"timeout_s": timeout_s}
        if gateway is not None:
            params["gateway"] = gateway
        found: dict[str, Any] = self.request(
            "POST",
            f"/devices/{_seg(device)}/test",
            params=params,
            timeout_s=timeout_s + TIMEOUT_S,
        )
        return found

    def devices(self, *, gateway: str | None = None) -> Iterator[dict[str, Any]]:
        """``GET /devices``, every page, by id."""
        params: dict[str, str | int | bool] = {"limit": _PAGE}
        if gateway is not None:
            params["gateway_id"] = gateway
        while True:
            page = self.request("GET", "/devices", params=params)
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def import_devices(
        self,
        gateway: str,
        devices: list[dict[str, Any]],
        *,
        dry_run: bool,
        skip_bad: bool,
    ) -> dict[str, Any]:
        """``POST /gateways/{id}/devices/import``: what was imported and every bad row."""
        body = {"devices": devices, "dry_run": dry_run, "skip_bad": skip_bad}
        found: dict[str, Any] = self.request(
            "POST", f"/gateways/{_seg(gateway)}/devices/import", body=body
        )
        return found

    # Health

    def health(self) -> dict[str, Any]:
        """``GET /health``: whether the API reaches its database, and its clock (``time``).

        A 503 still carries the body (the database is down, the clock is not), so it is
        returned rather than raised.
        """
        try:
            response = self._send("GET", "/health")
        except ApiProblem as exc:
            if exc.status != 503 or exc.body is None:
                raise
            return exc.body
        found: dict[str, Any] = self._json("GET", "/health", response)
        return found


def _seg(value: str) -> str:
    """``value`` as one path segment, whatever it holds."""
    return quote(value, safe="")


def _problem(method: str, path: str, response: httpx.Response) -> ApiProblem:
    """The problem document of an error answer, or what can be said without one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ApiProblem(method, path, response.status_code, response.reason_phrase or "error")
    detail = body.get("detail") or body.get("title") or response.reason_phrase
    errors = tuple(
        FieldProblem(tuple(error.get("loc", ())), str(error.get("msg", "invalid")))
        for error in body.get("errors") or ()
        if isinstance(error, dict)
    )
    return ApiProblem(method, path, response.status_code, str(detail), errors, body)


_HINTS: Final = {
    401: f"the API refused the key: check {API_KEY_VAR} (an expired or revoked key is refused)",
    403: "this key's role may not do this: gateways and devices need an installer, street "
    "or admin key",
    404: "it is not registered, or it is outside the communities this key reaches",
    504: "the gateway did not answer: is it online (anju provision check on the box), and "
    "does the cloud run its config pusher (anju cloud run, or anju cloud configs)?",
}


def explain(exc: ApiError) -> str:
    """The error as an installer reads it, with what to check next for a refused key."""
    hint = _HINTS.get(exc.status) if isinstance(exc, ApiProblem) else None
    return f"{exc}\n  hint: {hint}" if hint else str(exc)


@contextmanager
def cloud_session(
    option: str | None, config_cloud: str | None = None, *, as_json: bool = False
) -> Iterator[CloudApi]:
    """A ``CloudApi`` for a command: URL and key found as the module says; any ApiError
    inside ends the command with ``error: ...`` (``{"ok": false, "error": ...}`` with
    ``as_json``), exit 2 for a setup fault, 1 for the rest."""
    try:
        with CloudApi(cloud_url(option, config_cloud), api_key()) as api:
            yield api
    except ApiError as exc:
        fail_command(as_json, str(exc) if as_json else explain(exc), code=_exit_code(exc))


def _exit_code(exc: ApiError) -> int:
    return 2 if isinstance(exc, ApiSetupError) else 1


def fail_command(as_json: bool, message: str, code: int = 1) -> NoReturn:
    """End the command with ``message``: ``error: ...`` on stderr, or with ``as_json`` the
    one JSON object ``{"ok": false, "error": ...}`` on stdout; exit ``code`` (2: usage)."""
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": message}))
        raise typer.Exit(code)
    fail(message, code)


def config_defaults(config: Path) -> tuple[str | None, str | None]:
    """The gateway id and cloud URL that the gateway config at ``config`` names, if it
    exists and names them; commands run on the box default to them."""
    try:
        document = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    gateway, cloud = document.get("gateway"), document.get("cloud")
    return (
        gateway if isinstance(gateway, str) else None,
        cloud if isinstance(cloud, str) else None,
    )
