"""``anju sim``: run a simulated field device that speaks the real protocol.

Installers use it to rehearse a site before the hardware arrives, developers to point
a gateway at something that behaves like the datasheet, the demo to fill a community.
The simulators themselves live in ``firmware_sim``; this module parses the command
line, serves one device (or a scenario's devices) and reports what happens to them.

A profile id with a dedicated simulator gets it; any other Modbus profile gets a
register table laid out from the profile by ``firmware_sim.profile_device``, so an
installer can rehearse any Modbus model. This layer loads the profile files; the
simulators read none.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

import typer

from anju.commands.common import profile_root
from edge.addresses import DeviceAddress, parse_address
from edge.errors import AddressError
from firmware_sim import ScenarioError, SimServerError
from firmware_sim.camera_box import SCENARIOS as CAMERA_SCENARIOS
from firmware_sim.camera_box import main as serve_camera
from firmware_sim.modbus_server import ModbusDeviceModel, ModbusRtuSimServer, ModbusSimServer
from firmware_sim.models import SIMULATED_MODELS, get_model
from firmware_sim.osdp_console import SCENARIOS as READER_SCENARIOS
from firmware_sim.osdp_console import main as serve_readers
from firmware_sim.profile_device import describe_points, register_device_for_profile
from firmware_sim.scenario import Step, load_scenario, run_scenario
from firmware_sim.wearables import main as serve_bands
from schemas.errors import ProfileError
from schemas.profile import load_profiles
from schemas.vocabulary import Protocol

__all__ = ["app", "parse_listen_url"]

_TICK_S: Final = 1.0
_WATCH_S: Final = 0.1
_SERVED: Final = (Protocol.MODBUS_TCP, Protocol.MODBUS_RTU)

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
    "  anju sim run --scenario examples/fire-drill.yaml --listen 'modbus-tcp://127.0.0.1:5020'\n\n"
    "  anju sim bands --connected 3 --beacons 10 --port 7000\n\n"
    "Then poll it, for example: mbpoll -m tcp -p 5020 -a 1 -t 3 -r 1 -c 5 127.0.0.1",
    no_args_is_help=True,
)


def parse_listen_url(url: str) -> DeviceAddress:
    """Where to serve: ``modbus-tcp://HOST:PORT?unit=N`` or ``modbus-rtu:///dev/X?...&unit=N``.

    Parsed by ``edge.addresses`` as a listening address (port 0: any free port), with
    one shorthand of its own: a bare absolute path (``/dev/pts/3``) is a serial line
    with the defaults. Raises AddressError naming the URL and what to fix.
    """
    address = parse_address(f"modbus-rtu://{url}" if url.startswith("/") else url, listening=True)
    if address.protocol not in _SERVED:
        raise AddressError(url, "anju sim serves modbus-tcp:// and modbus-rtu:// addresses only")
    return address


@dataclass(frozen=True, slots=True)
class _Served:
    """One served device as the console sees it: how to show, tick and alarm it."""

    device: ModbusDeviceModel
    model: str
    describe: Callable[[], dict[str, str]]
    tick: Callable[[], None]
    alarm: Callable[[], None] | None


def _resolve(profile_id: str, settings: Mapping[str, str]) -> _Served:
    """The dedicated simulator of ``profile_id``, else a register table from its profile."""
    if profile_id in SIMULATED_MODELS:
        if settings:
            raise typer.BadParameter(
                f"--set applies to profiles without a dedicated simulator; {profile_id} has one "
                "(drive it with a scenario: anju sim run)",
                param_hint="--set",
            )
        entry = get_model(profile_id)
        model = entry.create()
        return _Served(model, entry.model, model.describe, model.tick, model.trigger_alarm)
    try:
        profiles = load_profiles(profile_root())
    except ProfileError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from None
    profile = profiles.get(profile_id)
    if profile is None:
        known = ", ".join(sorted(profiles))
        raise typer.BadParameter(
            f"no profile {profile_id!r} in {profile_root()} (known: {known})",
            param_hint="--profile",
        )
    try:
        device = register_device_for_profile(profile, settings)
    except ValueError as exc:
        hint = "--set" if settings and profile.protocol in _SERVED else "--profile"
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    return _Served(device, device.model, lambda: describe_points(device, profile), _no_tick, None)


def _no_tick() -> None:
    """A register table has no behaviour of its own to advance."""


def _make_server(
    devices: Mapping[int, ModbusDeviceModel], address: DeviceAddress, listen: str
) -> ModbusSimServer | ModbusRtuSimServer:
    try:
        if address.protocol is Protocol.MODBUS_TCP:
            return ModbusSimServer(devices, host=address.host, port=address.port)
        return ModbusRtuSimServer(
            devices, path=address.path, baudrate=address.baud, parity=address.parity
        )
    except ValueError as exc:
        raise typer.BadParameter(f"{listen!r}: {exc}", param_hint="--listen") from None


def _parse_listen(listen: str) -> DeviceAddress:
    try:
        return parse_listen_url(listen)
    except AddressError as exc:
        raise typer.BadParameter(str(exc), param_hint="--listen") from None


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def _echo_changes(prefix: str, before: dict[str, str], after: dict[str, str]) -> None:
    for name, value in after.items():
        if before.get(name) != value:
            typer.echo(f"{_stamp()}  {prefix}{name}: {before.get(name, '-')} -> {value}")


@contextlib.contextmanager
def _sigterm_sets(stop: asyncio.Event) -> Iterator[None]:
    """A supervisor (the demo, a test harness) stops us with SIGTERM: stop as for Ctrl-C."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        yield
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


