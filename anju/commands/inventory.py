"""``anju device add|list|remove|move|import``: the cloud's device registry, from site.

Each device is checked here before any request, with the gateway's own rules: the id
and address parse as the gateway's config parser would parse them
(``edge.config.DeviceConfig``, ``edge.addresses``), the profile exists under the
profile root, its protocol is reached at the address's scheme (a Modbus detector is
not at a ``ble://`` address), and an egress door's profile has a ``fire_release``
action. The cloud checks again (its profiles, the resident's community, ids taken
behind another gateway), so these checks only spare the installer a round trip and
report every fault of a CSV file at once, by line and column.

A change to a gateway's devices makes the cloud a new version of that gateway's
config, which it pushes to the gateway; ``anju provision check`` on the box shows
when the gateway runs it.
"""

import csv
import difflib
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from anju.api_client import (
    CloudApi,
    cloud_session,
    config_defaults,
    fail_command,
)
from anju.commands.common import (
    DEFAULT_GATEWAY_CONFIG,
    CloudOption,
    JsonOption,
    ProfilesOption,
    SiteConfigOption,
    profile_root,
)
from edge.config import DeviceConfig
from schemas.errors import ProfileError
from schemas.profile import ActionName, DeviceProfile, load_profiles

COLUMNS: Final = (
    "id",
    "profile",
    "address",
    "building",
    "unit",
    "resident",
    "egress",
    "poll_interval_s",
)
"""The columns an import file may have, in the order a template lists them."""
REQUIRED_COLUMNS: Final = ("id", "profile", "address", "building", "unit")
_PLACE_MAX: Final = 64
_TRUE: Final = frozenset({"true", "yes", "y", "1"})
_FALSE: Final = frozenset({"false", "no", "n", "0", ""})
_API_FIELDS: Final = {"resident_id": "resident", "gateway": "gateway"}
"""The API's field names that differ from the import file's column names."""

