"""``anju provision check``: is this gateway box ready, and if not, what to fix.

One row per check, each ``pass``, ``warn``, ``fail`` or ``skip`` with what was found
and, when it is not a pass, the fix:

- config: the gateway config loads, and only its owner may read it (it holds the
  broker password);
- broker: a TLS connection with the config's credentials, under a client id of its
  own (``anju-check-...``), so the running agent's session is left alone;
- clock: the box's clock against the cloud's (``GET /health`` ``time``), at most
  ``CLOCK_LIMIT_S`` apart: readings without a device time carry the box's;
- one row per device: one read of every point through its profile, as ``anju device
  test`` does; the devices are the pushed config's when the cloud has pushed one
  (``state_dir/pushed-config.json``), else the file's. Devices on one bus are read
  one after another, buses at the same time;
- spool: ``state_dir`` exists, takes a written and fsynced file, and has at least
  twice ``spool_budget_mb`` free;
- config version: the pushed version the box holds against the one the cloud wants.

No check stops the others; only a config that does not load leaves nothing to check.
"""

import asyncio
import contextlib
import os
import pwd
import shutil
import ssl
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Final

import aiomqtt

from anju.api_client import (
    ApiError,
    ApiSetupError,
    CloudApi,
    api_key,
    cloud_url,
    explain,
)
from anju.commands.common import profile_root
from edge.config import DeviceConfig, GatewayConfig, load_config
from edge.drivers.contract import DriverOptions, DriverUnavailable, NotSupported
from edge.drivers.registry import driver_for
from edge.errors import (
    ConfigError,
    DeviceDisconnected,
    DeviceRejected,
    DeviceTimeout,
    DeviceUnreachable,
    EdgeError,
)
from edge.inspection import inspect_device
from edge.pushed_config import PUSHED_FILE, ConfigRefused, parse_pushed
from schemas.addressing import for_protocol
from schemas.errors import ProfileError
from schemas.profile import DeviceProfile, load_profiles

CLOCK_LIMIT_S: Final = 5.0
SPOOL_HEADROOM: Final = 2
"""Free space wanted in ``state_dir``, as a multiple of the spool's budget."""
AGENT_USER: Final = "anju"
_MB: Final = 1024 * 1024
_API_FIX: Final = (
    "is the cloud's URL right and reachable from here (--cloud, $ANJU_CLOUD_URL or cloud: "
    "in the config), and $ANJU_API_KEY a key for this community?"
)
_CONNACK: Final = {
    4: "bad user name or password",
    5: "not authorised",
    134: "bad user name or password",
    135: "not authorised",
    136: "server unavailable",
    138: "banned",
}