async def _watch(
    served: Mapping[int, _Served],
    stop: asyncio.Event,
    *,
    until: Callable[[float], bool],
    alarm_at: float | None = None,
) -> None:
    """Tick the devices once a second and print each change until ``until(now)`` or stop."""
    loop = asyncio.get_running_loop()
    prefix = {unit: "" if len(served) == 1 else f"unit {unit} " for unit in served}
    shown = {unit: entry.describe() for unit, entry in served.items()}
    next_tick = loop.time() + _TICK_S
    while not stop.is_set() and not until(loop.time()):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _WATCH_S)
        now = loop.time()
        if now >= next_tick:
            for entry in served.values():
                entry.tick()
            next_tick += _TICK_S
        if alarm_at is not None and now >= alarm_at:
            typer.echo(f"{_stamp()}  raising the alarm (--alarm-after)")
            for entry in served.values():
                if entry.alarm is not None:
                    entry.alarm()
            alarm_at = None
        for unit, entry in served.items():
            current = entry.describe()
            _echo_changes(prefix[unit], shown[unit], current)
            shown[unit] = current


async def _serve(
    served: _Served,
    server: ModbusSimServer | ModbusRtuSimServer,
    *,
    unit: int,
    profile_id: str,
    alarm_after_s: float | None,
    duration_s: float | None,
) -> None:
    stop = asyncio.Event()
    with _sigterm_sets(stop):
        async with server:
            typer.echo(
                f"serving {served.model} (profile {profile_id}) as unit {unit} "
                f"at {server.url_for(unit)}"
            )
            typer.echo("  " + ", ".join(f"{k} {v}" for k, v in served.describe().items()))
            started = asyncio.get_running_loop().time()
            await _watch(
                {unit: served},
                stop,
                until=lambda now: duration_s is not None and now >= started + duration_s,
                alarm_at=None if alarm_after_s is None else started + alarm_after_s,
            )
    typer.echo("stopped")


@app.command("list")
def list_models() -> None:
    """List the profile ids that have a simulated device.

    Any other Modbus profile can still be served as a plain register table.
    """
    for profile_id, entry in sorted(SIMULATED_MODELS.items()):
        typer.echo(f"{profile_id}  {entry.model}  {entry.kind}  {entry.summary}")


