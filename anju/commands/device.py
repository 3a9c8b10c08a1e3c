"""``anju device``: an installer's checks of one device or one bus, on site.

``test`` reads a device once through its profile and shows every decoded value next
to where it lives and the raw data it came from. It has two forms: directly
(``--profile`` and ``--address``: this machine opens the bus itself, so on a serial
line the agent must be stopped, one master per RS-485 line) and through the running
gateway (``--device``: the cloud asks the device's gateway to read it, queued behind
its own polling, so the agent keeps running; ``POST /devices/{id}/test``).
``scan PROTOCOL`` finds the devices that answer on a bus and the profiles that fit
them; ``write`` sets one writable point of a Modbus device and reads it back. ``test``
and ``scan`` find the driver through ``edge.drivers.registry`` and use its installer
hooks (``probe``, ``scan``), so a protocol whose driver offers them works here with no
change to this module, and one whose driver does not is refused with the reason. What
the values mean is ``edge.inspection``'s; this module parses the command line and
presents what comes back. ``add``/``list``/``remove``/``move``/``import`` work on the
cloud's device registry and live in ``anju.commands.inventory``.
"""

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Final, NoReturn

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from anju.api_client import cloud_session, config_defaults, fail_command
from anju.commands import device_views as views
from anju.commands.common import (
    DEFAULT_GATEWAY_CONFIG,
    CloudOption,
    JsonOption,
    ProfilesOption,
    SiteConfigOption,
    fail,
    profile_root,
)
from edge.addresses import DeviceAddress, parse_address
from edge.drivers.contract import (
    Driver,
    DriverOptions,
    NotSupported,
    ScanHit,
    ScanProgress,
    ScanTerms,
)
from edge.drivers.modbus.driver import ModbusDriver
from edge.drivers.modbus.probe import parse_point_value, write_point
from edge.drivers.registry import NoDriver, driver_for
from edge.errors import (
    AddressError,
    ConfigError,
    DeviceDisconnected,
    DeviceRejected,
    DeviceTimeout,
    DeviceUnreachable,
    EdgeError,
)
from edge.inspection import inspect_device, inspect_point
from schemas.errors import ProfileError
from schemas.profile import DeviceProfile, load_profiles
from schemas.vocabulary import Protocol

app = typer.Typer(
    help="Check devices on site: read one through its profile, scan a bus, write a setting; "
    "register them in the cloud: add, list, remove, move, import (docs/install.md).\n\n"
    "Device addresses are URLs: modbus-tcp://HOST:PORT?unit=N for a device or an "
    "RTU-to-TCP converter on the network, modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=N "
    "for an RS-485 line on the gateway itself, ble://AA:BB:CC:DD:EE:FF for a wearable band "
    "(heard through --adapter), serial:///dev/ttyS1?baud=115200 for a device pushing records "
    "(a camera box). test and scan work with every protocol "
    "whose driver can probe and scan; write is Modbus only. Profiles are found under "
    "$ANJU_PROFILE_DIR, else the repository's device_profiles/ (anju profile list shows them).",
    epilog="Examples:\n\n"
    "  anju device scan modbus --address 'modbus-tcp://192.168.1.50:502' --units 1-32\n\n"
    "  anju device test --profile anju-smoke-mb --address 'modbus-tcp://192.168.1.50:502?unit=3'\n\n"
    "  anju device scan ble --adapter bumble:usb:0\n\n"
    "  anju device test --profile anju-wearable-ble --address ble://F0:A1:00:00:00:01\n\n"
    "  anju device write --profile anju-smoke-mb "
    "--address 'modbus-tcp://192.168.1.50:502?unit=3' --point alarm_threshold --value 2.5",
    no_args_is_help=True,
)

ProfileOption = Annotated[
    str,
    typer.Option(
        "--profile",
        metavar="ID",
        help="Profile id of the device model, e.g. anju-smoke-mb (anju profile list).",
        show_default=False,
    ),
]
AddressOption = Annotated[
    str,
    typer.Option(
        "--address",
        metavar="URL",
        help="Device address: modbus-tcp://HOST:PORT?unit=N, "
        "modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=N (quote it in the shell), "
        "ble://AA:BB:CC:DD:EE:FF or serial:///dev/ttyS1?baud=115200.",
        show_default=False,
    ),
]
AdapterOption = Annotated[
    str,
    typer.Option(
        "--adapter",
        metavar="SPEC",
        envvar="ANJU_BLE_ADAPTER",
        help="BLE only: the adapter to listen with, as in the gateway config's "
        "drivers.ble.adapter: bleak:hci0 (BlueZ), bumble:usb:0 (a dongle bumble drives), "
        "bumble:tcp-client:HOST:PORT (simulated bands: anju sim bands).",
    ),
]
_MODBUS = ModbusDriver.protocols

