"""``anju sim``: run a simulated field device that speaks the real protocol.

Installers use it to rehearse a site before the hardware arrives, developers to point
a gateway at something that behaves like the datasheet, the demo to fill a community.
The simulators themselves live in ``firmware_sim``; this module parses the command
line, serves one device and reports what happens to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import parse_qsl, urlsplit

import typer

from firmware_sim import SimServerError, UnknownModelError
from firmware_sim.modbus_server import ModbusRtuSimServer, ModbusSimServer
from firmware_sim.models import SIMULATED_MODELS, SimulatedModbusDevice, get_model

__all__ = ["ListenAddress", "app", "parse_listen_url"]

_TICK_S: Final = 1.0
_WATCH_S: Final = 0.1

app = typer.Typer(
    help="Simulated devices that speak the real protocol bytes.\n\n"
    "A simulated device is implemented from its datasheet, not from Anju's device "
    "profile, so polling it through a profile checks that profile. It serves until "
    "Ctrl-C (or --duration) and prints every change of what it reports, including "
    "changes made by a Modbus master (threshold written, alarm reset).",
    epilog="Examples:\n\n"
    "  anju sim list\n\n"
    "  anju sim device --profile anju-smoke-mb --listen 'modbus-tcp://127.0.0.1:5020?unit=1'\n\n"
    "  anju sim device --profile anju-smoke-mb --listen 'modbus-tcp://127.0.0.1:0' "
    "--alarm-after 10 --duration 60\n\n"
    "  anju sim device --profile anju-smoke-mb "
    "--listen 'modbus-rtu:///tmp/ttyA?baud=9600&parity=N&unit=3'\n\n"
    "Then poll it, for example: mbpoll -m tcp -p 5020 -a 1 -t 3 -r 1 -c 5 127.0.0.1",
    no_args_is_help=True,
)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where a simulated device serves, parsed from a device address URL.

    ``scheme`` is ``modbus-tcp`` (``host``, ``port``) or ``modbus-rtu`` (``path``,
    ``baud``, ``parity``); ``unit`` is the Modbus unit id the device answers.
    """

    scheme: str
    unit: int
    host: str = ""
    port: int = 0
    path: str = ""
    baud: int = 9600
    parity: str = "N"


_SCHEMES: Final = ("modbus-tcp", "modbus-rtu")
_QUERY_KEYS: Final = {"modbus-tcp": {"unit"}, "modbus-rtu": {"unit", "baud", "parity"}}


def _int_param(name: str, text: str, low: int, high: int, url: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} in {url!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={value} in {url!r} is outside {low}-{high}")
    return value


def parse_listen_url(url: str) -> ListenAddress:
    """Parse ``modbus-tcp://HOST:PORT?unit=N`` or ``modbus-rtu:///dev/X?baud=B&parity=P&unit=N``.

    ``unit`` defaults to 1, ``baud`` to 9600 and ``parity`` to N; port 0 asks for any
    free port. Raises ``ValueError`` with a message naming the URL and what to fix.
    """
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"{url!r}: scheme must be one of {', '.join(_SCHEMES)}, "
            "for example modbus-tcp://127.0.0.1:5020?unit=1"
        )
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _QUERY_KEYS[parts.scheme]:
            allowed = ", ".join(sorted(_QUERY_KEYS[parts.scheme]))
            raise ValueError(f"{url!r}: unknown parameter {key!r} (allowed: {allowed})")
        query[key] = value
    unit = _int_param("unit", query.get("unit", "1"), 1, 247, url)
    if parts.scheme == "modbus-tcp":
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number 0-65535") from None
        if not parts.hostname or port is None:
            raise ValueError(f"{url!r}: give host and port, as in modbus-tcp://127.0.0.1:5020")
        if parts.path not in ("", "/"):
            raise ValueError(f"{url!r}: a modbus-tcp address has no path")
        return ListenAddress(scheme=parts.scheme, unit=unit, host=parts.hostname, port=port)
    if parts.netloc or not parts.path:
        raise ValueError(
            f"{url!r}: give the serial device as an absolute path after three slashes, "
            "as in modbus-rtu:///dev/ttyUSB0?baud=9600"
        )
    parity = query.get("parity", "N").upper()
    if parity not in ("N", "E", "O"):
        raise ValueError(f"{url!r}: parity must be N, E or O")
    baud = _int_param("baud", query.get("baud", "9600"), 300, 4_000_000, url)
    return ListenAddress(scheme=parts.scheme, unit=unit, path=parts.path, baud=baud, parity=parity)