GatewayOption = Annotated[
    str | None,
    typer.Option(
        "--gateway",
        metavar="GW",
        help="The gateway the device is wired to (default: the one of --config).",
        show_default=False,
    ),
]
LocationOption = Annotated[
    str | None,
    typer.Option(
        "--location",
        metavar="BUILDING/UNIT",
        help="Where the device is: building/unit, as 3/301; for a shared device name the "
        "place, as 3/lobby. The cloud places its incidents there, and a smoke alarm "
        "releases the egress doors of its building.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class DeviceEntry:
    """One device as the installer gives it: an ``add``'s options or an import file's row."""

    id: str
    profile: str
    address: str
    building: str
    unit: str
    resident: int | None = None
    egress: bool = False
    poll_interval_s: float | None = None

    def body(self) -> dict[str, Any]:
        """The device as the API takes it (without its gateway)."""
        return {
            "id": self.id,
            "profile": self.profile,
            "address": self.address,
            "building": self.building,
            "unit": self.unit,
            "resident_id": self.resident,
            "egress": self.egress,
            "poll_interval_s": self.poll_interval_s,
        }


@dataclass(frozen=True, order=True)
class BadRow:
    """A refused cell of an import file: its line in the file, its column and why."""

    line: int
    column: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.reason}"


@dataclass
class ImportFile:
    """An import file read and checked: each good row with its line, and every bad cell."""

    good: list[tuple[int, DeviceEntry]] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    rows: int = 0


def check_entry(entry: DeviceEntry, profiles: Mapping[str, DeviceProfile]) -> list[tuple[str, str]]:
    """Every fault of ``entry`` as (column, reason); empty when the gateway would take it.

    The id, address and poll interval go through the gateway's own config model, so
    the reasons are the ones ``anju edge run`` would give for the same entry.
    """
    problems: list[tuple[str, str]] = []
    try:
        DeviceConfig.model_validate(
            {
                "id": entry.id,
                "profile": entry.profile,
                "address": entry.address,
                "building": entry.building,
                "unit": entry.unit,
                "egress": entry.egress,
                "poll_interval_s": entry.poll_interval_s,
            }
        )
    except ValidationError as exc:
        for error in exc.errors():
            column = str(error["loc"][0]) if error["loc"] else "id"
            problems.append((column, _message(error["msg"], column)))
    if not entry.building:
        problems.append(("building", "empty: every device is placed in a building"))
    if not entry.unit:
        problems.append(
            (
                "unit",
                "empty: every device is placed in a unit (for a shared one, name the "
                "place: lobby, roof, gate)",
            )
        )
    for column, value in (("building", entry.building), ("unit", entry.unit)):
        if len(value) > _PLACE_MAX:
            problems.append((column, f"{len(value)} characters; at most {_PLACE_MAX}"))
    profile = profiles.get(entry.profile)
    if profile is None:
        problems.append(("profile", _unknown_profile(entry.profile, profiles)))
        return problems
    if not any(column == "address" for column, _ in problems):
        problems += _address_fits(entry, profile)
    if entry.egress and ActionName.FIRE_RELEASE not in profile.actions:
        problems.append(
            (
                "egress",
                f"{profile.id} has no fire_release action, so the gateway cannot release "
                "this door in a fire; use a door profile that has one, or leave egress false",
            )
        )
    return problems


def _address_fits(entry: DeviceEntry, profile: DeviceProfile) -> list[tuple[str, str]]:
    """The gateway's check that the address's scheme reaches the profile's protocol."""
    mismatch = profile.address_mismatch(entry.id, entry.address.partition("://")[0])
    return [] if mismatch is None else [("address", mismatch)]


def _unknown_profile(profile_id: str, profiles: Mapping[str, DeviceProfile]) -> str:
    close = difflib.get_close_matches(profile_id, list(profiles), n=3, cutoff=0.8)
    known = ", ".join(close or sorted(profiles)) or "none"
    return f"no profile {profile_id!r} ({'did you mean' if close else 'known'}: {known})"


def _message(msg: str, column: str) -> str:
    text = msg.removeprefix("Value error, ")
    if column == "id" and text.startswith("String should match pattern"):
        return (
            "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, "
            "at most 64 characters"
        )
    return text


def read_import_file(text: str, profiles: Mapping[str, DeviceProfile]) -> ImportFile:
    """Parse and check an import file's text; every bad cell is reported, by line.

    The header is required and names columns of ``COLUMNS`` (any order, any case);
    ``REQUIRED_COLUMNS`` must be among them. Blank lines are skipped. A header fault
    is reported on line 1 and stops there, as the rows cannot be read without it.
    """
    found = ImportFile()
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    previous_end = 0
    seen: dict[str, int] = {}
    for cells in reader:
        line, previous_end = previous_end + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in cells]
            found.bad += _header_faults(header, line)
            if found.bad:
                return found
            continue
        found.rows += 1
        if len(cells) != len(header):
            found.bad.append(
                BadRow(line, "-", f"{len(cells)} fields, but the header names {len(header)}")
            )
            continue
        row = {name: cell.strip() for name, cell in zip(header, cells, strict=True)}
        entry, faults = _entry(row)
        faults += check_entry(entry, profiles)
        first = seen.setdefault(entry.id, line)
        if first != line:
            faults.append(("id", f"{entry.id} appears again (first on line {first})"))
        if faults:
            found.bad += [BadRow(line, column, reason) for column, reason in faults]
        else:
            found.good.append((line, entry))
    if header is None:
        found.bad.append(BadRow(1, "-", f"empty file; the header line names {', '.join(COLUMNS)}"))
    return found


def _header_faults(header: list[str], line: int) -> list[BadRow]:
    faults = [
        BadRow(line, name or f"#{index + 1}", f"unknown column; allowed: {', '.join(COLUMNS)}")
        for index, name in enumerate(header)
        if name not in COLUMNS
    ]
    faults += [
        BadRow(line, name, "appears twice in the header")
        for name in sorted({name for name in header if header.count(name) > 1})
    ]
    faults += [
        BadRow(line, name, "missing: the header must name it")
        for name in REQUIRED_COLUMNS
        if name not in header
    ]
    return faults


