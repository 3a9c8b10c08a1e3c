"""Carries out commands from the cloud (docs/design.md section 3) and records them.

A command arrives on ``cmd/{id}`` and its outcome leaves on ``cmd-result/{id}``; the
uplink does the MQTT, this module decides what happens. ``CommandProcessor.handle``
always answers with an encoded ``CommandResult``, refusals included, because the cloud
waits for an answer and a silent gateway looks like a lost message.

Rules that make a command safe to deliver more than once (QoS 1 redelivery, a cloud
that retries, a gateway that restarts):

- The first verdict on an id is final, a refusal or a failure too. A repeat gets the
  same result bytes and nothing is done twice. A device timeout is final as well: the
  unlock may have reached the door and only its answer been lost, so trying again
  must be a new command with a new id, sent knowingly.
- Results are kept, in memory and in the audit log, until the command's expiry plus
  the allowed clock skew; after that a repeat is refused as expired anyway. Commands
  that live longer than ``CommandLimits.max_lifetime_s`` are refused, which bounds
  both memory and how stale an unlock can be.
- A command that changes something (unlock, alarm reset, config reload or apply) is
  not carried out unless its ``started`` line is on disk first: a door unlock is a
  security act and must never go unrecorded. A restart that finds a ``started`` line without an
  outcome records the command as interrupted and answers repeats with that.
- A command runs to its end in a task of its own: cancelling the caller of ``handle``
  (the uplink does on a reconnect) does not cut off an unlock half way, and a repeat
  that arrives meanwhile waits for the same result. Only ``close`` (the gateway
  stopping) cuts commands off; the next start then records them as interrupted.
- Expiry is checked again after the ``started`` line is on disk, and carrying out a
  command that changes something ends at its expiry at the latest: a door does not
  open after the moment the cloud said the unlock stops making sense.

``apply_config`` carries a pushed device config (``edge/pushed_config.py``). The
processor checks the arguments and asks its ``ConfigTarget`` (the agent) to judge the
document before the ``started`` line and to apply it after; a document the gateway
will never run is refused with ``data.invalid`` true, which tells the cloud to stop
sending that version, while every other failure (expired, a fire alarm on, a disk
that refuses) leaves ``invalid`` out: the cloud may try again with a new id.

``read_device`` is an installer's test through the running gateway: every point of
one device read once, through the bus the agent already runs for it
(``DeviceActions.read_all``), so the read waits its turn behind the poller's requests
and a shared RS-485 line never has two masters. It changes nothing, so like ``ping``
and ``scan`` it needs no ``started`` line. Its data holds one ``point.{name}`` key per
point (the engineering value: ``raw * scale + offset``, rounded to the resolution the
profile gives it; text as text) and ``elapsed_ms``; the ``point.`` prefix keeps a
point called ``elapsed_ms`` or ``fault`` from clashing with the keys about the read. A
device that does not answer is a failure (``ok`` false) with the error in ``detail``
and its kind (``timeout``, ``unreachable``, ``disconnected``, ``exception``...) in
``data.fault``; an unknown device, or one on a streaming bus, is refused.

Each delivery, and the ``started`` line of a command that changes something, is
recorded in the audit log, ``commands.jsonl`` in the state directory; its format,
fsync and rotation are in ``edge/audit.py``. This module reads it at start to keep the
results it still holds and to record the commands a restart cut off, and a rotation
starts the new log with the lines of those results.

Errors (all ``EdgeError``; AuditError, for an audit log that cannot be read or written,
is in ``edge/audit.py``):

CommandError
└── CommandRefused   a command that is not carried out; ``handle`` turns it into a result
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import msgspec

from edge.actions import ActionError, DeviceActions
from edge.addresses import DeviceAddress, parse_address
from edge.audit import AuditError, AuditLine, AuditLog, Outcome, StoredLine, encode_line
from edge.drivers.contract import Driver, DriverOptions, ScanHit
from edge.drivers.registry import driver_for
from edge.errors import DeviceError, EdgeError
from edge.inspection import resolution_decimals
from edge.normalise import engineering_value
from edge.pushed_config import ConfigNotNow, ConfigRefused, DeviceChanges, PushedConfig
from schemas.errors import SchemaError, WireError
from schemas.profile import Action, ActionName, DeviceProfile
from schemas.wire import (
    READ_POINT_PREFIX,
    ArgValue,
    Command,
    CommandName,
    CommandResult,
    decode,
    encode,
)

log = logging.getLogger(__name__)

AUDIT_FILE = "commands.jsonl"
"""The audit log's name inside the gateway's ``state_dir``."""

ALL_UNITS = "1-247"

Reload = Callable[[], Awaitable[str]]
"""Re-reads the gateway config and returns a one-line summary; raises EdgeError or
SchemaError (ConfigError, ProfileError) for a config it cannot use."""

Data = dict[str, ArgValue]


class ConfigTarget(Protocol):
    """What ``apply_config`` works on: the agent, which runs the devices."""

    @property
    def config_version(self) -> int:
        """The pushed config version running; 0 for the config file's own devices."""

    @property
    def device_count(self) -> int:
        """How many devices the gateway runs."""

    def check_config(self, version: int, document: bytes) -> PushedConfig:
        """Judge a pushed document without touching a device.

        Raises ConfigRefused (never runnable) or ConfigNotNow (not at the moment).
        """

    async def apply_config(self, pushed: PushedConfig) -> DeviceChanges:
        """Store ``pushed`` and run it in place of the running config.

        Raises ConfigRefused (a driver refuses a bus), ConfigNotNow, or OSError (the
        document could not be stored); the running config is untouched then.
        """