class Result(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckRow:
    """One check's outcome: what was checked, what was found, and the fix if it failed."""

    check: str
    result: Result
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            "check": self.check,
            "result": self.result.value,
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class _Site:
    """The config as the agent would run it: the file, and the pushed devices if any."""

    config: GatewayConfig
    profiles: dict[str, DeviceProfile]
    pushed_version: int
    pushed_problem: str


def run_checks(
    config_path: Path, *, cloud: str | None, timeout_s: float, profiles: Path | None
) -> list[CheckRow]:
    """Every check's row, in the order the module lists them."""
    return asyncio.run(_run(config_path, cloud, timeout_s, profiles))


async def _run(
    config_path: Path, cloud: str | None, timeout_s: float, profiles: Path | None
) -> list[CheckRow]:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return [
            CheckRow(
                "config",
                Result.FAIL,
                str(exc),
                "provision the box first (anju provision gateway), or fix the key named",
            )
        ]
    rows = [_config_row(config_path, config)]
    try:
        site = _site(config, profiles)
    except ProfileError as exc:
        rows.append(
            CheckRow("profiles", Result.FAIL, str(exc), "fix it: anju profile validate shows all")
        )
        return rows
    api, api_problem = _api(config, cloud, timeout_s)
    with api if api is not None else contextlib.nullcontext():
        broker, clock, devices = await asyncio.gather(
            _broker_row(config, timeout_s),
            asyncio.to_thread(_clock_row, api, api_problem),
            _device_rows(site, timeout_s),
        )
        rows += [broker, clock, *devices, _spool_row(config)]
        rows.append(await asyncio.to_thread(_version_row, api, api_problem, site))
    return rows


def _config_row(path: Path, config: GatewayConfig) -> CheckRow:
    mode = path.stat().st_mode & 0o777
    what = f"{path}: gateway {config.gateway} of {config.community}, mode {mode:04o}"
    if mode & 0o077 and config.broker_address.password:
        return CheckRow(
            "config",
            Result.WARN,
            f"{what}: others can read the broker password in it",
            f"chmod 600 {path} (owned by the user the agent runs as)",
        )
    return CheckRow("config", Result.PASS, what)


def _site(config: GatewayConfig, root: Path | None) -> _Site:
    """The devices and profiles the agent runs; raises ProfileError for a bad profile file."""
    profiles = load_profiles(root or config.profiles or profile_root())
    path = config.state_dir / PUSHED_FILE
    try:
        document = path.read_bytes()
    except FileNotFoundError:
        return _Site(config, profiles, 0, "")
    except OSError as exc:
        return _Site(config, profiles, 0, f"cannot read {path}: {exc.strerror}")
    try:
        pushed = parse_pushed(document, config, profiles)
    except ConfigRefused as exc:
        return _Site(config, profiles, 0, f"{path} is ignored: {exc.reason}")
    return _Site(pushed.config, pushed.profiles, pushed.version, "")


def _api(config: GatewayConfig, cloud: str | None, timeout_s: float) -> tuple[CloudApi | None, str]:
    """A client of the cloud, or None and why there is none (no URL, no key)."""
    try:
        return CloudApi(cloud_url(cloud, config.cloud), api_key(), timeout_s=timeout_s), ""
    except ApiSetupError as exc:
        return None, str(exc)


async def _broker_row(config: GatewayConfig, timeout_s: float) -> CheckRow:
    broker = config.broker_address
    where = broker.redacted()
    tls = None
    if broker.tls:
        tls = aiomqtt.TLSParameters(
            ca_certs=str(config.tls_ca_file) if config.tls_ca_file else None,
            certfile=str(config.tls_cert_file) if config.tls_cert_file else None,
            keyfile=str(config.tls_key_file) if config.tls_key_file else None,
        )
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=f"anju-check-{config.gateway}-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5
        if broker.version == "5"
        else aiomqtt.ProtocolVersion.V311,
        tls_params=tls,
        timeout=timeout_s,
    )
    try:
        async with asyncio.timeout(timeout_s + 1):
            async with client:
                pass
    except aiomqtt.MqttCodeError as exc:
        code = int(exc.rc) if isinstance(exc.rc, int) else getattr(exc.rc, "value", -1)
        reason = _CONNACK.get(code, str(exc))
        return CheckRow(
            "broker",
            Result.FAIL,
            f"{where} refused the connection: {reason} ({code})",
            "the credentials are out of date or revoked: anju provision rotate "
            "(a revoked gateway needs a new name: anju provision gateway)",
        )
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        return _broker_unreachable(config, where, exc)
    if not broker.tls:
        return CheckRow(
            "broker",
            Result.WARN,
            f"connected to {where}, but without TLS: the credentials cross the network in clear",
            "use the cloud's mqtts:// broker URL: anju provision rotate writes it",
        )
    how = "certificate" if config.tls_cert_file else f"password of {broker.username}"
    return CheckRow("broker", Result.PASS, f"connected to {where} over TLS with the {how}")


def _broker_unreachable(config: GatewayConfig, where: str, exc: BaseException) -> CheckRow:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        text = "no answer in time"
    if isinstance(exc, ssl.SSLError) or "certificate" in text.lower() or "ssl" in text.lower():
        ca = config.tls_ca_file or "the system's CAs"
        return CheckRow(
            "broker",
            Result.FAIL,
            f"TLS with {where} failed: {text}",
            f"the broker's certificate must be signed by {ca} and name the host in the URL; "
            "anju provision rotate writes the cloud's CA file",
        )
    return CheckRow(
        "broker",
        Result.FAIL,
        f"cannot connect to {where}: {text}",
        "check the host and port in broker:, the network and any firewall on the way "
        "(TLS uses port 8883)",
    )


