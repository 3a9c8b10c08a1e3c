"""``anju device``: an installer's checks of one device or one bus, on site.

``test`` reads a device once through its profile and shows every decoded value next
to the raw registers it came from; ``write`` sets one writable point and reads it
back; ``scan modbus`` finds the unit ids that answer on a bus and the profiles that
fit them. The reading, writing and scanning are edge.probe's; this module parses the
command line and presents what comes back. ``add``/``list``/``remove``/``move`` need
the cloud's device registry and come with provisioning.
"""

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from anju.commands.common import TABLE_CODES, JsonOption, ProfilesOption, fail, profile_root
from edge.addresses import DeviceAddress, parse_address
from edge.errors import (
    DeviceDisconnected,
    DeviceRejected,
    DeviceTimeout,
    DeviceUnreachable,
    EdgeError,
)
from edge.probe import (
    BlockRead,
    DeviceReading,
    PointValue,
    ScanHit,
    WriteResult,
    parse_point_value,
    parse_units,
    read_device,
    scan_units,
    write_point,
)
from schemas.errors import ProfileError
from schemas.profile import DeviceProfile, ModbusTable, ValueType, load_profiles
from schemas.vocabulary import Protocol

app = typer.Typer(
    help="Check devices on site: read one through its profile, write a setting, scan a bus.\n\n"
    "Device addresses are URLs: modbus-tcp://HOST:PORT?unit=N for a device or an "
    "RTU-to-TCP converter on the network, modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=N "
    "for an RS-485 line on the gateway itself. Profiles are found under $ANJU_PROFILE_DIR, "
    "else the repository's device_profiles/ (anju profile list shows them).",
    epilog="Examples:\n\n"
    "  anju device scan modbus --address 'modbus-tcp://192.168.1.50:502' --units 1-32\n\n"
    "  anju device test --profile anju-smoke-mb --address 'modbus-tcp://192.168.1.50:502?unit=3'\n\n"
    "  anju device write --profile anju-smoke-mb "
    "--address 'modbus-tcp://192.168.1.50:502?unit=3' --point alarm_threshold --value 2.5",
    no_args_is_help=True,
)
scan_app = typer.Typer(
    help="Find the devices that answer on a bus and suggest a profile for each.",
    no_args_is_help=True,
)
app.add_typer(scan_app, name="scan")


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
        help="Device address: modbus-tcp://HOST:PORT?unit=N or "
        "modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=N (quote it in the shell).",
        show_default=False,
    ),
]
_SUGGESTION_BASIS = (
    "profiles carry no identification register: a profile is suggested when every read "
    "it plans succeeds at that unit and the values it decodes are plausible"
)


@app.command(
    "test",
    epilog="Examples:\n\n"
    "  anju device test --profile anju-smoke-mb --address 'modbus-tcp://127.0.0.1:5020?unit=1'\n\n"
    "  anju device test --profile anju-smoke-mb "
    "--address 'modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=3' --raw\n\n"
    "  anju device test --profile anju-door-mb "
    "--address 'modbus-tcp://10.0.0.7:502?unit=2' --json\n\n"
    "A Modbus exception 2 (illegal data address) usually means the profile does not fit the "
    "device; a timeout means a wrong unit id, baud rate, parity or A/B wiring; a connection "
    "closed by the device, that it restarted or that another client holds its only connection.",
)
def device_test(
    profile_id: ProfileOption,
    address: AddressOption,
    raw: Annotated[
        bool,
        typer.Option("--raw", help="Also show the raw registers of every request, in hex."),
    ] = False,
    as_json: JsonOption = False,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="S", min=0.05, help="Seconds to wait per request.")
    ] = 1.0,
    profiles: ProfilesOption = None,
) -> None:
    """Read a device once and show every point of its profile, decoded.

    Reads all points, not only those the gateway polls: configuration registers and
    serial numbers too. Shows each value with its metric, unit and label, and the
    events the profile's rules would raise on this reading. Exits 1 if the device
    does not answer or refuses a read, naming the address, unit, table and register.
    """
    profile = _profile(profile_id, profiles, as_json=as_json)
    device = _address(address, as_json=as_json)
    try:
        reading = asyncio.run(read_device(profile, device, timeout_s=timeout))
    except EdgeError as exc:
        _fail(as_json, _explain(exc, profile, device))
    if as_json:
        typer.echo(json.dumps(_reading_json(reading)))
        return
    console = Console()
    console.print(
        f"[bold]{escape(profile.id)}[/bold] ({escape(profile.manufacturer)} "
        f"{escape(profile.model)}) at {escape(reading.address)}: {len(reading.reads)} "
        f"request(s) in {reading.elapsed_s * 1000:.1f} ms"
    )
    console.print(_points_table(reading, raw=raw))
    if raw:
        console.print(_reads_table(reading.reads))
    if reading.events:
        for event in reading.events:
            details = ", ".join(
                f"{key}={value}" for key, value in msgspec.to_builtins(event.data).items()
            )
            console.print(
                f"event: {event.type} ({event.severity}) {details}", markup=False, highlight=False
            )
    else:
        console.print("No events: no rule of the profile holds on this reading.")