class CommandError(EdgeError):
    """Base of the errors of this module."""


class CommandRefused(CommandError):
    """A command that is not carried out; ``reason`` is what the cloud is told, with
    ``data`` in the result."""

    def __init__(self, reason: str, data: Data | None = None) -> None:
        self.reason = reason
        self.data: Data = data or {}
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class CommandLimits:
    """Policy and time bounds of command handling.

    ``max_skew_s``: how far ``issued_at`` may lie ahead of the gateway clock, and how
    long past expiry a result is still kept (so a clock stepped back does not revive
    a forgotten id). ``max_lifetime_s`` is the longest a command may live from
    ``issued_at`` to ``expires_at``. ``max_unlock_s`` bounds the ``seconds`` a remote
    unlock may ask for (the reference controller's pulse register takes at most 255).
    ``run_timeout_s`` bounds carrying out one command (a hung device or reload must not
    hold a repeat waiting for ever). ``scan_unit_s`` is the wait per silent unit,
    ``scan_max_s`` the longest a scan runs before it answers with what it found so
    far. ``audit_timeout_s`` bounds one audit write and fsync. ``audit_rotate_lines``
    and ``audit_rotate_bytes``: the size past which the audit log is rotated at start,
    ``audit_generations`` how many rotated files are kept.
    """

    max_skew_s: float = 30.0
    max_lifetime_s: float = 86_400.0
    max_unlock_s: int = 255
    run_timeout_s: float = 30.0
    scan_unit_s: float = 0.5
    scan_max_s: float = 120.0
    audit_timeout_s: float = 10.0
    audit_rotate_lines: int = 10_000
    audit_rotate_bytes: int = 5_000_000
    audit_generations: int = 5

    @property
    def longest_handle_s(self) -> float:
        """The longest ``CommandProcessor.handle`` takes under these limits.

        The slowest command (a scan: ``run_timeout_s`` + ``scan_max_s``) plus its
        ``started`` line, its outcome line, and one more audit write it may queue
        behind; a repeat waits as long. A caller that cuts ``handle`` off sooner
        answers before the command has its result.
        """
        return self.run_timeout_s + self.scan_max_s + 3 * self.audit_timeout_s


@dataclass(frozen=True, slots=True)
class _Done:
    ok: bool
    detail: str
    data: Data


@dataclass(frozen=True, slots=True)
class _Kept:
    result: bytes
    until: datetime


_Run = Callable[[], Awaitable[_Done]]

