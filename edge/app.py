"""Wires the gateway agent together: pollers per bus, the outbox and the uplink.

The only module of the agent that starts tasks. ``Agent`` is built from a validated
config and the loaded profiles, so every configuration fault is reported before any
device is touched.
"""

import asyncio
import logging
from collections import defaultdict

from edge.actions import DeviceActions
from edge.config import GatewayConfig
from edge.drivers.modbus import ModbusBus
from edge.errors import ConfigError
from edge.outbox import Outbox
from edge.poller import BusPoller, PolledDevice
from edge.uplink import Uplink
from schemas.profile import DeviceProfile
from schemas.vocabulary import Protocol
from schemas.wire import Event, Reading

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
_MODBUS = (Protocol.MODBUS_TCP, Protocol.MODBUS_RTU)


class Agent:
    """One gateway: its devices' pollers feeding one outbox drained by one uplink."""

    def __init__(
        self, config: GatewayConfig, profiles: dict[str, DeviceProfile], *, source: str = "config"
    ) -> None:
        self.config = config
        self.outbox = Outbox(config.gateway, config.community, linger_s=config.telemetry_linger_s)
        self.uplink = Uplink(config.broker_address, self.outbox, agent_version=AGENT_VERSION)
        self.readings_produced = 0
        self.events_produced = 0
        by_bus: dict[str, list[PolledDevice]] = defaultdict(list)
        addresses = {}
        for index, device in enumerate(config.devices):
            key = f"devices.{index}"
            profile = profiles.get(device.profile)
            if profile is None:
                known = ", ".join(sorted(profiles)) or "none"
                raise ConfigError(
                    source, f"{key}.profile", f"no profile {device.profile!r}; known: {known}"
                )
            address = device.parsed_address
            if profile.protocol not in _MODBUS:
                raise ConfigError(
                    source, f"{key}.profile", f"{profile.protocol} devices have no driver yet"
                )
            if address.protocol not in _MODBUS:
                raise ConfigError(
                    source,
                    f"{key}.address",
                    f"a {profile.protocol} device needs a modbus-tcp:// or modbus-rtu:// address",
                )
            interval = device.poll_interval_s or profile.poll_interval_s
            by_bus[address.bus].append(PolledDevice(device.id, profile, address, interval))
            addresses[address.bus] = address
        self.pollers = [
            BusPoller(
                ModbusBus(addresses[bus], timeout_s=config.modbus_timeout_s),
                devices,
                self._accept,
                offline_after=config.offline_after_misses,
                offline_retry_max_s=config.offline_retry_max_s,
            )
            for bus, devices in by_bus.items()
        ]
        self.actions = DeviceActions(
            {
                device.device_id: (poller.bus, device)
                for poller in self.pollers
                for device in poller.devices
            }
        )

    @property
    def devices(self) -> list[PolledDevice]:
        return [device for poller in self.pollers for device in poller.devices]

    def _accept(self, readings: list[Reading], events: list[Event]) -> None:
        self.readings_produced += len(readings)
        self.events_produced += len(events)
        self.outbox.add_events(events)
        self.outbox.add_readings(readings)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and send until ``stop`` is set; then stop polling, drain and say offline."""
        polling_stop = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tasks:
                uplink = tasks.create_task(self.uplink.run(stop), name="uplink")
                for poller in self.pollers:
                    tasks.create_task(poller.run(polling_stop), name=f"poll {poller.bus.name}")
                await stop.wait()
                polling_stop.set()
                await uplink
        finally:
            for poller in self.pollers:
                poller.bus.close()