GATEWAY_TIMEOUT_S: Final = 10.0
"""How long ``device test --device`` waits for the gateway by default (the API's too)."""


@app.command(
    "test",
    epilog="Examples:\n\n"
    "  anju device test --device fh-b3-smoke-0301\n\n"
    "  anju device test --device fh-b3-smoke-0301 --gateway gw-fh-01 --timeout 20 --json\n\n"
    "  anju device test --profile anju-smoke-mb --address 'modbus-tcp://127.0.0.1:5020?unit=1'\n\n"
    "  anju device test --profile anju-smoke-mb "
    "--address 'modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=3' --raw\n\n"
    "  anju device test --profile anju-door-mb "
    "--address 'modbus-tcp://10.0.0.7:502?unit=2' --json\n\n"
    "Two forms. --device ID reads a registered device through its running gateway: the "
    "cloud (--cloud, else $ANJU_CLOUD_URL; key from $ANJU_API_KEY) asks the gateway, which "
    "reads it between its own polls of the bus, so nothing needs stopping; Modbus devices "
    "only (a band or a serial device sends its values on its own). --profile and --address "
    "read it directly from this machine, which opens the bus itself: on a serial line, "
    "stop the agent first (one master per RS-485 line). Give one form, not both.\n\n"
    "The profile's protocol picks the driver, which must serve the address's scheme; a "
    "driver that cannot probe is refused. A Modbus exception 2 (illegal data address) "
    "usually means the profile does not fit the device; a timeout means a wrong unit id, "
    "baud rate, parity or A/B wiring; a connection closed by the device, that it restarted "
    "or that another client holds its only connection. A band (ble://) is heard advertising "
    "first, then connected if its profile reads or subscribes to characteristics; each "
    "notified point shows the first notification. A serial device (serial://) is listened to "
    "until each record its points come from has arrived, for up to --timeout seconds "
    "(at least 6).",
)
def device_test(
    profile_id: Annotated[
        str | None,
        typer.Option(
            "--profile",
            metavar="ID",
            help="Directly: the profile id of the device model, e.g. anju-smoke-mb "
            "(anju profile list). With --address.",
            show_default=False,
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            metavar="URL",
            help="Directly: the device address, modbus-tcp://HOST:PORT?unit=N, "
            "modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=N (quote it in the shell), "
            "ble://AA:BB:CC:DD:EE:FF or serial:///dev/ttyS1?baud=115200. With --profile.",
            show_default=False,
        ),
    ] = None,
    device_id: Annotated[
        str | None,
        typer.Option(
            "--device",
            metavar="ID",
            help="Through the gateway: the registered device to read (anju device list).",
            show_default=False,
        ),
    ] = None,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            metavar="GW",
            help="Through the gateway: the gateway the device should be behind; refused "
            "if it is behind another.",
            show_default=False,
        ),
    ] = None,
    cloud: CloudOption = None,
    config: SiteConfigOption = DEFAULT_GATEWAY_CONFIG,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Directly: also show where each point lives, its raw data, and every request.",
        ),
    ] = False,
    as_json: JsonOption = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="S",
            min=0.05,
            help="Directly: seconds to wait per request (default 1); for a band (ble://), "
            "to hear it advertise and for each first notification (at least 3); for a "
            "serial device, to listen for its records (at least 6). Through the gateway: "
            f"seconds to wait for its answer (default {GATEWAY_TIMEOUT_S:g}, 1-30).",
            show_default=False,
        ),
    ] = None,
    profiles: ProfilesOption = None,
    adapter: AdapterOption = "bleak:hci0",
) -> None:
    """Read a device once and show every point of its profile, decoded: directly
    (--profile, --address) or through its running gateway (--device).

    Reads all points, not only those the gateway polls: configuration registers and
    serial numbers too. Shows each value with its metric, unit and label; directly,
    also the events the profile's rules would raise on this reading. Exits 1 if there
    is no driver for the protocol or it cannot probe, or if the device does not answer
    or refuses a read, naming the address (for Modbus the unit, table and register);
    through the gateway, also if the gateway does not answer in time. Exits 2 when the
    two forms are mixed or neither is given.
    """
    if device_id is not None:
        if profile_id is not None or address is not None or raw:
            fail_command(
                as_json,
                "--device reads through the gateway; --profile/--address (and --raw) read "
                "directly from this machine: give one form, not both",
                code=2,
            )
        _test_through_gateway(
            device_id,
            gateway,
            cloud,
            config,
            timeout or GATEWAY_TIMEOUT_S,
            profiles,
            as_json=as_json,
        )
        return
    if gateway is not None or cloud is not None or config != DEFAULT_GATEWAY_CONFIG:
        fail_command(
            as_json,
            "--gateway, --cloud and --config go with --device (a test through the gateway)",
            code=2,
        )
    if profile_id is None or address is None:
        fail_command(
            as_json,
            "which device? --device ID (through its gateway), or --profile ID and --address "
            "URL (directly from this machine)",
            code=2,
        )
    timeout = 1.0 if timeout is None else timeout
    profile = _profile(profile_id, profiles, as_json=as_json)
    device = _address(address, as_json=as_json)
    try:
        driver = _driver(profile, device, address)
        options = DriverOptions(timeout_s=timeout, settings=_settings(driver, adapter, device))
        inspection = asyncio.run(inspect_device(driver, profile, device, options))
    except EdgeError as exc:
        _fail(as_json, _explain(exc, device, profile))
    if as_json:
        typer.echo(json.dumps(views.inspection_json(inspection)))
        return
    console = Console()
    console.print(
        f"[bold]{escape(profile.id)}[/bold] ({escape(profile.manufacturer)} "
        f"{escape(profile.model)}) at {escape(inspection.address)}: "
        f"{len(inspection.requests)} request(s) in {inspection.elapsed_s * 1000:.1f} ms"
    )
    console.print(views.points_table(inspection.points, raw=raw))
    if raw:
        console.print(views.requests_table(inspection.requests))
    if inspection.events:
        for event in inspection.events:
            details = ", ".join(
                f"{key}={value}" for key, value in msgspec.to_builtins(event.data).items()
            )
            console.print(
                f"event: {event.type} ({event.severity}) {details}", markup=False, highlight=False
            )
    else:
        console.print("No events: no rule of the profile holds on this reading.")