_ARGS: dict[CommandName, frozenset[str]] = {
    CommandName.UNLOCK_DOOR: frozenset({"seconds"}),
    CommandName.RESET_ALARM: frozenset(),
    CommandName.RELOAD_CONFIG: frozenset(),
    CommandName.PING: frozenset(),
    CommandName.SCAN: frozenset({"bus", "units"}),
    CommandName.APPLY_CONFIG: frozenset({"version", "document"}),
    CommandName.READ_DEVICE: frozenset(),
}
_NEEDS_DEVICE = frozenset(
    {CommandName.UNLOCK_DOOR, CommandName.RESET_ALARM, CommandName.READ_DEVICE}
)
_CHANGES_SOMETHING = frozenset(
    {
        CommandName.UNLOCK_DOOR,
        CommandName.RESET_ALARM,
        CommandName.RELOAD_CONFIG,
        CommandName.APPLY_CONFIG,
    }
)
_NO_RESULT = msgspec.Raw(b"null")
_INTERRUPTED = (
    "interrupted: the gateway stopped while carrying it out; whether it took effect is "
    "unknown (send a new command with a new id to try again)"
)
_REPEATED = "seen before: the first result was sent again, nothing was done"


def _applied(running: int, requested: int, *, applied: bool, devices: int) -> Data:
    """The data of an ok ``apply_config`` result (before the device ids are added)."""
    return {
        "version": running,
        "requested": requested,
        "applied": applied,
        "devices": devices,
        "added": "",
        "removed": "",
        "changed": "",
    }


def _invalid(running: int, requested: int) -> Data:
    """The data of a document refused for good: the cloud stops sending that version."""
    return {"version": running, "requested": requested, "invalid": True}


def _elapsed_ms(started: float) -> int:
    """Whole milliseconds since ``started`` (a ``time.perf_counter`` reading)."""
    return round((time.perf_counter() - started) * 1000)


