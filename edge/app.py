"""Wires the gateway agent together: a bus per wire, the spool, the uplink, commands.

The only module of the agent that starts tasks. ``Agent`` is built from a validated
config and the loaded profiles, so every configuration fault is reported before any
device is touched or the spool is opened.

A config pushed by the cloud (``apply_config``, ``edge/pushed_config.py``) replaces
the devices in place: a bus whose devices and settings are the same keeps its poller
or pump running untouched (no reconnect, no gap in its readings); a bus whose devices
changed is stopped, closed and opened again; a new bus starts; a bus with no devices
left stops. Devices that stay keep their records (normaliser, seq, health); a device
new or changed continues the seq it had. The fire linkage, the device actions and the
wearable analysis follow the new device list, and their counters carry over. The new
fire linkage takes over the old one's fire (``FireLinkage.hand_over``): buildings in
alarm and door releases still being retried or repeated carry on for the devices that
stay, so a push never ends a door's release half way.
"""

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge.actions import DeviceActions
from edge.cameras.site import CameraSite
from edge.commands import AUDIT_FILE, CommandProcessor
from edge.config import GatewayConfig, check_camera_kinds
from edge.devices import AgentDevice
from edge.drivers.contract import Bus, DriverOptions, DriverUnavailable, StreamingBus
from edge.drivers.registry import driver_for
from edge.errors import ConfigError, EdgeError
from edge.local_rules import FireLinkage
from edge.metrics import EdgeCollector, build_registry, serve_metrics
from edge.normalise import DeviceNormaliser
from edge.poller import BusPoller, PolledDevice
from edge.pushed_config import (
    PUSHED_FILE,
    ConfigNotNow,
    ConfigRefused,
    DeviceChanges,
    PushedConfig,
    changes,
    load_stored,
    parse_pushed,
    store,
)
from edge.spool import Spool, SpoolError
from edge.streams import StreamPump
from edge.uplink import BrokerLogin, Uplink
from edge.wearables.analysis import WearableAnalysis
from schemas.errors import SchemaError
from schemas.profile import DeviceProfile
from schemas.vocabulary import DeviceKind, EventType
from schemas.wire import Event, Reading

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
SPOOL_FILE = "spool.sqlite3"
COMMAND_CLOSE_S = 10.0
PRODUCERS_STOP_S = 10.0
"""Longest wait for a poll (or a door release) in progress when the agent stops."""
ANALYSIS_TICK_S = 1.0
"""How often the wearable analysis looks at every band at once."""
RELOAD_GRACE_S = 1.0
"""Time for a reload command's result to go out before the agent stops to reload."""
HELD_EVENTS_MAX = 10_000
"""Events kept in memory while the spool cannot store them, retried before each add."""
_DROP_LOG_INTERVAL_S = 60.0

ConfigLoader = Callable[[], tuple[GatewayConfig, dict[str, DeviceProfile]]]
"""Reads and validates the config file again; raises ConfigError or ProfileError."""

Runner = BusPoller | StreamPump
_LINKAGE = "fire linkage"
_ANALYSIS = "wearable analysis"


@dataclass
class _Site:
    """The device side of one config: its buses and their runners, the devices no
    driver here can run, the actions on them and the fire linkage over them."""

    config: GatewayConfig
    profiles: dict[str, DeviceProfile]
    pollers: list[BusPoller] = field(default_factory=list)
    pumps: list[StreamPump] = field(default_factory=list)
    unavailable: dict[str, AgentDevice] = field(default_factory=dict)
    unavailable_because: dict[str, str] = field(default_factory=dict)
    """Why each device of ``unavailable`` newly found so is offline; emptied once its
    ``device.offline`` is spooled."""
    opened: list[Bus] = field(default_factory=list)
    """Buses opened for this site (not taken over from the one before)."""
    actions: DeviceActions = field(default_factory=lambda: DeviceActions({}))
    linkage: FireLinkage | None = None

    @property
    def runners(self) -> list[Runner]:
        return [*self.pollers, *self.pumps]

    @property
    def devices(self) -> list[AgentDevice]:
        running = [device for runner in self.runners for device in runner.devices]
        return [*running, *self.unavailable.values()]

    @property
    def normalisers(self) -> dict[str, DeviceNormaliser]:
        return {device.device_id: device.normaliser for device in self.devices}

    def close_opened(self) -> None:
        for bus in self.opened:
            bus.close()