def _entry(row: Mapping[str, str]) -> tuple[DeviceEntry, list[tuple[str, str]]]:
    """The row's typed entry and what does not convert (resident, egress, interval).

    A cell that does not convert is left at its default in the entry, so the row's
    other cells are still checked and every fault of the row is reported at once.
    """
    faults: list[tuple[str, str]] = []
    resident: int | None = None
    text = row.get("resident", "")
    if text:
        try:
            resident = int(text)
        except ValueError:
            faults.append(("resident", f"{text!r} is not a resident id (a whole number)"))
        else:
            if resident < 1:
                faults.append(("resident", f"{resident} is not a resident id (1 or more)"))
    egress_text = row.get("egress", "").lower()
    if egress_text not in _TRUE | _FALSE:
        faults.append(("egress", f"{egress_text!r}: write true or false (or leave it empty)"))
    interval: float | None = None
    text = row.get("poll_interval_s", "")
    if text:
        try:
            interval = float(text)
        except ValueError:
            faults.append(("poll_interval_s", f"{text!r} is not a number of seconds"))
    entry = DeviceEntry(
        id=row.get("id", ""),
        profile=row.get("profile", ""),
        address=row.get("address", ""),
        building=row.get("building", ""),
        unit=row.get("unit", ""),
        resident=resident,
        egress=egress_text in _TRUE,
        poll_interval_s=interval,
    )
    return entry, faults


def load_known_profiles(
    profiles: Path | None, *, as_json: bool = False
) -> dict[str, DeviceProfile]:
    """The profiles under ``profiles`` or the profile root; a bad file ends the command."""
    root = profiles or profile_root()
    try:
        return load_profiles(root)
    except ProfileError as exc:
        fail_command(as_json, f"{exc} (run `anju profile validate` to check every file)")


def _location(text: str) -> tuple[str, str]:
    building, _, unit = text.partition("/")
    return building.strip(), unit.strip()


_OPTION_OF: Final = {
    "id": "--id",
    "profile": "--profile",
    "address": "--address",
    "building": "--location",
    "unit": "--location",
    "resident": "--resident",
    "egress": "--egress",
    "poll_interval_s": "--poll-interval",
}