def _test_through_gateway(
    device_id: str,
    gateway: str | None,
    cloud: str | None,
    config: Path,
    timeout_s: float,
    profiles: Path | None,
    *,
    as_json: bool,
) -> None:
    """``device test --device``: ask the cloud to have the device's gateway read it.

    The local profile, when there is one of the device's, gives each value its metric,
    unit and label; the values themselves are the gateway's.
    """
    if not 1 <= timeout_s <= 30:
        fail_command(as_json, f"--timeout {timeout_s:g}: through the gateway, 1-30 s", code=2)
    # On the gateway box, the cloud its config names is the default.
    _, config_cloud = config_defaults(config)
    with cloud_session(cloud, config_cloud, as_json=as_json) as api:
        registered = api.get_device(device_id)
        answer = api.test_device(device_id, timeout_s=timeout_s, gateway=gateway)
    if as_json:
        typer.echo(json.dumps({**answer, "profile": registered.get("profile_id")}))
        raise typer.Exit(0 if answer.get("ok") else 1)
    elapsed = answer.get("elapsed_ms")
    took = f" in {elapsed} ms" if isinstance(elapsed, int) else ""
    if not answer.get("ok"):
        fault = answer.get("fault")
        kind = f" ({fault})" if fault else ""
        fail(
            f"{device_id} through {answer.get('gateway')}: no answer{kind}{took}: "
            f"{answer.get('detail')}"
        )
    profile_id = str(registered.get("profile_id") or "")
    known = _known_profiles(profiles)
    console = Console()
    console.print(
        f"[bold]{escape(device_id)}[/bold] ({escape(profile_id)}) at "
        f"{escape(str(registered.get('address') or '?'))}, read by "
        f"{escape(str(answer.get('gateway')))}{took}"
    )
    console.print(views.gateway_points_table(answer.get("values") or {}, known.get(profile_id)))


def _known_profiles(profiles: Path | None) -> dict[str, DeviceProfile]:
    """The profiles here, to explain values read elsewhere; none when they cannot be read
    (the values still show, without metric, unit or label)."""
    try:
        return load_profiles(profiles or profile_root())
    except ProfileError:
        return {}