@app.command(
    "write",
    epilog="Examples:\n\n"
    "  anju device write --profile anju-smoke-mb --address 'modbus-tcp://127.0.0.1:5020?unit=1' "
    "--point alarm_threshold --value 2.5\n\n"
    "  anju device write --profile anju-smoke-mb --address 'modbus-tcp://127.0.0.1:5020?unit=1' "
    "--point alarm_reset --value 'reset alarm'\n\n"
    "The value is in engineering units (2.5 %/m, not the raw 250); a label of the point "
    "or, for coils, on/off works too. Only points the profile marks writable are written.",
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
    """Write one writable point, then read it back and show before and after.

    Holding registers are written with function 6 (one register) or 16 (several),
    coils with function 5. Exits 1 if the profile does not mark the point writable,
    the value does not fit it, or the device refuses it (Modbus exception 3).
    """
    profile = _profile(profile_id, profiles, as_json=as_json)
    device = _address(address, as_json=as_json)
    try:
        engineering = parse_point_value(profile, point, value)
        result = asyncio.run(write_point(profile, device, point, engineering, timeout_s=timeout))
    except EdgeError as exc:
        _fail(as_json, _explain(exc, profile, device))
    if as_json:
        typer.echo(json.dumps(_write_json(result)))
        return
    before, after = result.before, result.after
    words = " ".join(_hex(word, before.table) for word in result.written)
    lines = [
        f"{result.point} at {result.address}",
        f"  before: {_value_text(before)}  [{_raw_text(before)}]",
        f"  wrote:  {result.requested:g} as {words}",
        f"  after:  {_value_text(after)}  [{_raw_text(after)}]",
    ]
    if after.raw_words != result.written:
        lines.append(
            "  The device now holds something other than what was written: a command "
            "register that resets itself, or a value the device rounded or ignored."
        )
    typer.echo("\n".join(lines))


@scan_app.command(
    "modbus",
    epilog="Examples:\n\n"
    "  anju device scan modbus --address 'modbus-tcp://192.168.1.50:502' --units 1-32\n\n"
    "  anju device scan modbus --address 'modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N' "
    "--units 1-10,15,20-22 --timeout 0.2\n\n"
    "A silent unit costs --timeout seconds, so 247 units on a serial line take about "
    "247 x timeout. Over TCP through a converter, units nobody answers are refused at once.",
)
def scan_modbus(
    address: Annotated[
        str,
        typer.Option(
            "--address",
            metavar="URL",
            help="The bus: modbus-tcp://HOST:PORT or modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N "
            "(any unit= is ignored).",
            show_default=False,
        ),
    ],
    units: Annotated[
        str,
        typer.Option(
            "--units", metavar="LIST", help="Unit ids to try: ranges and single ids, e.g. 1-10,15."
        ),
    ] = "1-247",
    as_json: JsonOption = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="S", min=0.05, help="Seconds to wait for each unit."),
    ] = 0.5,
    profiles: ProfilesOption = None,
) -> None:
    """Try every unit id on a Modbus bus and list those that answer, with fitting profiles.

    A unit counts as present when it answers a read of holding register 0, even with
    a Modbus exception. Every Modbus profile is then read at each unit found; it is
    suggested when all its reads succeed and its values are plausible (profiles have
    no identification register, so this is evidence, not proof).
    """
    bus = _address(address, as_json=as_json)
    try:
        unit_ids = parse_units(units)
    except EdgeError as exc:
        _fail(as_json, str(exc))
    root = profiles or profile_root()
    try:
        candidates = list(load_profiles(root).values())
    except ProfileError as exc:
        _fail(as_json, f"{exc} (run `anju profile validate` to check every file)")
    console = Console()
    show_progress = console.is_terminal and not as_json
    try:
        with _progress(console, unit_ids, enabled=show_progress) as advance:
            hits = asyncio.run(
                scan_units(
                    bus, unit_ids, profiles=candidates, timeout_s=timeout, on_progress=advance
                )
            )
    except EdgeError as exc:
        _fail(as_json, f"{exc} (check the host and port, or the serial path and settings)")
    if as_json:
        typer.echo(json.dumps(_scan_json(bus, unit_ids, hits)))
        return
    if not hits:
        console.print(
            f"No unit of {len(unit_ids)} answered on {escape(bus.bus)}. Check the wiring, "
            "baud rate and parity, and that the devices are powered."
        )
        return
    console.print(_scan_table(bus, unit_ids, hits))
    console.print(f"Suggestions: {_SUGGESTION_BASIS}.", highlight=False)