def device_add(
    device_id: Annotated[
        str,
        typer.Option(
            "--id",
            metavar="ID",
            help="The device's id, unique in the city: lower-case, e.g. fh-b3-smoke-0301.",
            show_default=False,
        ),
    ],
    profile_id: Annotated[
        str,
        typer.Option(
            "--profile",
            metavar="ID",
            help="Its model's profile (anju profile list).",
            show_default=False,
        ),
    ],
    address: Annotated[
        str,
        typer.Option(
            "--address",
            metavar="URL",
            help="Where the gateway reaches it: modbus-tcp://HOST:PORT?unit=N, "
            "modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=N (quote it), ble://MAC, "
            "serial:///dev/ttyS1, osdp:///dev/ttyUSB1?address=N.",
            show_default=False,
        ),
    ],
    location: LocationOption = None,
    gateway: GatewayOption = None,
    resident: Annotated[
        int | None,
        typer.Option(
            "--resident",
            metavar="N",
            min=1,
            help="The resident wearing or owning it (a band, a bedside button), by id.",
            show_default=False,
        ),
    ] = None,
    egress: Annotated[
        bool,
        typer.Option(
            "--egress",
            help="A door on an escape route: released by the gateway when a smoke detector "
            "in its building raises an alarm. Its profile needs a fire_release action.",
        ),
    ] = False,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            "--poll-interval",
            metavar="S",
            min=0.05,
            max=3600,
            help="Seconds between reads (default: the profile's).",
            show_default=False,
        ),
    ] = None,
    cloud: CloudOption = None,
    config: SiteConfigOption = DEFAULT_GATEWAY_CONFIG,
    profiles: ProfilesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a device behind its gateway, placed in a building and unit.

    Checked first on this machine against the profile, as the gateway will check it,
    then by the cloud. Adding a device already registered with the same details
    changes nothing. The cloud then pushes the gateway a new config with the device,
    and the gateway starts reading it without restarting the others.
    """
    config_gateway, config_cloud = config_defaults(config)
    gateway = _gateway(gateway or config_gateway, as_json)
    if location is None:
        fail_command(as_json, "--location BUILDING/UNIT is required: where is the device?", code=2)
    building, unit = _location(location)
    entry = DeviceEntry(
        device_id, profile_id, address, building, unit, resident, egress, poll_interval
    )
    problems = check_entry(entry, load_known_profiles(profiles, as_json=as_json))
    if problems:
        fail_command(
            as_json,
            "\n".join(f"{_OPTION_OF.get(column, column)}: {reason}" for column, reason in problems),
        )
    with cloud_session(cloud, config_cloud, as_json=as_json) as api:
        added = api.add_device({**entry.body(), "gateway": gateway})
    if as_json:
        typer.echo(json.dumps({"ok": True, "device": added}))
        return
    typer.echo(
        f"added {added['id']} ({added.get('profile_id', entry.profile)}) at {entry.address}, "
        f"{_place(added)}, behind {gateway}; the cloud pushes it to the gateway with its "
        "next config (anju provision check on the box shows the version it runs)"
    )


def device_list(
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway", metavar="GW", help="Only the devices of this gateway.", show_default=False
        ),
    ] = None,
    cloud: CloudOption = None,
    config: SiteConfigOption = DEFAULT_GATEWAY_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """List the registered devices the key reaches, with where each is.

    By id, with its gateway, profile, address, building and unit, resident, status
    and when the cloud last heard of it.
    """
    _, config_cloud = config_defaults(config)
    with cloud_session(cloud, config_cloud, as_json=as_json) as api:
        devices = list(api.devices(gateway=gateway))
    if as_json:
        typer.echo(json.dumps({"ok": True, "devices": devices}))
        return
    if not devices:
        typer.echo("no devices" + (f" behind {gateway}" if gateway else ""))
        return
    table = Table(title=f"{len(devices)} device(s)" + (f" behind {gateway}" if gateway else ""))
    for column in (
        "id",
        "gateway",
        "profile",
        "address",
        "place",
        "resident",
        "status",
        "last seen",
    ):
        table.add_column(column, overflow="fold")
    for device in devices:
        resident = device.get("resident_id")
        status = str(device.get("status", ""))
        if device.get("egress"):
            status += " (egress)"
        table.add_row(
            *(
                escape(cell)
                for cell in (
                    str(device["id"]),
                    str(device.get("gateway_id", "")),
                    str(device.get("profile_id", "")),
                    str(device.get("address") or "-"),
                    _place(device),
                    "-" if resident is None else str(resident),
                    status,
                    str(device.get("last_seen") or "never")[:19].replace("T", " "),
                )
            )
        )
    Console().print(table)


def device_remove(
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device to remove.")],
    cloud: CloudOption = None,
    config: SiteConfigOption = DEFAULT_GATEWAY_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Take a device out of service; its history stays.

    It leaves its gateway's config, so the gateway stops reading it. Adding it again
    puts it back.
    """
    _, config_cloud = config_defaults(config)
    with cloud_session(cloud, config_cloud, as_json=as_json) as api:
        removed = api.remove_device(device_id)
    if as_json:
        typer.echo(json.dumps({"ok": True, "device": removed}))
        return
    typer.echo(
        f"removed {removed['id']} (now {removed.get('status', 'disabled')}); "
        f"{removed.get('gateway_id', 'its gateway')} stops reading it with its next config"
    )