@app.command(
    "write",
    epilog="Examples:\n\n"
    "  anju device write --profile anju-smoke-mb --address 'modbus-tcp://127.0.0.1:5020?unit=1' "
    "--point alarm_threshold --value 2.5\n\n"
    "  anju device write --profile anju-smoke-mb --address 'modbus-tcp://127.0.0.1:5020?unit=1' "
    "--point alarm_reset --value 'reset alarm'\n\n"
    "The value is in engineering units (2.5 %/m, not the raw 250); a label of the point "
    "or, for coils, on/off works too. Only points the profile marks writable are written. "
    "Modbus only: the registers are read back to show what the device holds.",
)
def device_write(
    profile_id: ProfileOption,
    address: AddressOption,
    point: Annotated[
        str, typer.Option("--point", metavar="NAME", help="Point to write.", show_default=False)
    ],
    value: Annotated[
        str,
        typer.Option(
            "--value", metavar="V", help="Engineering value, label or on/off.", show_default=False
        ),
    ],
    as_json: JsonOption = False,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="S", min=0.05, help="Seconds to wait per request.")
    ] = 1.0,
    profiles: ProfilesOption = None,
) -> None:
    """Write one writable point of a Modbus device, then read it back: before and after.

    Holding registers are written with function 6 (one register) or 16 (several),
    coils with function 5. Exits 1 if the profile is not Modbus, does not mark the
    point writable, the value does not fit it, or the device refuses it (exception 3).
    """
    profile = _profile(profile_id, profiles, as_json=as_json)
    device = _address(address, as_json=as_json)
    try:
        driver = _driver(profile, device, address)
        if not isinstance(driver, ModbusDriver):
            raise NotSupported(
                driver.name, "be used by anju device write, which reads Modbus registers back"
            )
        engineering = parse_point_value(profile, point, value)
        result = asyncio.run(write_point(profile, device, point, engineering, timeout_s=timeout))
    except EdgeError as exc:
        _fail(as_json, _explain(exc, device, profile))
    written = profile.point(result.point)
    before, after = inspect_point(written, result.before), inspect_point(written, result.after)
    if as_json:
        typer.echo(json.dumps(views.write_json(result, before, after)))
        return
    lines = [
        f"{result.point} at {result.address}",
        f"  before: {views.value_text(before)}  [{views.raw_text(before)}]",
        f"  wrote:  {result.requested:g} as {result.written_text}",
        f"  after:  {views.value_text(after)}  [{views.raw_text(after)}]",
    ]
    if not result.holds_written:
        lines.append(
            "  The device now holds something other than what was written: a command "
            "register that resets itself, or a value the device rounded or ignored."
        )
    typer.echo("\n".join(lines))