def _clock_row(api: CloudApi | None, problem: str) -> CheckRow:
    if api is None:
        return CheckRow("clock", Result.SKIP, f"not compared with the cloud's: {problem}")
    before = time.time()
    try:
        health = api.health()
    except ApiError as exc:
        return CheckRow("clock", Result.FAIL, f"the cloud did not answer: {exc}", _API_FIX)
    after = time.time()
    try:
        cloud_time = datetime.fromisoformat(str(health["time"])).timestamp()
    except (KeyError, ValueError):
        return CheckRow(
            "clock", Result.SKIP, "the cloud's /health gives no time: it is an older version"
        )
    offset = (before + after) / 2 - cloud_time
    round_trip = after - before
    if abs(offset) <= CLOCK_LIMIT_S:
        return CheckRow(
            "clock",
            Result.PASS,
            f"within {abs(offset):.1f} s of the cloud's (round trip {round_trip * 1000:.0f} ms)",
        )
    way = "ahead of" if offset > 0 else "behind"
    return CheckRow(
        "clock",
        Result.FAIL,
        f"{abs(offset):.1f} s {way} the cloud's (at most {CLOCK_LIMIT_S:g} s allowed)",
        "turn on network time: sudo timedatectl set-ntp true, then timedatectl status "
        "shows 'System clock synchronized: yes'; a box without network time needs an RTC",
    )


async def _device_rows(site: _Site, timeout_s: float) -> list[CheckRow]:
    """One row per device, in the config's order; buses are read at once, the devices
    of one bus one after another (RS-485 is half duplex)."""
    devices = site.config.devices
    if not devices:
        return [
            CheckRow(
                "devices",
                Result.WARN,
                "no devices configured or pushed",
                "register them in the cloud: anju device add|import --gateway "
                f"{site.config.gateway}",
            )
        ]
    rows: dict[str, CheckRow] = {}
    by_bus: dict[str, list[DeviceConfig]] = defaultdict(list)
    for device in devices:
        try:
            by_bus[device.parsed_address.bus].append(device)
        except EdgeError as exc:
            rows[device.id] = CheckRow(f"device {device.id}", Result.FAIL, str(exc), "")

    async def read_bus(members: list[DeviceConfig]) -> None:
        for device in members:
            rows[device.id] = await _device_row(site, device, timeout_s)

    async with asyncio.TaskGroup() as tasks:
        for bus, members in by_bus.items():
            tasks.create_task(read_bus(members), name=f"check {bus}")
    return [rows[device.id] for device in devices]


async def _device_row(site: _Site, device: DeviceConfig, timeout_s: float) -> CheckRow:
    check = f"device {device.id}"
    profile = site.profiles.get(device.profile)
    if profile is None:
        return CheckRow(
            check,
            Result.FAIL,
            f"no profile {device.profile!r} on this box",
            "install the profile (anju profile list shows those known), or fix the device",
        )
    address = device.parsed_address
    family = for_protocol(profile.protocol)
    if address.protocol not in family.protocols:
        schemes = " or ".join(f"{p}://" for p in sorted(family.protocols))
        return CheckRow(
            check,
            Result.FAIL,
            f"{profile.id} is a {profile.protocol} device: its address must be {schemes}, "
            f"not {address.protocol}://",
            f"correct the address: anju device move {device.id} --address URL",
        )
    try:
        driver = driver_for(profile.protocol)
        options = DriverOptions(
            timeout_s=min(timeout_s, site.config.device_timeout_s * 3),
            settings=site.config.drivers.get(driver.name, {}),
        )
        inspection = await asyncio.wait_for(
            inspect_device(driver, profile, address, options), timeout=max(timeout_s * 4, 6.0)
        )
    except NotSupported as exc:
        return CheckRow(check, Result.SKIP, f"{profile.id}: {exc}")
    except DriverUnavailable as exc:
        return CheckRow(check, Result.FAIL, str(exc), "see docs/gateway-install.md")
    except TimeoutError:
        return CheckRow(
            check, Result.FAIL, f"{address}: no answer in time", _device_fix(None, device)
        )
    except EdgeError as exc:
        return CheckRow(check, Result.FAIL, str(exc), _device_fix(exc, device))
    detail = (
        f"{profile.id} at {address}: {len(inspection.points)} points in "
        f"{inspection.elapsed_s * 1000:.0f} ms"
    )
    if inspection.events:
        detail += "; now: " + ", ".join(str(event.type) for event in inspection.events)
    return CheckRow(check, Result.PASS, detail)