def _point_values(profile: DeviceProfile, sample: Mapping[str, ArgValue]) -> Data:
    """``point.{name}``: each point's engineering value, in the profile's order.

    Numbers are rounded to the resolution the point's scale and offset give (0.01 for
    a scale of 0.01), so 21.5 °C reads 21.5 rather than 21.500000000000004.
    """
    values: Data = {}
    for point in profile.points:
        if point.name not in sample:
            continue
        raw = sample[point.name]
        value = engineering_value(point, raw)
        if isinstance(value, float) and not isinstance(raw, float):
            value = round(value, resolution_decimals(point))
        values[READ_POINT_PREFIX + point.name] = value
    return values


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class CommandProcessor:
    """Decides and carries out the commands addressed to one gateway.

    ``actions`` performs unlocks and alarm resets on the agent's devices; ``reload``
    re-reads the config; ``config`` judges and applies pushed configs (without it
    ``apply_config`` is refused); ``profiles`` are the candidates a scan suggests; a scan of a
    serial bus in ``polled_buses`` (``DeviceAddress.bus`` names) is refused, because a
    second master on an RS-485 line garbles the poller's frames and its own; a TCP bus
    is scanned over a connection of the scan's own, beside the poller's. ``clock``
    returns an aware UTC datetime; ``ping`` reports the uptime since construction.

    The constructor creates the audit log's folder and reads the log, so results kept
    before a restart are answered again instead of carried out again; it raises
    AuditError if the log cannot be read. Unreadable lines (a line torn by a power
    cut) are skipped and counted in ``unreadable_audit_lines``.
    """

    def __init__(
        self,
        gateway: str,
        actions: DeviceActions,
        *,
        reload: Reload,
        audit_path: Path,
        agent_version: str,
        profiles: Iterable[DeviceProfile] = (),
        polled_buses: Collection[str] = (),
        config: ConfigTarget | None = None,
        clock: Callable[[], datetime] = _utc_now,
        limits: CommandLimits = CommandLimits(),
    ) -> None:
        self._gateway = gateway
        self._actions = actions
        self._reload = reload
        self._audit = AuditLog(
            audit_path,
            timeout_s=limits.audit_timeout_s,
            rotate_lines=limits.audit_rotate_lines,
            rotate_bytes=limits.audit_rotate_bytes,
            generations=limits.audit_generations,
        )
        self._agent_version = agent_version
        self._profiles = list(profiles)
        self._polled_buses = frozenset(polled_buses)
        self._config = config
        self._clock = clock
        self._limits = limits
        self._started_monotonic = time.monotonic()
        self._kept: dict[str, _Kept] = {}
        self._running: dict[str, asyncio.Task[bytes]] = {}
        self._commands: dict[CommandName, Callable[[Command], _Run]] = {
            CommandName.UNLOCK_DOOR: self._unlock_door,
            CommandName.RESET_ALARM: self._reset_alarm,
            CommandName.RELOAD_CONFIG: self._reload_config,
            CommandName.PING: self._ping,
            CommandName.SCAN: self._scan,
            CommandName.APPLY_CONFIG: self._apply_config,
            CommandName.READ_DEVICE: self._read_device,
        }
        self.outcomes: Counter[Outcome] = Counter()
        self.audit_failures = 0
        self.internal_errors = 0
        self._load()

    def devices_changed(
        self,
        actions: DeviceActions,
        profiles: Iterable[DeviceProfile],
        polled_buses: Collection[str],
    ) -> None:
        """Take the devices, profiles and buses of a config applied in place."""
        self._actions = actions
        self._profiles = list(profiles)
        self._polled_buses = frozenset(polled_buses)

    @property
    def kept(self) -> int:
        """How many command ids are remembered with their result."""
        return len(self._kept)

    @property
    def unreadable_audit_lines(self) -> int:
        """How many audit log lines the start skipped as unreadable."""
        return self._audit.unreadable_lines

    async def handle(self, command_id: str, payload: bytes) -> bytes:
        """Decide, carry out and audit one command; returns the encoded CommandResult.

        ``command_id`` is the id from the ``cmd/{id}`` topic. Never raises for bad
        input: a malformed payload, an id that differs from the topic's, an expired
        or future command, an unknown device or action, bad arguments, and device
        faults all come back as a result with ``ok`` false and the reason in
        ``detail``. A repeat of a kept id returns the kept bytes, also while the first
        delivery is still running.

        The command runs in a task of its own, shielded from the caller: cancelling
        ``handle`` raises CancelledError in the caller, but a command already under
        way runs to its end, keeps and audits its result, and a repeat of the id gets
        that result (``close`` is what stops commands).
        """
        now = self._clock()
        self._forget(now)
        try:
            command = decode(payload, Command)
        except WireError as exc:
            return await self._refuse_unkept(command_id, f"malformed command: {exc.reason}")
        if command.id != command_id:
            return await self._refuse_unkept(
                command_id,
                f"the payload's id {command.id!r} differs from the topic's {command_id!r}",
                command,
            )
        kept = self._kept.get(command.id)
        if kept is not None:
            line = self._line(command, Outcome.REPEAT, _REPEATED, kept.result)
            await self._audit_quietly(line)
            self.outcomes[Outcome.REPEAT] += 1
            return kept.result
        running = self._running.get(command.id)
        if running is not None:
            return await self._join(command, running)
        task = asyncio.create_task(self._decide(command, now), name=f"command {command.id}")
        self._running[command.id] = task
        task.add_done_callback(self._ran)
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Cut off the commands still running (the gateway is stopping) and wait for them.

        Their ``started`` lines stay without an outcome, so the next start records them
        as interrupted; their callers get CancelledError or an interrupted result.
        """
        running = list(self._running.values())
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)

    def _ran(self, task: asyncio.Task[bytes]) -> None:
        """Forget a finished command task; its result is in ``_kept`` by now."""
        for command_id, running in list(self._running.items()):
            if running is task:
                del self._running[command_id]
        if not task.cancelled() and task.exception() is not None:
            # Nobody may be awaiting it any more (the caller was cancelled).
            self.internal_errors += 1
            log.error("command task %s failed", task.get_name(), exc_info=task.exception())

    # -- deciding ----------------------------------------------------------------------

    async def _decide(self, command: Command, now: datetime) -> bytes:
        try:
            self._check_times(command, now)
            self._check_shape(command)
            run = self._commands[command.name](command)
        except CommandRefused as exc:
            done = _Done(False, exc.reason, exc.data)
            return await self._finish(command, Outcome.REFUSED, done)
        timeout_s = self._time_limit(command.name)
        timeout_detail = f"did not finish within {timeout_s:g} s"
        if command.name in _CHANGES_SOMETHING:
            try:
                await self._audit.write(self._line(command, Outcome.STARTED, "", None))
            except AuditError as exc:
                done = _Done(False, f"not carried out: {exc}", {})
                return await self._finish(command, Outcome.REFUSED, done)
            # The fsync may have taken seconds: an act must not start after its expiry,
            # nor go on past it (waiting for the bus, or for a slow device).
            now = self._clock()
            left_s = (command.expires_at - now).total_seconds()
            if left_s <= 0:
                detail = (
                    f"not carried out: expired at {_iso(command.expires_at)} before it could "
                    f"start (gateway time {_iso(now)})"
                )
                return await self._finish(command, Outcome.REFUSED, _Done(False, detail, {}))
            if left_s < timeout_s:
                timeout_s = left_s
                timeout_detail = (
                    f"did not finish by its expiry at {_iso(command.expires_at)} "
                    f"({left_s:.3g} s after it started); whether it took effect is unknown"
                )
        try:
            async with asyncio.timeout(timeout_s):
                done = await run()
        except TimeoutError:
            done = _Done(False, timeout_detail, {})
        except (EdgeError, SchemaError, OSError) as exc:
            done = _Done(False, str(exc), {})
        except Exception as exc:
            # The outer boundary of one command: whatever went wrong, the cloud gets an
            # answer and the audit log an outcome for an act that may have happened.
            self.internal_errors += 1
            log.exception("command %s (%s) failed unexpectedly", command.id, command.name)
            done = _Done(False, f"internal error: {type(exc).__name__}: {exc}", {})
        return await self._finish(command, Outcome.OK if done.ok else Outcome.FAILED, done)

    def _time_limit(self, name: CommandName) -> float:
        """How long carrying out ``name`` may take; a scan stops itself at ``scan_max_s``."""
        limits = self._limits
        return limits.run_timeout_s + (limits.scan_max_s if name is CommandName.SCAN else 0.0)

    def _check_times(self, command: Command, now: datetime) -> None:
        limits = self._limits
        if command.expires_at <= now:
            raise CommandRefused(
                f"expired at {_iso(command.expires_at)} (gateway time {_iso(now)})"
            )
        ahead_s = (command.issued_at - now).total_seconds()
        if ahead_s > limits.max_skew_s:
            raise CommandRefused(
                f"issued at {_iso(command.issued_at)}, {ahead_s:.0f} s ahead of gateway time "
                f"{_iso(now)}; the allowed clock skew is {limits.max_skew_s:g} s, so check "
                "the clocks of the cloud and the gateway"
            )
        lifetime_s = (command.expires_at - command.issued_at).total_seconds()
        if lifetime_s <= 0:
            raise CommandRefused(
                f"expires_at {_iso(command.expires_at)} is not after "
                f"issued_at {_iso(command.issued_at)}"
            )
        if lifetime_s > limits.max_lifetime_s:
            raise CommandRefused(
                f"lives {lifetime_s:.0f} s from issued_at to expires_at; this gateway takes "
                f"commands that live at most {limits.max_lifetime_s:g} s"
            )

    def _check_shape(self, command: Command) -> None:
        name = command.name
        if name in _NEEDS_DEVICE and command.device is None:
            raise CommandRefused(f"{name} needs a device")
        if name not in _NEEDS_DEVICE and command.device is not None:
            raise CommandRefused(f"{name} takes no device (got {command.device!r})")
        unknown = sorted(set(command.args) - _ARGS[name])
        if unknown:
            takes = ", ".join(sorted(_ARGS[name])) or "no arguments"
            raise CommandRefused(f"{name} has no argument {', '.join(unknown)} (it takes {takes})")

    def _device_action(self, command: Command, name: ActionName) -> tuple[str, Action]:
        assert command.device is not None, "_check_shape requires a device"
        try:
            return command.device, self._actions.action(command.device, name)
        except ActionError as exc:
            raise CommandRefused(f"{command.name}: {exc}") from None

    # -- the commands ------------------------------------------------------------------

    def _unlock_door(self, command: Command) -> _Run:
        device_id, action = self._device_action(command, ActionName.UNLOCK)
        seconds = self._unlock_seconds(command, device_id, action)

        async def run() -> _Done:
            performed = await self._actions.perform(device_id, ActionName.UNLOCK, value=seconds)
            data: Data = {"seconds": int(seconds) if seconds.is_integer() else seconds}
            data["point"] = performed.point
            return _Done(True, f"unlocked {device_id} for {seconds:g} s", data)

        return run

    def _unlock_seconds(self, command: Command, device_id: str, action: Action) -> float:
        """The pulse length: the profile's value, or ``seconds`` checked against the point.

        The limit ``max_unlock_s`` applies to the requested value only; the profile's
        own value is the installer's choice.
        """
        if "seconds" not in command.args:
            return action.value
        value = command.args["seconds"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CommandRefused(f"unlock_door: seconds must be a number, not {value!r}")
        limit = self._limits.max_unlock_s
        if not 1 <= value <= limit:
            raise CommandRefused(f"unlock_door: seconds must be 1-{limit}, not {value:g}")
        if value != int(value):
            raise CommandRefused(f"unlock_door: seconds must be whole, not {value:g}")
        return float(value)

    def _reset_alarm(self, command: Command) -> _Run:
        device_id, _ = self._device_action(command, ActionName.RESET_ALARM)

        async def run() -> _Done:
            performed = await self._actions.perform(device_id, ActionName.RESET_ALARM)
            detail = f"reset sent to {device_id} ({performed.point} = {performed.value:g})"
            return _Done(True, detail, {"point": performed.point})

        return run

    def _reload_config(self, command: Command) -> _Run:
        async def run() -> _Done:
            return _Done(True, await self._reload(), {})

        return run

    def _ping(self, command: Command) -> _Run:
        async def run() -> _Done:
            uptime_s = round(time.monotonic() - self._started_monotonic, 3)
            data: Data = {
                "agent_version": self._agent_version,
                "uptime_s": uptime_s,
                "config_version": self._config.config_version if self._config else 0,
            }
            return _Done(True, "pong", data)

        return run

    def _read_device(self, command: Command) -> _Run:
        """Refuse a device the agent lacks or cannot read on request now; read it in the run."""
        assert command.device is not None, "_check_shape requires a device"
        device_id = command.device
        try:
            device = self._actions.polled(device_id)
        except ActionError as exc:
            raise CommandRefused(f"read_device: {exc}") from None
        profile = device.profile

        async def run() -> _Done:
            started = time.perf_counter()
            try:
                sample = await self._actions.read_all(device_id)
            except DeviceError as exc:
                elapsed_ms = _elapsed_ms(started)
                detail = f"{device_id} did not answer: {exc}"
                return _Done(False, detail, {"fault": exc.kind, "elapsed_ms": elapsed_ms})
            elapsed_ms = _elapsed_ms(started)
            data = _point_values(profile, sample)
            data["elapsed_ms"] = elapsed_ms
            detail = f"read {len(sample)} points of {device_id} in {elapsed_ms} ms"
            return _Done(True, detail, data)

        return run

    def _apply_config(self, command: Command) -> _Run:
        """Judge the pushed document now (a refusal needs no ``started`` line); apply it
        in the run. A version not above the running one is answered, not applied."""
        target = self._config
        if target is None:
            raise CommandRefused("apply_config: this gateway takes no pushed config")
        version = command.args.get("version")
        document = command.args.get("document")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CommandRefused(
                f"apply_config: version must be a whole number >= 1, not {version!r}"
            )
        if not isinstance(document, str):
            raise CommandRefused("apply_config: document must be the config document as JSON text")
        running = target.config_version
        if version <= running:

            async def answer() -> _Done:
                data = _applied(running, version, applied=False, devices=target.device_count)
                return _Done(True, f"already runs version {running}; nothing done", data)

            return answer
        try:
            pushed = target.check_config(version, document.encode())
        except ConfigRefused as exc:
            raise CommandRefused(str(exc), _invalid(running, version)) from None
        except ConfigNotNow as exc:
            raise CommandRefused(str(exc), {"version": running, "requested": version}) from None

        async def run() -> _Done:
            try:
                changes = await target.apply_config(pushed)
            except ConfigRefused as exc:
                return _Done(False, str(exc), _invalid(target.config_version, version))
            except ConfigNotNow as exc:
                data: Data = {"version": target.config_version, "requested": version}
                return _Done(False, str(exc), data)
            devices = len(pushed.config.devices)
            data = _applied(version, version, applied=True, devices=devices)
            data.update(
                added=",".join(changes.added),
                removed=",".join(changes.removed),
                changed=",".join(changes.changed),
            )
            detail = f"applied version {version}: {devices} devices ({changes.summary()})"
            return _Done(True, detail, data)

        return run

    def _scan(self, command: Command) -> _Run:
        bus_arg = command.args.get("bus")
        candidates_arg = command.args.get("units", ALL_UNITS)
        if not isinstance(bus_arg, str):
            raise CommandRefused(
                "scan needs a bus: an address URL such as modbus-tcp://HOST:PORT, or the id "
                "of a device on the bus"
            )
        if not isinstance(candidates_arg, str):
            raise CommandRefused(
                f"scan: units must be a list such as 1-10,15, not {candidates_arg!r}"
            )
        address = self._scan_address(bus_arg)
        try:
            driver = driver_for(address.protocol)
        except EdgeError as exc:
            raise CommandRefused(f"scan: {exc}") from None
        if not driver.scan_needs_address:
            raise CommandRefused(
                f"scan: the {driver.name} driver listens on the gateway's adapter, which the "
                f"agent holds; scan on site with the agent stopped (anju device scan {driver.name})"
            )
        try:
            candidates = driver.candidates(candidates_arg)
        except EdgeError as exc:
            raise CommandRefused(f"scan: {exc}") from None

        async def run() -> _Done:
            return await self._run_scan(driver, address, candidates, candidates_arg)

        return run

    def _scan_address(self, bus: str) -> DeviceAddress:
        """The bus to scan: a URL, or the bus of one of the gateway's devices.

        A bus the agent runs is refused unless it is a network endpoint (which the scan
        reaches over a connection of its own): named by a device id it always is, named
        by URL when it is one of ``polled_buses``. A second master on a serial line
        garbles the agent's frames and its own.
        """
        by_device = "://" not in bus
        try:
            address = self._actions.device(bus).address if by_device else parse_address(bus)
        except EdgeError as exc:
            raise CommandRefused(f"scan: {exc}") from None
        in_use = by_device or address.bus in self._polled_buses
        if in_use and not address.bus.startswith("tcp://"):
            raise CommandRefused(
                f"scan: this gateway polls {address.bus}, and a second master on a serial "
                "line garbles both; scan it on site with the agent stopped (anju device scan)"
            )
        return address

    async def _run_scan(
        self, driver: Driver, address: DeviceAddress, candidates: list[str], asked: str
    ) -> _Done:
        hits: list[tuple[str, ScanHit]] = []
        last = ""

        def progress(candidate: str, hit: ScanHit | None) -> None:
            nonlocal last
            last = candidate
            if hit is not None:
                hits.append((candidate, hit))

        limit_s = self._limits.scan_max_s
        finished = True
        try:
            async with asyncio.timeout(limit_s):
                await driver.scan(
                    address,
                    candidates,
                    self._profiles,
                    DriverOptions(timeout_s=self._limits.scan_unit_s),
                    progress,
                )
        except TimeoutError:
            finished = False
        data: Data = {
            "bus": address.bus,
            "units": asked,
            "found": ",".join(candidate for candidate, _ in hits),
            "suggested": ";".join(
                f"{candidate}={'|'.join(hit.suggestions)}"
                for candidate, hit in hits
                if hit.suggestions
            ),
        }
        if not finished:
            detail = f"stopped after {limit_s:g} s at {last}; data holds what was found"
            return _Done(False, detail, data)
        answered = f"{len(hits)} of {len(candidates)} answered on {address.bus}"
        return _Done(True, answered, data)

    # -- results, repeats and the audit log ------------------------------------------

    async def _join(self, command: Command, running: asyncio.Task[bytes]) -> bytes:
        """Wait for the first delivery of ``command`` and answer with its result."""
        wait_s = self._time_limit(command.name) + self._limits.audit_timeout_s * 2
        try:
            async with asyncio.timeout(wait_s):
                result = await asyncio.shield(running)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            result = self._result(command.id, _Done(False, _INTERRUPTED, {}))
        except TimeoutError:
            detail = f"still running after {wait_s:g} s; its result follows"
            result = self._result(command.id, _Done(False, detail, {}))
        await self._audit_quietly(self._line(command, Outcome.REPEAT, _REPEATED, result))
        self.outcomes[Outcome.REPEAT] += 1
        return result

    def _result(self, command_id: str, done: _Done) -> bytes:
        return encode(
            CommandResult(
                id=command_id,
                gateway=self._gateway,
                ok=done.ok,
                detail=done.detail,
                data=done.data,
                finished_at=self._clock(),
            )
        )

    async def _finish(self, command: Command, outcome: Outcome, done: _Done) -> bytes:
        result = self._result(command.id, done)
        self._kept[command.id] = _Kept(result, self._kept_until(command))
        self.outcomes[outcome] += 1
        log.info(
            "command %s %s%s: %s %s",
            command.id,
            command.name,
            f" {command.device}" if command.device else "",
            outcome,
            done.detail,
        )
        await self._audit_quietly(self._line(command, outcome, done.detail, result))
        return result

    async def _refuse_unkept(
        self, command_id: str, reason: str, command: Command | None = None
    ) -> bytes:
        """Refuse a payload that cannot be trusted to name its command; nothing is kept."""
        result = self._result(command_id, _Done(False, reason, {}))
        self.outcomes[Outcome.REFUSED] += 1
        log.warning("command %s refused: %s", command_id, reason)
        line = AuditLine(
            at=self._clock(),
            id=command_id,
            name=command.name if command else None,
            device=command.device if command else None,
            args=dict(command.args) if command else {},
            outcome=Outcome.REFUSED,
            detail=reason,
            kept_until=None,
            result=msgspec.Raw(result),
        )
        await self._audit_quietly(line)
        return result

    def _kept_until(self, command: Command) -> datetime:
        return command.expires_at + timedelta(seconds=self._limits.max_skew_s)

    def _forget(self, now: datetime) -> None:
        for command_id in [key for key, kept in self._kept.items() if kept.until <= now]:
            del self._kept[command_id]

    def _line(
        self, command: Command, outcome: Outcome, detail: str, result: bytes | None
    ) -> AuditLine:
        return AuditLine(
            at=self._clock(),
            id=command.id,
            name=command.name,
            device=command.device,
            args=dict(command.args),
            outcome=outcome,
            detail=detail,
            kept_until=self._kept_until(command),
            result=_NO_RESULT if result is None else msgspec.Raw(result),
        )

    async def _audit_quietly(self, line: AuditLine) -> None:
        """Write a line recording what already happened; a failure is logged and counted.

        The result stands whether or not its line reaches the disk: the act is done,
        and the cloud still needs to hear about it.
        """
        try:
            await self._audit.write(line)
        except AuditError as exc:
            self.audit_failures += 1
            log.error("%s; lost line: %s", exc, encode_line(line).decode())

    def _load(self) -> None:
        """Keep the results the log still holds; record commands cut off by a restart.

        The lines of the results kept are the ones a rotation carries into the new log.
        """
        snapshot = self._audit.read()
        now = self._clock()
        started: dict[str, AuditLine] = {}
        verdicts: dict[str, StoredLine] = {}
        for stored in snapshot.lines:
            line = stored.line
            if line.kept_until is None or line.kept_until <= now:
                continue
            if line.outcome is Outcome.STARTED:
                started[line.id] = line
            elif line.outcome is not Outcome.REPEAT:
                started.pop(line.id, None)
                self._kept[line.id] = _Kept(bytes(line.result), line.kept_until)
                verdicts[line.id] = stored
        added: list[AuditLine] = []
        for command_id, line in started.items():
            if command_id in self._kept or line.kept_until is None:
                continue
            result = self._result(command_id, _Done(False, _INTERRUPTED, {}))
            self._kept[command_id] = _Kept(result, line.kept_until)
            interrupted = msgspec.structs.replace(
                line,
                at=now,
                outcome=Outcome.FAILED,
                detail=_INTERRUPTED,
                result=msgspec.Raw(result),
            )
            added.append(interrupted)
            log.warning("command %s (%s) was interrupted by a restart", command_id, line.name)
        self._audit.resume(snapshot, verdicts.values(), added)