@contextmanager
def _progress(
    console: Console, units: list[int], *, enabled: bool
) -> Iterator[Callable[[int, ScanHit | None], None] | None]:
    """A callback that moves a progress bar on per unit, or None when disabled."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("trying unit {task.fields[unit]:>3}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("found {task.fields[found]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("scan", total=len(units), unit=units[0], found=0)
        upcoming = iter(units[1:])
        found = 0

        def advance(unit: int, hit: ScanHit | None) -> None:
            nonlocal found
            found += hit is not None
            progress.update(task, advance=1, unit=next(upcoming, unit), found=found)

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


def _fail(as_json: bool, message: str) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": message}))
        raise typer.Exit(1)
    fail(message)


def _explain(exc: EdgeError, profile: DeviceProfile, device: DeviceAddress) -> str:
    """The error, and on a second line what an installer should check next."""
    if isinstance(exc, DeviceUnreachable):
        hint = "is the device or converter powered, and the host and port (or serial path) right?"
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
    elif isinstance(exc, DeviceRejected) and exc.code == 2:
        hint = f"the device has no such register: is {profile.id} the right profile for it?"
    elif isinstance(exc, DeviceRejected) and exc.code == 3:
        hint = "the device refused the value; see its manual for the accepted range"
    else:
        return str(exc)
    return f"{exc}\n  hint: {hint}"


def _points_table(reading: DeviceReading, *, raw: bool) -> Table:
    table = Table(title="Points")
    table.add_column("point", no_wrap=True)
    table.add_column("metric", overflow="fold")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("label")
    if raw:
        table.add_column("register", no_wrap=True)
        table.add_column("raw", no_wrap=True)
    for point in reading.points:
        cells = [
            point.name + (" (writable)" if point.writable else ""),
            str(point.metric) if point.metric is not None else "-",
            _value_text(point),
            point.label or "",
        ]
        if raw:
            cells += [_register_text(point), _raw_text(point)]
        table.add_row(*(escape(cell) for cell in cells))
    return table


def _reads_table(reads: tuple[BlockRead, ...]) -> Table:
    table = Table(title="Requests (raw)")
    table.add_column("table", no_wrap=True)
    table.add_column("start", justify="right")
    table.add_column("count", justify="right")
    table.add_column("values (hex)", overflow="fold")
    table.add_column("points", overflow="fold")
    for read in reads:
        table.add_row(
            str(read.table),
            str(read.start),
            str(read.count),
            " ".join(_hex(word, read.table) for word in read.values),
            ", ".join(read.points),
        )
    return table


def _scan_table(bus: DeviceAddress, units: list[int], hits: list[ScanHit]) -> Table:
    table = Table(title=f"{len(hits)} of {len(units)} units answered on {escape(bus.bus)}")
    table.add_column("unit", justify="right")
    table.add_column("answer to HR 0")
    table.add_column("suggested profiles")
    table.add_column("not matching", overflow="fold")
    for hit in hits:
        misses = [
            f"{check.profile_id}: {check.reason}" for check in hit.checks if not check.matches
        ]
        table.add_row(
            str(hit.unit),
            escape(hit.answer),
            escape(", ".join(hit.suggestions) or "none"),
            escape("\n".join(misses)),
        )
    return table


def _value_text(point: PointValue) -> str:
    if point.type is ValueType.BOOL:
        return "true" if point.raw else "false"
    if isinstance(point.raw, float):
        text = f"{point.value:.7g}"
    else:
        text = f"{point.value:.{_decimals(point.value)}f}"
    return f"{text} {point.unit}" if point.unit else text


def _decimals(value: float) -> int:
    """Places needed to show ``value`` as probe rounded it (at most 6)."""
    for places in range(7):
        if round(value, places) == value:
            return places
    return 6


def _register_text(point: PointValue) -> str:
    text = f"{TABLE_CODES[point.table]} {point.register}"
    if len(point.raw_words) > 1:
        text += f"-{point.register + len(point.raw_words) - 1}"
    return f"{text} {point.type}"


def _raw_text(point: PointValue) -> str:
    words = " ".join(_hex(word, point.table) for word in point.raw_words)
    raw = f"{point.raw:.7g}" if isinstance(point.raw, float) else str(point.raw)
    return f"{words} -> {raw}"


def _hex(word: int, table: ModbusTable) -> str:
    return str(word) if table.is_bit_table else f"0x{word:04X}"


def _point_json(point: PointValue) -> dict[str, Any]:
    key = "bits" if point.table.is_bit_table else "registers"
    return {
        "name": point.name,
        "metric": point.metric,
        "unit": point.unit,
        "table": point.table,
        "address": point.register,
        "type": point.type,
        key: list(point.raw_words),
        "raw": point.raw,
        "value": point.value,
        "label": point.label,
        "writable": point.writable,
    }


def _reading_json(reading: DeviceReading) -> dict[str, Any]:
    return {
        "ok": True,
        "profile": reading.profile_id,
        "address": reading.address,
        "unit": reading.unit,
        "read_at": reading.read_at.isoformat(),
        "reads": [
            {
                "table": read.table,
                "start": read.start,
                "count": read.count,
                ("bits" if read.table.is_bit_table else "registers"): list(read.values),
                "points": list(read.points),
            }
            for read in reading.reads
        ],
        "points": [_point_json(point) for point in reading.points],
        "events": [
            {
                "type": event.type,
                "severity": event.severity,
                "data": msgspec.to_builtins(event.data),
            }
            for event in reading.events
        ],
        "elapsed_ms": round(reading.elapsed_s * 1000, 3),
    }


def _write_json(result: WriteResult) -> dict[str, Any]:
    return {
        "ok": True,
        "profile": result.profile_id,
        "address": result.address,
        "point": result.point,
        "requested": result.requested,
        "written": list(result.written),
        "before": _point_json(result.before),
        "after": _point_json(result.after),
        "elapsed_ms": round(result.elapsed_s * 1000, 3),
    }


def _scan_json(bus: DeviceAddress, units: list[int], hits: list[ScanHit]) -> dict[str, Any]:
    return {
        "ok": True,
        "bus": bus.bus,
        "units_tried": len(units),
        "found": [
            {
                "unit": hit.unit,
                "answer": hit.answer,
                "suggested": hit.suggestions,
                "checks": [
                    {"profile": check.profile_id, "matches": check.matches, "reason": check.reason}
                    for check in hit.checks
                ],
            }
            for hit in hits
        ],
        "suggestion_basis": _SUGGESTION_BASIS,
    }