@app.command(
    "scan",
    epilog="Examples:\n\n"
    "  anju device scan modbus --address 'modbus-tcp://192.168.1.50:502' --units 1-32\n\n"
    "  anju device scan modbus --address 'modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N' "
    "--units 1-10,15,20-22 --timeout 0.2\n\n"
    "  anju device scan ble --adapter bumble:tcp-client:127.0.0.1:7000 --candidates 10\n\n"
    "PROTOCOL names the driver that scans (modbus, or modbus-tcp/modbus-rtu); it must "
    "serve the --address URL's scheme, and a driver that cannot scan is refused. "
    "--candidates is where to look in that driver's terms; for Modbus it is a list of "
    "unit ids, and --units says the same. A silent Modbus unit costs --timeout seconds, "
    "so 247 units on a serial line take about 247 x timeout; over TCP through a "
    "converter, units nobody answers are refused at once.",
)
def device_scan(
    protocol: Annotated[
        str,
        typer.Argument(
            metavar="PROTOCOL",
            help="The driver to scan with, by name or protocol: modbus (modbus-tcp:// and "
            "modbus-rtu:// addresses), ble (wearable bands, no --address), or another "
            "driver the gateway has.",
            show_default=False,
        ),
    ],
    address: Annotated[
        str,
        typer.Option(
            "--address",
            metavar="URL",
            help="The bus: modbus-tcp://HOST:PORT or modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N "
            "(any unit= is ignored). BLE listens on --adapter instead.",
            show_default=False,
        ),
    ] = "",
    candidates: Annotated[
        str,
        typer.Option(
            "--candidates",
            "--units",
            metavar="LIST",
            help="Where to look, in the driver's terms: Modbus unit ids, ranges and single "
            "ids, e.g. 1-10,15; BLE: seconds to listen. Default: everywhere the driver can "
            "look (Modbus: 1-247; BLE: 5 seconds).",
            show_default=False,
        ),
    ] = "",
    as_json: JsonOption = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", metavar="S", min=0.05, help="Seconds to wait for each candidate."
        ),
    ] = 0.5,
    profiles: ProfilesOption = None,
    adapter: AdapterOption = "bleak:hci0",
) -> None:
    """Find the devices that answer on a bus and suggest a profile for each.

    Works for every protocol whose driver can scan: PROTOCOL names the driver, and
    --candidates says where to look in its terms. For Modbus, a unit counts as present
    when it answers a read of holding register 0, even with a Modbus exception; every
    Modbus profile is then read at each unit found, and suggested when all its reads
    succeed and its values are plausible (profiles have no identification register,
    so this is evidence, not proof). For BLE, every band heard advertising within the
    listening time is listed with its strongest RSSI when its name, services or
    manufacturer data fit a BLE profile. Exits 1 if there is no driver for the
    protocol or it cannot scan, or if the bus or adapter cannot be reached.
    """
    try:
        driver, bus = _scan_target(protocol, address, as_json=as_json)
        tried = driver.candidates(candidates)
    except EdgeError as exc:
        _fail(as_json, str(exc))
    root = profiles or profile_root()
    try:
        known = list(load_profiles(root).values())
    except ProfileError as exc:
        _fail(as_json, f"{exc} (run `anju profile validate` to check every file)")
    console = Console()
    terms = driver.scan_terms
    show_progress = console.is_terminal and not as_json
    options = DriverOptions(timeout_s=timeout, settings=_settings(driver, adapter))
    try:
        with _progress(console, tried, terms, enabled=show_progress) as progress:
            hits = asyncio.run(driver.scan(bus, tried, known, options, progress))
    except EdgeError as exc:
        _fail(as_json, _explain(exc, bus))
    if as_json:
        typer.echo(json.dumps(views.scan_json(driver, bus, tried, hits)))
        return
    if not hits:
        outcome = terms.outcome.format(
            found=0, tried=len(tried), candidates=terms.candidates, bus=bus.bus
        )
        console.print(f"{escape(outcome)}. {escape(terms.silence)}")
        return
    console.print(views.scan_table(bus, tried, hits, terms))
    console.print(f"Suggestions: {escape(terms.basis)}.", highlight=False)