def _same(a: AgentDevice, b: AgentDevice) -> bool:
    """Whether two device records would be run alike (a bus keeps one for the other)."""
    return (
        a.device_id == b.device_id
        and a.profile == b.profile
        and a.address == b.address
        and a.interval_s == b.interval_s
        and type(a) is type(b)
    )


def _same_members(running: Sequence[AgentDevice], wanted: Sequence[AgentDevice]) -> bool:
    """Whether a running bus has exactly the devices wanted, each run alike."""
    if len(running) != len(wanted):
        return False
    by_id = {device.device_id: device for device in running}
    return all(
        (current := by_id.get(device.device_id)) is not None and _same(current, device)
        for device in wanted
    )


class _Producers:
    """The tasks that read devices, each with a stop of its own, so an apply can stop
    one bus and start another while the others run on untouched."""

    def __init__(self, tasks: asyncio.TaskGroup) -> None:
        self._tasks = tasks
        self._running: dict[object, tuple[asyncio.Event, asyncio.Task[None]]] = {}
        self.stopping = False

    def start(
        self, key: object, name: str, run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
    ) -> None:
        """Run ``run(stop)`` as a task, unless ``key`` runs already or all are stopping."""
        if self.stopping or key in self._running:
            return
        stop = asyncio.Event()
        self._running[key] = (stop, self._tasks.create_task(run(stop), name=name))

    async def stop(self, keys: Iterable[object]) -> None:
        """Stop the tasks of ``keys`` and wait for them (a poll in progress finishes),
        at most PRODUCERS_STOP_S."""
        entries = [self._running.pop(key) for key in keys if key in self._running]
        for stop, _ in entries:
            stop.set()
        tasks = [task for _, task in entries]
        if tasks:
            await asyncio.wait(tasks, timeout=PRODUCERS_STOP_S)

    async def stop_all(self) -> None:
        self.stopping = True
        await self.stop(list(self._running))


class _LinkageNow:
    """The fire linkage /metrics reads: the agent's current one, after any apply."""

    def __init__(self, agent: "Agent") -> None:
        self._agent = agent

    @property
    def releases(self) -> int:
        return self._agent.linkage.releases

    @property
    def release_failures(self) -> int:
        return self._agent.linkage.release_failures

    @property
    def buildings_in_alarm(self) -> list[str]:
        return self._agent.linkage.buildings_in_alarm

    @property
    def internal_errors(self) -> int:
        return self._agent.linkage.internal_errors


class _AnalysisNow:
    """The wearable analysis /metrics reads: the agent's current one."""

    def __init__(self, agent: "Agent") -> None:
        self._agent = agent

    @property
    def findings_by_type(self) -> Mapping[EventType, int]:
        return self._agent.analysis.findings_by_type

    @property
    def recovered_falls(self) -> int:
        return self._agent.analysis.recovered_falls