def device_move(
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device to change.")],
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            metavar="GW",
            help="Behind this gateway now (same community).",
            show_default=False,
        ),
    ] = None,
    location: LocationOption = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            metavar="URL",
            help="Its new address (rewired, or on the new gateway's bus).",
            show_default=False,
        ),
    ] = None,
    resident: Annotated[
        int | None,
        typer.Option(
            "--resident", metavar="N", min=1, help="Now bound to this resident.", show_default=False
        ),
    ] = None,
    no_resident: Annotated[
        bool, typer.Option("--no-resident", help="Bound to no resident any more.")
    ] = False,
    cloud: CloudOption = None,
    config: SiteConfigOption = DEFAULT_GATEWAY_CONFIG,
    profiles: ProfilesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move a device to another gateway, building or unit, rebind it, or readdress it.

    Only what is given changes. A new address is checked against the device's profile
    first. Both gateways get a new config: the old one stops reading the device, the
    new one starts.
    """
    if resident is not None and no_resident:
        fail_command(
            as_json, "--resident and --no-resident contradict each other: give one", code=2
        )
    changes: dict[str, Any] = {}
    if gateway is not None:
        changes["gateway"] = gateway
    if location is not None:
        changes["building"], changes["unit"] = _location(location)
        if not (changes["building"] and changes["unit"]):
            fail_command(as_json, "--location: write BUILDING/UNIT, as 3/301 or 3/lobby", code=2)
    if address is not None:
        changes["address"] = address
    if resident is not None or no_resident:
        changes["resident_id"] = resident
    if not changes:
        fail_command(
            as_json,
            "nothing to change: give --gateway, --location, --address, --resident or --no-resident",
            code=2,
        )
    _, config_cloud = config_defaults(config)
    with cloud_session(cloud, config_cloud, as_json=as_json) as api:
        if address is not None:
            _check_new_address(api, device_id, address, profiles, as_json)
        moved = api.change_device(device_id, changes)
    if as_json:
        typer.echo(json.dumps({"ok": True, "device": moved}))
        return
    typer.echo(
        f"{moved['id']} is now behind {moved.get('gateway_id')}, {_place(moved)}"
        + (f", resident {moved['resident_id']}" if moved.get("resident_id") else "")
        + (f", at {moved['address']}" if moved.get("address") else "")
    )


def _check_new_address(
    api: CloudApi, device_id: str, address: str, profiles: Path | None, as_json: bool
) -> None:
    """Refuse ``address`` before the change when the device's profile is not reached there."""
    current = api.get_device(device_id)
    profile_id = str(current.get("profile_id", ""))
    known = load_known_profiles(profiles, as_json=as_json)
    entry = DeviceEntry(device_id, profile_id, address, building="-", unit="-")
    problems = [(c, r) for c, r in check_entry(entry, known) if c == "address"]
    if problems:
        fail_command(as_json, "\n".join(f"--address: {reason}" for _, reason in problems))