@contextmanager
def _progress(
    console: Console, candidates: list[str], terms: ScanTerms, *, enabled: bool
) -> Iterator[ScanProgress]:
    """A callback that moves a progress bar on per candidate, or does nothing."""
    if not enabled or not candidates:
        yield lambda candidate, hit: None
        return
    columns = (
        TextColumn(f"trying {escape(terms.candidate)} {{task.fields[candidate]:>3}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("found {task.fields[found]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("scan", total=len(candidates), candidate=candidates[0], found=0)
        upcoming = iter(candidates[1:])
        found = 0

        def advance(candidate: str, hit: ScanHit | None) -> None:
            nonlocal found
            found += hit is not None
            progress.update(task, advance=1, candidate=next(upcoming, candidate), found=found)

        yield advance


def _profile(profile_id: str, profiles: Path | None, *, as_json: bool) -> DeviceProfile:
    root = profiles or profile_root()
    try:
        loaded = load_profiles(root)
    except ProfileError as exc:
        _fail(as_json, f"{exc} (run `anju profile validate` to check every file)")
    profile = loaded.get(profile_id)
    if profile is None:
        known = ", ".join(sorted(loaded)) or "none"
        _fail(as_json, f"no profile {profile_id!r} under {root} (known: {known})")
    return profile


def _address(url: str, *, as_json: bool) -> DeviceAddress:
    try:
        return parse_address(url)
    except EdgeError as exc:
        _fail(as_json, str(exc))


def _driver(profile: DeviceProfile, device: DeviceAddress, url: str) -> Driver:
    """The driver of the profile's protocol, if it also serves ``device`` (typed as ``url``).

    Raises NoDriver or DriverUnavailable from the registry, and AddressError for an
    address of another protocol (a BLE MAC given for a Modbus detector).
    """
    driver = driver_for(profile.protocol)
    if device.protocol not in driver.protocols:
        schemes = " or ".join(f"{scheme}://" for scheme in sorted(driver.protocols))
        raise AddressError(
            url,
            f"{profile.id} speaks {profile.protocol}, which the {driver.name} driver "
            f"reaches at {schemes} addresses",
        )
    return driver


def _scan_target(protocol: str, url: str, *, as_json: bool) -> tuple[Driver, DeviceAddress]:
    """The driver to scan with and the bus it scans: ``url``, or the air for a driver
    that needs no address (BLE)."""
    if not url:
        try:
            driver = driver_for(protocol)
        except NoDriver:
            raise EdgeError(f"scanning {protocol} needs --address (the bus to scan)") from None
        if driver.scan_needs_address:
            raise EdgeError(f"scanning with the {driver.name} driver needs --address (the bus)")
        return driver, DeviceAddress(sorted(driver.protocols)[0])
    bus = _address(url, as_json=as_json)
    return _scan_driver(protocol, bus, url), bus


def _settings(
    driver: Driver, adapter: str, device: DeviceAddress | None = None
) -> dict[str, object]:
    """The driver's settings an installer gives on the command line (the BLE adapter),
    or in the environment (an OSDP reader's keys, kept out of the shell's history)."""
    if driver.name == "osdp":
        given = {
            name: os.environ[env] for env, name in _OSDP_ENVIRONMENT.items() if os.environ.get(env)
        }
        if "scbk" in given and device is not None:
            return {**given, "scbk": {str(device): given["scbk"]}}
        return {key: value for key, value in given.items() if key != "scbk"}
    return {"adapter": adapter} if driver.name == "ble" else {}


def _scan_driver(protocol: str, bus: DeviceAddress, url: str) -> Driver:
    """The driver of the bus (typed as ``url``), if ``protocol`` names it or its protocol."""
    driver = driver_for(bus.protocol)
    if protocol != driver.name and protocol not in driver.protocols:
        raise AddressError(
            url,
            f"the {driver.name} driver serves it, not {protocol!r}; "
            f"scan it with: anju device scan {driver.name}",
        )
    return driver


def _fail(as_json: bool, message: str) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": message}))
        raise typer.Exit(1)
    fail(message)


_OSDP_ENVIRONMENT: Final = {"ANJU_OSDP_SCBK": "scbk", "ANJU_OSDP_CARD_HASH_KEY": "card_hash_key"}
"""Where ``device test`` and ``device scan`` take an OSDP reader's keys from, by setting."""


def _explain(exc: EdgeError, device: DeviceAddress, profile: DeviceProfile | None = None) -> str:
    """The error, and on a second line what an installer should check next."""
    if isinstance(exc, ConfigError) and device.protocol is Protocol.OSDP:
        # The command line has no config file: the settings came from the environment.
        for variable, setting in _OSDP_ENVIRONMENT.items():
            if exc.key.startswith(f"drivers.osdp.{setting}"):
                return f"{variable}: {exc.problem}"
    modbus = device.protocol in _MODBUS
    if isinstance(exc, DeviceUnreachable):
        hint = (
            "is the device or converter powered, and the host and port (or serial path) right?"
            if modbus
            else "is the device powered and within reach, and its address right?"
        )
    elif not modbus:
        return str(exc)
    elif isinstance(exc, DeviceDisconnected) and device.protocol is Protocol.MODBUS_TCP:
        hint = (
            "the device, or its RTU-to-TCP converter, may have restarted, or it serves one "
            "client at a time and another master (a SCADA, a second gateway, a stale session) "
            "holds that connection; a firewall resetting connections does the same. Check "
            f"what else connects to {device.bus}"
        )
    elif isinstance(exc, DeviceTimeout):
        hint = (
            f"no answer from unit {device.unit}: check the unit id, baud rate, parity and A/B "
            "wiring; anju device scan modbus lists the units that answer"
        )
    elif isinstance(exc, DeviceRejected) and exc.code in (0x0A, 0x0B):
        hint = (
            f"the gateway reached nothing at unit {device.unit}; "
            "anju device scan modbus lists the units that answer"
        )
    elif isinstance(exc, DeviceRejected) and exc.code == 2 and profile is not None:
        hint = f"the device has no such register: is {profile.id} the right profile for it?"
    elif isinstance(exc, DeviceRejected) and exc.code == 3:
        hint = "the device refused the value; see its manual for the accepted range"
    else:
        return str(exc)
    return f"{exc}\n  hint: {hint}"