class Agent:
    """One gateway: its devices' pollers feeding one spool drained by one uplink.

    ``reload_from``, when given, lets the ``reload_config`` command check a new config
    and then stop this agent with ``reload_requested`` set, for the caller to build
    a new one from it; the spool carries everything over. It is also where the uplink
    reads the broker credentials again when the broker refuses them (a rotation).

    ``config`` and ``profiles`` are the config file's; a pushed config stored in its
    ``state_dir`` (``edge/pushed_config.py``) replaces the file's devices from the
    start, unless it no longer fits the file (logged, and the file's devices run).
    ``config`` is then the config running, ``config_version`` its pushed version.
    """

    def __init__(
        self,
        config: GatewayConfig,
        profiles: dict[str, DeviceProfile],
        *,
        source: str = "config",
        reload_from: ConfigLoader | None = None,
    ) -> None:
        self._file_config = config
        self._file_profiles = profiles
        self._reload_from = reload_from
        self.reload_requested = False
        self._stop: asyncio.Event | None = None
        self._producers: _Producers | None = None
        self.readings_produced = 0
        self.events_produced = 0
        self.spool_failures = 0
        """Spool writes that failed (each add of events or readings counts once)."""
        self.readings_dropped_unspooled = 0
        self.events_dropped_unspooled = 0
        self._held_events: deque[Event] = deque()
        self._spool_failing = False
        self._drops_logged_at: float | None = None
        self._drops_unlogged = 0
        self.config_version = 0
        """The pushed config version running; 0 while the file's devices run."""
        self._site = self._start_site(config, profiles, source)
        self.config = self._site.config
        self._normalisers = self._site.normalisers
        self._wearables = self._wearables_of(self._site)
        self.analysis = WearableAnalysis(self.config.wearables, self._wearables)
        self.cameras = CameraSite(self.config.cameras) if self.config.cameras.devices else None
        """Applies the ``cameras`` section to camera events; None without one."""
        self.spool = Spool(
            self.config.state_dir / SPOOL_FILE,
            self.config.gateway,
            self.config.community,
            budget_bytes=int(self.config.spool_budget_mb * 1024 * 1024),
            linger_s=self.config.telemetry_linger_s,
            ack_timeout_s=self.config.uplink.ack_timeout_s,
            ack_timeout_cap_s=self.config.uplink.ack_timeout_cap_s,
            # None for a device still in the spool but no longer configured: the spool
            # numbers its gap report from the last seq it stored for it.
            seq_source=lambda device: (
                self._normalisers[device].next_seq() if device in self._normalisers else None
            ),
        )
        for device_id, normaliser in self._normalisers.items():
            normaliser.seq = self.spool.last_seq(device_id)
        self._report_unavailable(self._site)
        self.commands = CommandProcessor(
            self.config.gateway,
            self.actions,
            reload=self._reload,
            audit_path=self.config.state_dir / AUDIT_FILE,
            agent_version=AGENT_VERSION,
            profiles=self._site.profiles.values(),
            polled_buses=[runner.bus.name for runner in self._runners],
            config=self,
        )
        self.uplink = Uplink(
            self.config.broker_address,
            self.spool,
            agent_version=AGENT_VERSION,
            ca_file=self.config.tls_ca_file,
            cert_file=self.config.tls_cert_file,
            key_file=self.config.tls_key_file,
            on_command=self.commands.handle,
            config_version=lambda: self.config_version,
            relogin=self._login_from_file if reload_from is not None else None,
        )
        self.metrics = build_registry(
            EdgeCollector(
                devices=lambda: self.devices,
                pollers=lambda: self.pollers,
                pumps=lambda: self.pumps,
                spool=self.spool,
                uplink=self.uplink,
                linkage=_LinkageNow(self),
                intake=self,
                analysis=_AnalysisNow(self),
                cameras=self.cameras,
            ),
            gateway=self.config.gateway,
            community=self.config.community,
        )

    def _start_site(
        self, config: GatewayConfig, profiles: dict[str, DeviceProfile], source: str
    ) -> _Site:
        """The site of the stored pushed config if it still fits the file, else the file's."""
        pushed = load_stored(config, profiles, source)
        if pushed is not None:
            try:
                site = self._build(pushed.config, pushed.profiles, pushed.source, keep=None)
            except (EdgeError, SchemaError) as exc:
                log.error(
                    "%s: ignored, %s; running the devices of %s",
                    config.state_dir / PUSHED_FILE,
                    exc,
                    source,
                )
            else:
                self.config_version = pushed.version
                log.info("running pushed config version %d", pushed.version)
                return site
        return self._build(config, profiles, source, keep=None)

    # -- the device side ----------------------------------------------------------------

    @property
    def pollers(self) -> list[BusPoller]:
        return self._site.pollers

    @property
    def pumps(self) -> list[StreamPump]:
        return self._site.pumps

    @property
    def unavailable(self) -> dict[str, AgentDevice]:
        """Devices whose protocol has no driver that can run here; offline from start."""
        return self._site.unavailable

    @property
    def actions(self) -> DeviceActions:
        return self._site.actions

    @property
    def linkage(self) -> FireLinkage:
        assert self._site.linkage is not None, "a built site has its linkage"
        return self._site.linkage

    @property
    def device_count(self) -> int:
        return len(self.devices)

    @property
    def _runners(self) -> list[Runner]:
        return self._site.runners

    @property
    def devices(self) -> list[AgentDevice]:
        """Every configured device: polled, streaming and those without a driver."""
        return self._site.devices

    def _build(
        self,
        config: GatewayConfig,
        profiles: dict[str, DeviceProfile],
        source: str,
        *,
        keep: _Site | None,
    ) -> _Site:
        """The site of ``config``, its runners built but not started.

        Runners of ``keep`` whose bus has the same devices are taken over as they are,
        and device records that are the same are taken over into reopened buses.
        Raises ConfigError (naming ``source`` and the key) for a device whose profile
        is unknown or does not fit its address, a ``cameras`` section naming a device
        of the wrong kind, a bus its driver refuses or an egress door without what a
        fire release needs; nothing is left open then.
        """
        devices = self._configured_devices(config, profiles, source)  # unknown profiles first
        check_camera_kinds(config, profiles, source)
        site = _Site(config, profiles)
        try:
            self._open_buses(site, devices, keep)
            site.actions = DeviceActions(
                {
                    device.device_id: (runner.bus, device)
                    for runner in site.runners
                    for device in runner.devices
                }
            )
            site.linkage = FireLinkage(
                site.actions, config.devices, site.normalisers, emit=self._emit_local, source=source
            )
        except BaseException:
            site.close_opened()
            raise
        return site

    @staticmethod
    def _configured_devices(
        config: GatewayConfig, profiles: dict[str, DeviceProfile], source: str
    ) -> list[AgentDevice]:
        """The config's devices with their profiles; raises ConfigError for a mismatch."""
        devices: list[AgentDevice] = []
        for index, device in enumerate(config.devices):
            key = f"devices.{index}"
            profile = profiles.get(device.profile)
            if profile is None:
                known = ", ".join(sorted(profiles)) or "none"
                raise ConfigError(
                    source, f"{key}.profile", f"no profile {device.profile!r}; known: {known}"
                )
            address = device.parsed_address
            mismatch = profile.address_mismatch(device.id, address.protocol)
            if mismatch is not None:
                raise ConfigError(source, f"{key}.address", mismatch)
            interval = device.poll_interval_s or profile.poll_interval_s
            devices.append(PolledDevice(device.id, profile, address, interval))
        return devices

    def _open_buses(self, site: _Site, devices: list[AgentDevice], keep: _Site | None) -> None:
        """One bus per shared wire or socket, opened by its protocol's driver.

        A device whose protocol has no driver that can run here is reported once and
        kept offline with the reason; every other device runs. A runner of ``keep``
        whose devices are all run alike is taken over, bus and all.
        """
        by_bus: dict[tuple[str, str], list[AgentDevice]] = defaultdict(list)
        for device in devices:
            by_bus[(device.address.protocol, device.address.bus)].append(device)
        kept_runners = {
            (runner.devices[0].address.protocol, runner.devices[0].address.bus): runner
            for runner in (keep.runners if keep else [])
            if runner.devices
        }
        kept_devices = {device.device_id: device for device in keep.devices} if keep else {}
        for key, wanted in by_bus.items():
            runner = kept_runners.get(key)
            if runner is not None and _same_members(runner.devices, wanted):
                if isinstance(runner, BusPoller):
                    site.pollers.append(runner)
                else:
                    site.pumps.append(runner)
                continue
            # A device run alike keeps its record (seq, health) on a reopened bus; one
            # that was unavailable is tried again (its adapter may have come).
            members = [
                kept if (kept := kept_devices.get(d.device_id)) and _same(kept, d) else d
                for d in wanted
            ]
            self._open_bus(site, *key, members)

    def _open_bus(
        self, site: _Site, protocol: str, bus_name: str, members: list[AgentDevice]
    ) -> None:
        try:
            driver = driver_for(protocol)
            options = DriverOptions(
                timeout_s=site.config.device_timeout_s,
                settings=site.config.drivers.get(driver.name, {}),
            )
            bus = driver.open(members[0].address, members, options)
        except DriverUnavailable as exc:
            log.error(
                "%d device(s) on %s will stay offline: %s (%s)",
                len(members),
                bus_name,
                exc.reason,
                ", ".join(device.device_id for device in members),
            )
            for device in members:
                site.unavailable[device.device_id] = device
                site.unavailable_because[device.device_id] = f"unavailable: {exc.reason}"
            return
        site.opened.append(bus)
        if isinstance(bus, StreamingBus):
            site.pumps.append(StreamPump(bus, members, self._accept))
        else:
            polled = [device for device in members if isinstance(device, PolledDevice)]
            site.pollers.append(
                BusPoller(
                    bus,
                    polled,
                    self._accept,
                    offline_after=site.config.offline_after_misses,
                    offline_retry_max_s=site.config.offline_retry_max_s,
                )
            )

    def _report_unavailable(self, site: _Site) -> None:
        """Spool ``device.offline`` for the devices ``site`` found without a driver."""
        now = datetime.now(UTC)
        for device_id, reason in site.unavailable_because.items():
            self._spool_events(site.unavailable[device_id].lost(reason, now))
        site.unavailable_because.clear()

    @staticmethod
    def _wearables_of(site: _Site) -> list[str]:
        return [
            device.device_id
            for device in site.devices
            if device.profile.kind is DeviceKind.WEARABLE
        ]

    # -- pushed configs (the ConfigTarget of the command processor) ---------------------

    def check_config(self, version: int, document: bytes) -> PushedConfig:
        """Judge a pushed document against the config file, touching no device.

        Raises ConfigRefused naming the key at fault, or ConfigNotNow while a building
        is in fire alarm: the fire linkage's record of the fire must not be reset in
        the middle of it.
        """
        self._refuse_during_fire(version)
        pushed = parse_pushed(document, self._file_config, self._file_profiles, version=version)
        try:
            self._configured_devices(pushed.config, pushed.profiles, pushed.source)
            check_camera_kinds(pushed.config, pushed.profiles, pushed.source)
        except ConfigError as exc:
            raise ConfigRefused(version, f"{exc.key}: {exc.problem}") from None
        return pushed

    async def apply_config(self, pushed: PushedConfig) -> DeviceChanges:
        """Store ``pushed`` and run its devices in place of the running ones.

        Buses whose devices are the same run on untouched; see the module docstring.
        Raises ConfigRefused when a driver refuses a bus or an egress door cannot be
        released, ConfigNotNow during a fire, OSError when the document cannot be
        stored; the running config is untouched then. Once the document is stored the
        change is carried to its end even if the caller is cancelled.
        """
        self._refuse_during_fire(pushed.version)
        try:
            site = self._build(pushed.config, pushed.profiles, pushed.source, keep=self._site)
        except ConfigError as exc:
            raise ConfigRefused(pushed.version, f"{exc.key}: {exc.problem}") from None
        try:
            await asyncio.to_thread(store, self._file_config.state_dir, pushed.document)
        except OSError:
            site.close_opened()
            raise
        changed = changes(self.config, self._site.profiles, site.config, site.profiles)
        switch = asyncio.create_task(
            self._switch(site, pushed.version), name=f"apply config {pushed.version}"
        )
        await asyncio.shield(switch)
        log.info(
            "applied pushed config version %d: %d devices (%s)",
            pushed.version,
            len(site.config.devices),
            changed.summary(),
        )
        return changed

    def _refuse_during_fire(self, version: int) -> None:
        burning = self.linkage.buildings_in_alarm
        if burning:
            raise ConfigNotNow(
                version,
                f"building {', '.join(burning)} in fire alarm; the fire linkage keeps its "
                "config until the alarm clears",
            )

    async def _switch(self, site: _Site, version: int) -> None:
        """Stop what ``site`` does not keep, then start what it adds."""
        old = self._site
        going = [runner for runner in old.runners if runner not in site.runners]
        coming = [runner for runner in site.runners if runner not in old.runners]
        # The old linkage observes every event until the new one takes over below, a
        # smoke alarm read while it stops included; hand_over carries all it knows.
        if self._producers is not None:
            await self._producers.stop([*going, old.linkage])
        for runner in going:
            runner.bus.close()
        previous = {device.device_id: device for device in old.devices}
        known = {id(device) for device in old.devices}
        for device in site.devices:
            if id(device) not in known:
                before = previous.get(device.device_id)
                device.normaliser.seq = (
                    before.normaliser.seq if before else self.spool.last_seq(device.device_id)
                )
        assert site.linkage is not None, "a built site has its linkage"
        # No await from here to the swap: an event read now would reach neither linkage.
        self.linkage.hand_over(site.linkage)
        self._site = site
        self.config = site.config
        self._normalisers = site.normalisers
        self._report_unavailable(site)
        wearables = self._wearables_of(site)
        if wearables != self._wearables:
            analysis = WearableAnalysis(self.config.wearables, wearables)
            analysis.findings_by_type = dict(self.analysis.findings_by_type)
            analysis.recovered_falls = self.analysis.recovered_falls
            self.analysis, self._wearables = analysis, wearables
        self.commands.devices_changed(
            site.actions, site.profiles.values(), [runner.bus.name for runner in site.runners]
        )
        self.config_version = version
        self.uplink.announce()
        if self._producers is not None:
            for runner in coming:
                self._producers.start(runner, f"bus {runner.bus.name}", runner.run)
            self._start_rules(self._producers)

    def _start_rules(self, producers: _Producers) -> None:
        """The fire linkage, and the wearable analysis if there are wearables."""
        producers.start(self.linkage, _LINKAGE, self.linkage.run)
        if self._wearables:
            producers.start(_ANALYSIS, _ANALYSIS, self._analyse)

    def _login_from_file(self) -> BrokerLogin:
        """The broker URL and TLS files the config file holds now (a rotation)."""
        assert self._reload_from is not None, "only given when started from a file"
        config, _ = self._reload_from()
        return BrokerLogin(
            config.broker_address, config.tls_ca_file, config.tls_cert_file, config.tls_key_file
        )

    def _accept(self, readings: list[Reading], events: list[Event]) -> None:
        """A poll's output: the fire linkage sees it first, then it joins the spool
        (camera events named and filtered by the ``cameras`` section).

        Never raises SpoolError (a failing disk must not stop the pollers, the uplink or
        the fire linkage): see ``_spool_events`` and ``_spool_readings``.
        """
        self.linkage.observe(events)
        self.readings_produced += len(readings)
        self.events_produced += len(events)
        if self.cameras is not None:
            events = self.cameras.apply(events)
        self._spool_events(events)
        self._spool_readings(readings)
        # After the spool: an SOS is stored before any analysis code runs. A gateway
        # without wearables (most of them) skips the look at every reading.
        if self._wearables:
            self.analysis.observe(readings, events)

    def _emit_local(self, events: list[Event]) -> None:
        """Events the gateway makes itself (a door released for fire) join the spool.

        Never raises SpoolError, like ``_accept``.
        """
        self.events_produced += len(events)
        self._spool_events(events)

    @property
    def held_events(self) -> int:
        """Events waiting in memory for the spool to take writes again."""
        return len(self._held_events)

    def _spool_events(self, events: list[Event]) -> None:
        """Store the held events, then ``events``; keep them all in memory if that fails.

        Held events are retried first at every add (every poll brings one), so they stay
        in order and go to disk as soon as the spool takes writes again.
        """
        if not events and not self._held_events:
            return
        batch = [*self._held_events, *events]
        try:
            self.spool.add_events(batch)
        except SpoolError as exc:
            self._spool_failed(exc, f"storing {len(batch)} events")
            self._held_events.extend(events)
            self._drop_held_over_bound()
            return
        self._held_events.clear()
        self._spool_ok(f"{len(batch)} events stored")

    def _spool_readings(self, readings: list[Reading]) -> None:
        if not readings:
            return
        try:
            self.spool.add_readings(readings)
        except SpoolError as exc:
            # Telemetry under a failing disk is dropped, not held: memory goes to events
            # (alarms), and the next poll brings fresh values anyway. It is counted, and
            # the cloud sees the hole in the devices' seq.
            self.readings_dropped_unspooled += len(readings)
            self._spool_failed(exc, f"storing {len(readings)} readings (dropped)")
            return
        self._spool_ok(f"{len(readings)} readings stored")

    def _drop_held_over_bound(self) -> None:
        """Past HELD_EVENTS_MAX the oldest held events go, never silently."""
        over = len(self._held_events) - HELD_EVENTS_MAX
        if over <= 0:
            return
        for _ in range(over):
            self._held_events.popleft()
        self.events_dropped_unspooled += over
        self._drops_unlogged += over
        now = time.monotonic()
        if self._drops_logged_at is None or now - self._drops_logged_at >= _DROP_LOG_INTERVAL_S:
            log.error(
                "spool %s still failing: dropped the %d oldest events held in memory "
                "(bound %d; %d dropped in all)",
                self.spool.path,
                self._drops_unlogged,
                HELD_EVENTS_MAX,
                self.events_dropped_unspooled,
            )
            self._drops_logged_at = now
            self._drops_unlogged = 0

    def _spool_failed(self, exc: SpoolError, what: str) -> None:
        self.spool_failures += 1
        if not self._spool_failing:
            log.error(
                "spool %s: %s failed: %s; holding events in memory (up to %d) and "
                "dropping readings until it takes writes again",
                exc.path,
                what,
                exc.problem,
                HELD_EVENTS_MAX,
            )
        self._spool_failing = True

    def _spool_ok(self, what: str) -> None:
        if not self._spool_failing:
            return
        self._spool_failing = False
        if self._drops_unlogged:
            log.error(
                "spool %s: dropped %d more held events", self.spool.path, self._drops_unlogged
            )
            self._drops_unlogged = 0
        self._drops_logged_at = None
        log.warning(
            "spool %s takes writes again (%s) after %d failed writes; %d readings and "
            "%d events dropped in all",
            self.spool.path,
            what,
            self.spool_failures,
            self.readings_dropped_unspooled,
            self.events_dropped_unspooled,
        )

    async def _analyse(self, stop: asyncio.Event) -> None:
        """What the wearable analysis finds (a confirmed fall, a heart rate off its
        baseline, inactivity) joins the spool as the bands' own events."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=ANALYSIS_TICK_S)
            findings = self.analysis.tick(datetime.now(UTC))
            self._emit_local(
                [
                    self._normalisers[finding.device_id].event(
                        finding.type, finding.ts, finding.data
                    )
                    for finding in findings
                ]
            )

    async def _reload(self) -> str:
        """Check the config file again and, if it is usable, stop for a reload."""
        if self._reload_from is None or self._stop is None:
            raise ConfigError("(none)", "reload_config", "this agent was not started from a file")
        config, _ = self._reload_from()
        self.reload_requested = True
        asyncio.get_running_loop().call_later(RELOAD_GRACE_S, self._stop.set)
        return f"config valid ({len(config.devices)} devices); reloading"

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and send until ``stop`` is set; then stop polling, drain and say offline.

        Pollers and the fire linkage finish what they are doing before the uplink is
        told to drain, so everything read before the stop is sent before the agent
        exits (or stays on disk if the broker cannot be reached in time).
        """
        self._stop = stop
        draining = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tasks:
                uplink = tasks.create_task(self.uplink.run(draining), name="uplink")
                producers = self._producers = _Producers(tasks)
                for runner in self._runners:
                    producers.start(runner, f"bus {runner.bus.name}", runner.run)
                self._start_rules(producers)
                tasks.create_task(
                    serve_metrics(self.metrics, self.config.metrics_port, stop), name="metrics"
                )
                await stop.wait()
                await producers.stop_all()
                draining.set()
                await uplink
        finally:
            # Commands still running are cut off before their bus closes; their audit
            # "started" lines make the next start report them as interrupted.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.commands.close(), timeout=COMMAND_CLOSE_S)
            for runner in self._runners:
                runner.bus.close()
            self.spool.close()