def _device_fix(exc: EdgeError | None, device: DeviceConfig) -> str:
    test = f"anju device test --profile {device.profile} --address '{device.address}' --raw"
    if isinstance(exc, DeviceUnreachable):
        return f"is it (or its converter) powered and wired, the host, port or path right? {test}"
    if isinstance(exc, DeviceDisconnected):
        return f"it closed the connection: another master may hold it, or it restarted; {test}"
    if isinstance(exc, DeviceRejected):
        return f"it refused the read: is {device.profile} its profile? {test}"
    if isinstance(exc, DeviceTimeout) or exc is None:
        return (
            "no answer: check the unit id, baud rate, parity and A/B wiring "
            f"(anju device scan lists what answers); {test}"
        )
    return test


def _spool_row(config: GatewayConfig) -> CheckRow:
    folder = config.state_dir
    budget = config.spool_budget_mb
    if not folder.is_dir():
        return CheckRow(
            "spool",
            Result.FAIL,
            f"{folder} does not exist",
            f"sudo install -d -o {AGENT_USER} -g {AGENT_USER} -m 0750 {folder}",
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".anju-check-") as probe:
            probe.write(b"anju provision check")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return CheckRow(
            "spool",
            Result.FAIL,
            f"cannot write in {folder}: {exc.strerror}",
            f"sudo chown -R {AGENT_USER}: {folder}; a read-only disk needs replacing",
        )
    free_mb = shutil.disk_usage(folder).free / _MB
    detail = f"{folder}: writable, {free_mb:,.0f} MB free (spool budget {budget:g} MB)"
    if free_mb < SPOOL_HEADROOM * budget:
        return CheckRow(
            "spool",
            Result.FAIL,
            f"{detail}; needs at least {SPOOL_HEADROOM * budget:,.0f} MB",
            "free disk space, move state_dir to a larger disk, or lower spool_budget_mb",
        )
    owner = _not_agents(folder)
    if owner:
        return CheckRow(
            "spool",
            Result.WARN,
            f"{detail}; but owned by {owner}, and the agent runs as {AGENT_USER}",
            f"sudo chown -R {AGENT_USER}: {folder}",
        )
    return CheckRow("spool", Result.PASS, detail)


def _not_agents(folder: Path) -> str:
    """The owner's name when run as root on a box with the agent's user and the folder
    is not that user's ("" otherwise): root can write where the agent cannot."""
    if os.geteuid() != 0:
        return ""
    try:
        agent = pwd.getpwnam(AGENT_USER)
    except KeyError:
        return ""
    uid = folder.stat().st_uid
    if uid == agent.pw_uid:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _version_row(api: CloudApi | None, problem: str, site: _Site) -> CheckRow:
    check = "config version"
    local = site.pushed_version
    if site.pushed_problem:
        return CheckRow(
            check,
            Result.FAIL,
            f"{site.pushed_problem}; the agent runs the file's devices",
            "the cloud pushes again once the agent reports version 0: is it running and "
            "connected? (systemctl status anju-edge)",
        )
    if api is None:
        return CheckRow(check, Result.SKIP, f"runs version {local}; not compared: {problem}")
    try:
        wanted = api.gateway_config(site.config.gateway)
    except ApiError as exc:
        return CheckRow(check, Result.FAIL, explain(exc), _API_FIX)
    version = int(wanted.get("version", 0))
    if local == version:
        what = f"runs version {version}, the cloud's latest"
        if version == 0:
            what = "no devices registered in the cloud yet; the box runs its file's devices"
        return CheckRow(check, Result.PASS, what)
    if local > version:
        return CheckRow(
            check,
            Result.WARN,
            f"runs version {local}, newer than the cloud's {version}",
            "was this box provisioned as another gateway? compare gateway: in the config",
        )
    error = wanted.get("error")
    if error:
        return CheckRow(
            check,
            Result.FAIL,
            f"runs version {local}; the gateway refused version {version}: {error}",
            "fix the device the reason names (anju device move|remove), which makes a new version",
        )
    return CheckRow(
        check,
        Result.FAIL,
        f"runs version {local}, the cloud has version {version}",
        "the cloud pushes it while the agent is connected: is it running? "
        "(systemctl status anju-edge); run the check again in a minute",
    )