def _parse_settings(values: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise typer.BadParameter(
                f"{item!r}: give NAME=VALUE, as in battery=80", param_hint="--set"
            )
        settings[name.strip()] = value.strip()
    return settings


@app.command(
    epilog="Examples:\n\n"
    "  anju sim device --profile anju-smoke-mb --listen 'modbus-tcp://127.0.0.1:5020?unit=1'\n\n"
    "  anju sim device --profile anju-door-mb --listen 'modbus-tcp://127.0.0.1:0?unit=2' "
    "--alarm-after 10 --duration 60\n\n"
    "  anju sim device --profile anju-smoke-mb "
    "--listen 'modbus-rtu:///tmp/ttyA?baud=9600&parity=N&unit=3'\n\n"
    "  anju sim device --profile my-meter-mb --listen /dev/pts/3 --set voltage=229.5"
)
def device(
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            metavar="ID",
            help="Profile id of the device model to simulate. Models in `anju sim list` "
            "behave like the device; any other Modbus profile is served as a plain "
            "register table laid out from the profile.",
        ),
    ],
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            metavar="URL",
            help="Where to serve: modbus-tcp://HOST:PORT?unit=N (port 0: any free port), "
            "modbus-rtu:///dev/PTY?baud=9600&parity=N&unit=N, or a bare serial path. "
            "Quote it in a shell.",
        ),
    ],
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=VALUE",
            help="Start a point of a register-table device at this engineering value "
            "(true/false for bits). Repeat for several points.",
        ),
    ] = None,
    alarm_after: Annotated[
        float | None,
        typer.Option(
            "--alarm-after",
            metavar="SECONDS",
            min=0,
            help="Raise the device's alarm this long after start (smoke in the chamber, "
            "a door forced open).",
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

    Exit status: 2 for a bad --profile, --set or --listen, 1 if the address cannot be
    served.
    """
    served = _resolve(profile, _parse_settings(settings or []))
    if alarm_after is not None and served.alarm is None:
        raise typer.BadParameter(
            f"profile {profile} has no simulated alarm (it is served as a register table)",
            param_hint="--alarm-after",
        )
    address = _parse_listen(listen)
    server = _make_server({address.unit: served.device}, address, listen)
    try:
        asyncio.run(
            _serve(
                served,
                server,
                unit=address.unit,
                profile_id=profile,
                alarm_after_s=alarm_after,
                duration_s=duration,
            )
        )
    except SimServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("stopped (Ctrl-C)")


_SCENARIO_EXAMPLE: Final = (
    "Scenario file (YAML):\n\n"
    "  devices:\n\n"
    "    1: anju-smoke-mb\n\n"
    "    2: anju-door-mb\n\n"
    "  steps:\n\n"
    '    - {at: 1, unit: 2, action: present_card, card_id: "04:A2:19:7C", granted: false}\n\n'
    "    - {at: 2, unit: 2, action: force_open}\n\n"
    "    - {at: 3, unit: 1, action: trigger_alarm}\n\n"
    "    - {at: 4, unit: 1, action: fault_drop, count: 3}\n\n"
    "    - {at: 8, unit: 1, action: clear_smoke}\n\n"
    "Actions: any method of the unit's simulator (trigger_alarm, clear_smoke, set_smoke, "
    "reset_alarm, present_card, open_door, close_door, force_open, press_exit_button, "
    "fire_release, ...) with the step's other keys as arguments, or a fault: fault_drop "
    "(count), fault_delay (seconds, count), fault_garble (count), fault_exception (code, "
    "count), fault_reboot (offline_s), fault_clear; count is optional (default: until "
    "fault_clear).\n\n"
    "Example:\n\n"
    "  anju sim run --scenario examples/fire-drill.yaml --listen 'modbus-tcp://127.0.0.1:5020'"
)


@app.command(epilog=_SCENARIO_EXAMPLE)
def run(
    scenario: Annotated[
        Path,
        typer.Option(
            "--scenario",
            metavar="FILE",
            help="Scenario YAML: the devices by unit and the timed steps (see below).",
        ),
    ],
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            metavar="URL",
            help="Where to serve the scenario's units: modbus-tcp://HOST:PORT or "
            "modbus-rtu:///dev/PTY?baud=9600 (any unit= in the URL is ignored).",
        ),
    ],
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            metavar="SECONDS",
            min=0,
            help="Keep serving until this long after start (default: stop after the last step).",
        ),
    ] = None,
) -> None:
    """Serve a scenario's devices and play its steps on time, printing each step and change.

    Exit status: 2 for a bad --scenario or --listen, 1 if the address cannot be served
    or a step fails.
    """
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario") from None
    address = _parse_listen(listen)
    devices = loaded.create_devices()
    server = _make_server(devices, address, listen)
    served = {
        unit: _Served(dev, dev.model, dev.describe, dev.tick, dev.trigger_alarm)
        for unit, dev in devices.items()
    }
    end_s = max(loaded.duration_s, duration or 0.0)

    def announce(step: Step) -> None:
        typer.echo(f"{_stamp()}  step {step.describe()}")

    async def play() -> None:
        stop = asyncio.Event()
        with _sigterm_sets(stop):
            async with server:
                for unit, entry in served.items():
                    typer.echo(f"serving {entry.model} as unit {unit} at {server.url_for(unit)}")
                started = asyncio.get_running_loop().time()
                steps = asyncio.create_task(
                    run_scenario(loaded, devices, server.faults, on_step=announce),
                    name="scenario steps",
                )
                try:
                    await _watch(
                        served,
                        stop,
                        until=lambda now: (
                            steps.done()
                            and (steps.exception() is not None or now >= started + end_s)
                        ),
                    )
                finally:
                    steps.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await steps
        typer.echo("stopped")

    try:
        asyncio.run(play())
    except (SimServerError, ScenarioError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("stopped (Ctrl-C)")


@app.command(
    "bands",
    epilog="Examples:\n\n"
    "  anju sim bands --connected 3 --beacons 10 --port 7000 --control 7001\n\n"
    "  anju sim bands --connected 1 --beacons 0 --scenario ANJU-CB-0001=hr_drift\n\n"
    "Prints 'ready hci=tcp-client:HOST:PORT [control=HOST:PORT]' once every band "
    "advertises. A gateway reaches the bands with drivers.ble.adapter "
    "bumble:tcp-client:HOST:PORT, and so do anju device scan ble and anju device test "
    "(--adapter). Bands: CB-300 care bands F0:A1:00:00:00:01.. (ANJU-CB-0001..), kept "
    "connected; CB-100 beacons F0:B1:00:00:00:01.. (ANJU-BB-0001..), heard only. "
    "Scenarios: normal_day, sos, cancel, fall, fall_recovery, hr_drift, walk_away, "
    "return, battery_dying, garbage. The control socket takes one JSON object a line, "
    'e.g. {"band": "ANJU-CB-0001", "scenario": "sos"}, and answers with one '
    "(notified_at: when the alert left the band). One gateway at a time.",
)
def bands(
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="HCI port of the dongle; 0: a free one.")
    ] = 0,
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on.")] = (
        "127.0.0.1"
    ),
    connected: Annotated[
        int, typer.Option("--connected", metavar="N", min=0, help="CB-300 care bands.")
    ] = 20,
    beacons: Annotated[
        int, typer.Option("--beacons", metavar="N", min=0, help="CB-100 beacon bands.")
    ] = 300,
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Randomness and phases of every band.")
    ] = 0,
    time_scale: Annotated[
        float,
        typer.Option(
            "--time-scale", metavar="X", help="The bands' clock runs X times faster than the wall."
        ),
    ] = 1.0,
    control: Annotated[
        int | None,
        typer.Option(
            "--control",
            metavar="PORT",
            help="Serve the JSON-lines control socket (0: a free port).",
        ),
    ] = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            metavar="BAND=NAME",
            help="Start a scenario at launch; BAND is an address or name (repeatable).",
        ),
    ] = None,
) -> None:
    """Wristbands on a simulated BLE radio, served to a gateway as an HCI dongle over TCP.

    CB-300 care bands (connected, heart rate and status notified every second) and
    CB-100 beacon bands (heard from their advertisements), with scenarios to start at
    launch or over the control socket. Serves until Ctrl-C.
    """
    argv = [
        *("--host", host, "--port", str(port), "--connected", str(connected)),
        *("--beacons", str(beacons), "--seed", str(seed), "--time-scale", str(time_scale)),
        *(("--control", str(control)) if control is not None else ()),
        *(item for spec in scenario or () for item in ("--scenario", spec)),
    ]
    raise typer.Exit(serve_bands(argv, prog="anju sim bands"))


@app.command(
    "readers",
    epilog="Examples:\n\n"
    "  socat -d -d pty,raw,echo=0,link=/tmp/osdpA pty,raw,echo=0,link=/tmp/osdpB &\n\n"
    "  anju sim readers --path /tmp/osdpA --addresses 0-15 --scbk-file readers.keys "
    "--scenario grant\n\n"
    "A gateway (the OSDP control panel) opens the other end, /tmp/osdpB, at the same "
    "baud rate. The key file holds one ADDRESS=KEY line per secure reader, the key as "
    "32 hex digits (1=000102...0f); readers without a key talk in clear.",
)
def readers(
    path: Annotated[
        str, typer.Option("--path", metavar="PATH", help="The pty end the readers answer on.")
    ],
    baud: Annotated[
        int,
        typer.Option("--baud", metavar="BAUD", min=300, help="Line rate; replies are paced to it."),
    ] = 9600,
    addresses: Annotated[
        str, typer.Option("--addresses", metavar="LIST", help="Reader addresses: 0-15 or 1,3,5-7.")
    ] = "1",
    scbk_file: Annotated[
        Path | None,
        typer.Option(
            "--scbk-file",
            metavar="FILE",
            help="Secure-channel keys, ADDRESS=HEX per line (never given on the command line).",
        ),
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            metavar="NAME",
            help=f"Play on each reader in turn, every --every seconds: "
            f"{', '.join(READER_SCENARIOS)}.",
        ),
    ] = None,
    every: Annotated[
        float, typer.Option("--every", metavar="SECONDS", min=0.1, help="Time between scenarios.")
    ] = 5.0,
    duration: Annotated[
        float | None,
        typer.Option("--duration", metavar="SECONDS", min=0, help="Stop after this long."),
    ] = None,
) -> None:
    """OSDP door readers (libosdp peripherals) on one pseudo-terminal, paced at the baud rate.

    Prints each scenario step it plays and each command the panel sends (LED, buzzer,
    output); serves until Ctrl-C or --duration.
    """
    argv = [
        *("--path", path, "--baud", str(baud), "--addresses", addresses, "--every", str(every)),
        *(("--scbk-file", str(scbk_file)) if scbk_file is not None else ()),
        *(("--scenario", scenario) if scenario is not None else ()),
        *(("--duration", str(duration)) if duration is not None else ()),
    ]
    raise typer.Exit(serve_readers(argv, prog="anju sim readers"))


@app.command(
    "camera",
    epilog="Examples:\n\n"
    "  socat -d -d pty,raw,echo=0,link=/tmp/camA pty,raw,echo=0,link=/tmp/camB &\n\n"
    "  anju sim camera --path /tmp/camA --scenario night_intrusion\n\n"
    "  anju sim camera --path /tmp/camA --baud 9600 --rate 20 --duration 60\n\n"
    "A gateway reads the other end: serial:///tmp/camB?baud=115200 with profile "
    "anju-camera-serial. Prints 'ready path=PATH baud=N', and 'sent N records' at the end.",
)
def camera(
    path: Annotated[
        str, typer.Option("--path", metavar="PATH", help="The serial line (a pty end) to write.")
    ],
    baud: Annotated[
        int,
        typer.Option("--baud", metavar="BAUD", min=300, help="Line rate; records are paced to it."),
    ] = 115200,
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            metavar="NAME",
            help=f"Play once at start: {' or '.join(CAMERA_SCENARIOS)}.",
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", metavar="N", help="Send N records a second of a realistic mix."),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", metavar="SECONDS", min=0, help="Stop after this long."),
    ] = None,
) -> None:
    """A VA-SR400 camera analytics box: counts and events as serial records, never images.

    People counts every 5 s and on change, a scenario's events, or a steady rate of
    records; serves until Ctrl-C or --duration.
    """
    argv = [
        *("--path", path, "--baud", str(baud)),
        *(("--scenario", scenario) if scenario is not None else ()),
        *(("--rate", str(rate)) if rate is not None else ()),
        *(("--duration", str(duration)) if duration is not None else ()),
    ]
    raise typer.Exit(serve_camera(argv, prog="anju sim camera"))