def _echo_changes(before: dict[str, str], after: dict[str, str]) -> None:
    stamp = time.strftime("%H:%M:%S")
    for name, value in after.items():
        if before.get(name) != value:
            typer.echo(f"{stamp}  {name}: {before.get(name, '-')} -> {value}")


async def _serve(
    device: SimulatedModbusDevice,
    server: ModbusSimServer | ModbusRtuSimServer,
    *,
    unit: int,
    model: str,
    profile_id: str,
    alarm_after_s: float | None,
    duration_s: float | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # A supervisor (the demo, a test harness) stops us with SIGTERM: close the server
    # cleanly as for Ctrl-C instead of dying with the socket open.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with server:
            typer.echo(
                f"serving {model} (profile {profile_id}) as unit {unit} at {server.url_for(unit)}"
            )
            shown = device.describe()
            typer.echo("  " + ", ".join(f"{name} {value}" for name, value in shown.items()))
            started = next_tick = loop.time()
            alarm_at = None if alarm_after_s is None else started + alarm_after_s
            stop_at = None if duration_s is None else started + duration_s
            while not stop.is_set() and (stop_at is None or loop.time() < stop_at):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _WATCH_S)
                now = loop.time()
                if now >= next_tick:
                    device.tick()
                    next_tick += _TICK_S
                if alarm_at is not None and now >= alarm_at:
                    typer.echo(f"{time.strftime('%H:%M:%S')}  smoke in the chamber (--alarm-after)")
                    device.trigger_alarm()
                    alarm_at = None
                current = device.describe()
                _echo_changes(shown, current)
                shown = current
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
    typer.echo("stopped")


@app.command("list")
def list_models() -> None:
    """List the profile ids that have a simulated device."""
    for profile_id, entry in sorted(SIMULATED_MODELS.items()):
        typer.echo(f"{profile_id}  {entry.model}  {entry.kind}  {entry.summary}")


@app.command(
    epilog="Examples:\n\n"
    "  anju sim device --profile anju-smoke-mb --listen 'modbus-tcp://127.0.0.1:5020?unit=1'\n\n"
    "  anju sim device --profile anju-smoke-mb --listen 'modbus-tcp://127.0.0.1:0?unit=2' "
    "--alarm-after 10 --duration 60\n\n"
    "  anju sim device --profile anju-smoke-mb "
    "--listen 'modbus-rtu:///tmp/ttyA?baud=9600&parity=N&unit=3'"
)
def device(
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            metavar="ID",
            help="Profile id of the device model to simulate (see `anju sim list`).",
        ),
    ],
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            metavar="URL",
            help="Where to serve: modbus-tcp://HOST:PORT?unit=N (port 0: any free port) "
            "or modbus-rtu:///dev/PTY?baud=9600&parity=N&unit=N. Quote it in a shell.",
        ),
    ],
    alarm_after: Annotated[
        float | None,
        typer.Option(
            "--alarm-after",
            metavar="SECONDS",
            min=0,
            help="Put smoke in the chamber this long after start (latches the alarm).",
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            metavar="SECONDS",
            min=0,
            help="Stop after this long instead of waiting for Ctrl-C.",
        ),
    ] = None,
) -> None:
    """Serve one simulated device until Ctrl-C or --duration.

    Prints the URL, unit and model it serves, then one line per change it reports.

    Exit status: 2 for a bad --profile or --listen, 1 if the address cannot be served.
    """
    try:
        entry = get_model(profile)
    except UnknownModelError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from None
    try:
        address = parse_listen_url(listen)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--listen") from None
    simulated = entry.create()
    server: ModbusSimServer | ModbusRtuSimServer
    try:
        if address.scheme == "modbus-tcp":
            server = ModbusSimServer(
                {address.unit: simulated}, host=address.host, port=address.port
            )
        else:
            server = ModbusRtuSimServer(
                {address.unit: simulated},
                path=address.path,
                baudrate=address.baud,
                parity=address.parity,
            )
    except ValueError as exc:
        raise typer.BadParameter(f"{listen!r}: {exc}", param_hint="--listen") from None
    try:
        asyncio.run(
            _serve(
                simulated,
                server,
                unit=address.unit,
                model=entry.model,
                profile_id=entry.profile_id,
                alarm_after_s=alarm_after,
                duration_s=duration,
            )
        )
    except SimServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("stopped (Ctrl-C)")