def device_import(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE.csv",
            help=f"The devices, one a row, with a header naming columns of: {', '.join(COLUMNS)} "
            f"({', '.join(REQUIRED_COLUMNS)} required).",
            exists=True,
            dir_okay=False,
        ),
    ],
    gateway: GatewayOption = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check every row, here and in the cloud; import nothing."),
    ] = False,
    skip_bad: Annotated[
        bool,
        typer.Option("--skip-bad", help="Import the good rows even if some are bad."),
    ] = False,
    cloud: CloudOption = None,
    config: SiteConfigOption = DEFAULT_GATEWAY_CONFIG,
    profiles: ProfilesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register many devices behind one gateway from a CSV file.

    Every row is checked on this machine, then by the cloud, and every bad one is
    reported at once as `line N, column C: reason` (N the file's line). Bad rows and
    neither --dry-run nor --skip-bad: nothing is imported and the command exits 1.
    --dry-run imports nothing, whatever the rows (exit 1 if any is bad). --skip-bad
    imports the good rows and lists the bad (exit 0, or 1 when no row was good).
    The gateway gets one new config with every imported device.
    """
    config_gateway, config_cloud = config_defaults(config)
    gateway = _gateway(gateway or config_gateway, as_json)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        fail_command(as_json, f"cannot read {file}: {exc}")
    checked = read_import_file(text, load_known_profiles(profiles, as_json=as_json))
    imported, config_version = 0, None
    bad = list(checked.bad)
    if checked.good:
        lines = [line for line, _ in checked.good]
        bodies = [entry.body() for _, entry in checked.good]
        # Rows bad here are never sent; when there are some, the cloud only checks the
        # others (a dry run) unless the installer asked for the good ones to go in.
        send_dry = dry_run or (bool(bad) and not skip_bad)
        with cloud_session(cloud, config_cloud, as_json=as_json) as api:
            report = api.import_devices(gateway, bodies, dry_run=send_dry, skip_bad=skip_bad)
        bad += [_cloud_bad(item, lines) for item in report.get("bad", [])]
        # A dry run's count is of the rows that would have gone in.
        imported = 0 if send_dry else int(report.get("imported", 0))
        config_version = report.get("config_version")
    bad.sort()
    ok = not bad or (skip_bad and not dry_run and imported > 0)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": ok,
                    "gateway": gateway,
                    "rows": checked.rows,
                    "imported": imported,
                    "dry_run": dry_run,
                    "bad": [asdict(row) for row in bad],
                    "config_version": config_version,
                }
            )
        )
        raise typer.Exit(0 if ok else 1)
    for row in bad:
        typer.secho(str(row), fg=typer.colors.RED, err=True)
    typer.echo(
        _import_summary(
            checked.rows,
            len({row.line for row in bad}),
            imported,
            gateway,
            dry_run=dry_run,
            skip_bad=skip_bad,
        )
    )
    raise typer.Exit(0 if ok else 1)


def _cloud_bad(item: Mapping[str, Any], lines: list[int]) -> BadRow:
    """A bad row the cloud reported, by the index of the rows sent, on its file line."""
    index = int(item.get("index", -1))
    line = lines[index] if 0 <= index < len(lines) else 0
    column = str(item.get("field") or "-")
    return BadRow(line, _API_FIELDS.get(column, column), str(item.get("reason", "refused")))


def _import_summary(
    rows: int, bad: int, imported: int, gateway: str, *, dry_run: bool, skip_bad: bool
) -> str:
    good = rows - bad
    if dry_run:
        verdict = "all good" if not bad else f"{bad} bad, {good} good"
        return f"dry run: {rows} row(s), {verdict}; nothing imported"
    if bad and not skip_bad:
        return (
            f"{bad} bad row(s) of {rows}: nothing imported. Fix them, or pass --skip-bad to "
            f"import the {good} good one(s)."
        )
    skipped = f"; skipped {bad} bad row(s)" if bad else ""
    return (
        f"imported {imported} device(s) behind {gateway}{skipped}; the cloud pushes them to "
        "the gateway with its next config"
    )


def _place(device: Mapping[str, Any]) -> str:
    building, unit = device.get("building") or "", device.get("unit") or ""
    if not building:
        return "no building"
    return f"building {building}" + (f" unit {unit}" if unit else "")


def _gateway(gateway: str | None, as_json: bool) -> str:
    if not gateway:
        fail_command(
            as_json, "which gateway? pass --gateway GW (or run on the box, with --config)", code=2
        )
    return gateway


def register(app: typer.Typer) -> None:
    """Add the registry's commands to ``anju device``, next to test, scan and write."""
    examples = {
        "add": "  anju device add --gateway gw-fh-01 --id fh-b3-smoke-0301 --profile anju-smoke-mb "
        "--address 'modbus-tcp://192.168.10.20:502?unit=1' --location 3/301\n\n"
        "  anju device add --gateway gw-fh-01 --id fh-b3-band-07 --profile anju-wearable-ble "
        "--address ble://F0:A1:00:00:00:07 --location 3/702 --resident 118\n\n"
        "  anju device add --gateway gw-fh-01 --id fh-b3-door-01 --profile anju-door-mb "
        "--address 'modbus-tcp://192.168.10.21:502?unit=2' --location 3/lobby --egress",
        "list": "  anju device list --gateway gw-fh-01\n\n  anju device list --json",
        "remove": "  anju device remove fh-b3-smoke-0301",
        "move": "  anju device move fh-b3-smoke-0301 --location 4/402\n\n"
        "  anju device move fh-b3-band-07 --resident 120\n\n"
        "  anju device move fh-b3-door-01 --gateway gw-fh-02 "
        "--address 'modbus-tcp://192.168.11.5:502?unit=2'",
        "import": "  anju device import devices.csv --gateway gw-fh-01 --dry-run\n\n"
        "  anju device import devices.csv --gateway gw-fh-01 --skip-bad\n\n"
        "A file:\n\n"
        "  id,profile,address,building,unit,resident,egress,poll_interval_s\n\n"
        "  fh-b3-smoke-0301,anju-smoke-mb,modbus-tcp://192.168.10.20:502?unit=1,3,301,,,\n\n"
        "  fh-b3-door-01,anju-door-mb,modbus-tcp://192.168.10.21:502?unit=2,3,lobby,,true,0.5\n\n"
        "  fh-b3-band-07,anju-wearable-ble,ble://F0:A1:00:00:00:07,3,702,118,,",
    }
    commands: dict[str, Callable[..., None]] = {
        "add": device_add,
        "list": device_list,
        "remove": device_remove,
        "move": device_move,
        "import": device_import,
    }
    for name, command in commands.items():
        app.command(name, epilog="Examples:\n\n" + examples[name])(command)
