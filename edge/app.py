"""Wires the gateway agent together: a bus per wire, the spool, the uplink, commands.

The only module of the agent that starts tasks. ``Agent`` is built from a validated
config and the loaded profiles, so every configuration fault is reported before any
device is touched or the spool is opened.
"""

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime

from edge.actions import DeviceActions
from edge.cameras.site import CameraSite
from edge.commands import AUDIT_FILE, CommandProcessor
from edge.config import GatewayConfig, check_camera_kinds
from edge.devices import AgentDevice
from edge.drivers.contract import DriverOptions, DriverUnavailable, StreamingBus
from edge.drivers.registry import driver_for
from edge.errors import ConfigError
from edge.local_rules import FireLinkage
from edge.metrics import EdgeCollector, build_registry, serve_metrics
from edge.poller import BusPoller, PolledDevice
from edge.spool import Spool, SpoolError
from edge.streams import StreamPump
from edge.uplink import Uplink
from edge.wearables.analysis import WearableAnalysis
from schemas.addressing import for_protocol
from schemas.profile import DeviceProfile
from schemas.vocabulary import DeviceKind
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


class Agent:
    """One gateway: its devices' pollers feeding one spool drained by one uplink.

    ``reload_from``, when given, lets the ``reload_config`` command check a new config
    and then stop this agent with ``reload_requested`` set, for the caller to build
    a new one from it; the spool carries everything over.
    """

    def __init__(
        self,
        config: GatewayConfig,
        profiles: dict[str, DeviceProfile],
        *,
        source: str = "config",
        reload_from: ConfigLoader | None = None,
    ) -> None:
        self.config = config
        self._reload_from = reload_from
        self.reload_requested = False
        self._stop: asyncio.Event | None = None
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
        self.pollers: list[BusPoller] = []
        self.pumps: list[StreamPump] = []
        self.unavailable: dict[str, AgentDevice] = {}
        """Devices whose protocol has no driver that can run here; offline from start."""
        self._unavailable_because: dict[str, str] = {}
        devices = self._configured_devices(profiles, source)  # unknown profiles named first
        check_camera_kinds(config, profiles, source)
        self._open_buses(devices)
        normalisers = {device.device_id: device.normaliser for device in self.devices}
        self._normalisers = normalisers
        self._wearables = [
            device.device_id
            for device in self.devices
            if device.profile.kind is DeviceKind.WEARABLE
        ]
        self.analysis = WearableAnalysis(config.wearables, self._wearables)
        self.cameras = CameraSite(config.cameras) if config.cameras.devices else None
        """Applies the ``cameras`` section to camera events; None without one."""
        self.spool = Spool(
            config.state_dir / SPOOL_FILE,
            config.gateway,
            config.community,
            budget_bytes=int(config.spool_budget_mb * 1024 * 1024),
            linger_s=config.telemetry_linger_s,
            # None for a device still in the spool but no longer configured: the spool
            # numbers its gap report from the last seq it stored for it.
            seq_source=lambda device: (
                normalisers[device].next_seq() if device in normalisers else None
            ),
        )
        for device_id, normaliser in normalisers.items():
            normaliser.seq = self.spool.last_seq(device_id)
        now = datetime.now(UTC)
        for device_id, reason in self._unavailable_because.items():
            self._spool_events(self.unavailable[device_id].lost(reason, now))
        self.actions = DeviceActions(
            {
                device.device_id: (runner.bus, device)
                for runner in self._runners
                for device in runner.devices
            }
        )
        self.commands = CommandProcessor(
            config.gateway,
            self.actions,
            reload=self._reload,
            audit_path=config.state_dir / AUDIT_FILE,
            agent_version=AGENT_VERSION,
            profiles=profiles.values(),
            polled_buses=[runner.bus.name for runner in self._runners],
        )
        self.linkage = FireLinkage(
            self.actions, config.devices, normalisers, emit=self._emit_local, source=source
        )
        self.uplink = Uplink(
            config.broker_address,
            self.spool,
            agent_version=AGENT_VERSION,
            ca_file=config.tls_ca_file,
            cert_file=config.tls_cert_file,
            key_file=config.tls_key_file,
            on_command=self.commands.handle,
        )
        self.metrics = build_registry(
            EdgeCollector(
                devices=lambda: self.devices,
                pollers=lambda: self.pollers,
                pumps=lambda: self.pumps,
                spool=self.spool,
                uplink=self.uplink,
                linkage=self.linkage,
                intake=self,
                analysis=self.analysis,
                cameras=self.cameras,
            ),
            gateway=config.gateway,
            community=config.community,
        )

    def _configured_devices(
        self, profiles: dict[str, DeviceProfile], source: str
    ) -> list[AgentDevice]:
        """The config's devices with their profiles; raises ConfigError for a mismatch."""
        devices: list[AgentDevice] = []
        for index, device in enumerate(self.config.devices):
            key = f"devices.{index}"
            profile = profiles.get(device.profile)
            if profile is None:
                known = ", ".join(sorted(profiles)) or "none"
                raise ConfigError(
                    source, f"{key}.profile", f"no profile {device.profile!r}; known: {known}"
                )
            address = device.parsed_address
            family = for_protocol(profile.protocol)
            if address.protocol not in family.protocols:
                schemes = " or ".join(f"{p}://" for p in sorted(family.protocols))
                raise ConfigError(
                    source,
                    f"{key}.address",
                    f"{device.id} is a {profile.protocol} device ({profile.id}): its address "
                    f"must be {schemes}, not {address.protocol}://",
                )
            interval = device.poll_interval_s or profile.poll_interval_s
            devices.append(PolledDevice(device.id, profile, address, interval))
        return devices

    def _open_buses(self, devices: list[AgentDevice]) -> None:
        """One bus per shared wire or socket, opened by its protocol's driver.

        A device whose protocol has no driver that can run here is reported once and
        kept offline with the reason; every other device runs.
        """
        by_bus: dict[tuple[str, str], list[AgentDevice]] = defaultdict(list)
        for device in devices:
            by_bus[(device.address.protocol, device.address.bus)].append(device)
        for (protocol, bus_name), members in by_bus.items():
            try:
                driver = driver_for(protocol)
                options = DriverOptions(
                    timeout_s=self.config.device_timeout_s,
                    settings=self.config.drivers.get(driver.name, {}),
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
                    self.unavailable[device.device_id] = device
                    self._unavailable_because[device.device_id] = f"unavailable: {exc.reason}"
                continue
            if isinstance(bus, StreamingBus):
                self.pumps.append(StreamPump(bus, members, self._accept))
            else:
                polled = [device for device in members if isinstance(device, PolledDevice)]
                self.pollers.append(
                    BusPoller(
                        bus,
                        polled,
                        self._accept,
                        offline_after=self.config.offline_after_misses,
                        offline_retry_max_s=self.config.offline_retry_max_s,
                    )
                )

    @property
    def _runners(self) -> list[BusPoller | StreamPump]:
        return [*self.pollers, *self.pumps]

    @property
    def devices(self) -> list[AgentDevice]:
        """Every configured device: polled, streaming and those without a driver."""
        running = [device for runner in self._runners for device in runner.devices]
        return [*running, *self.unavailable.values()]

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
        polling_stop, draining = asyncio.Event(), asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tasks:
                uplink = tasks.create_task(self.uplink.run(draining), name="uplink")
                producers = [
                    tasks.create_task(runner.run(polling_stop), name=f"bus {runner.bus.name}")
                    for runner in self._runners
                ]
                producers.append(
                    tasks.create_task(self.linkage.run(polling_stop), name="fire linkage")
                )
                if self._wearables:
                    producers.append(
                        tasks.create_task(self._analyse(polling_stop), name="wearable analysis")
                    )
                tasks.create_task(
                    serve_metrics(self.metrics, self.config.metrics_port, stop), name="metrics"
                )
                await stop.wait()
                polling_stop.set()
                await asyncio.wait(producers, timeout=PRODUCERS_STOP_S)
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
