"""The demo's two pilot communities: their buildings, detectors and egress doors.

Each building has a smoke detector in a flat and an entrance door on its escape route
(``egress``), so a smoke alarm anywhere releases that building's doors at the gateway,
as the fire code asks; building 3 of Fenghuang, where the demo's fire starts, also
has a stairwell exit. Everything here is what an installer would write down: the
cloud registration (``register_sites``), the simulated hardware on one Modbus TCP
converter per community (``site_simulators``) and the gateway's config
(``gateway_config``).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg

from cloud.registry import register_community, register_device, register_gateway
from edge.config import GatewayConfig, parse_config
from firmware_sim.door_controller import DoorController
from firmware_sim.smoke_detector import SmokeDetector
from schemas.vocabulary import DeviceKind

_PROFILES: Final = {DeviceKind.SMOKE: "anju-smoke-mb", DeviceKind.DOOR: "anju-door-mb"}
"""The device profile of each kind of device the demo installs."""


@dataclass(frozen=True)
class SiteDevice:
    """One device as installed: where it is and, for a door, whether it is on an escape route."""

    device_id: str
    kind: DeviceKind
    building: str
    unit: str | None = None
    """The flat, for a detector in one; None for common parts such as a door."""
    egress: bool = False

    @property
    def profile(self) -> str:
        return _PROFILES[self.kind]


@dataclass(frozen=True)
class Site:
    """One community: a gateway and its devices behind one Modbus TCP converter."""

    community: str
    gateway: str
    devices: tuple[SiteDevice, ...]

    def buildings(self) -> dict[str, list[SiteDevice]]:
        """The devices of each building, buildings and devices in the site's order."""
        by_building: dict[str, list[SiteDevice]] = {}
        for device in self.devices:
            by_building.setdefault(device.building, []).append(device)
        return by_building


def _building(
    prefix: str, building: int, flat: str, doors: tuple[str, ...] = ("entrance",)
) -> tuple[SiteDevice, ...]:
    """A building's detector (in ``flat``) and its doors on the escape route."""
    return (
        SiteDevice(f"{prefix}-b{building}-smoke-01", DeviceKind.SMOKE, str(building), flat),
        *(
            SiteDevice(
                f"{prefix}-b{building}-door-{door}", DeviceKind.DOOR, str(building), egress=True
            )
            for door in doors
        ),
    )


SITES: Final = (
    Site(
        "xijin/fenghuang",
        "gw-fenghuang-01",
        (
            *_building("fh", 1, "1-101"),
            *_building("fh", 2, "2-101"),
            *_building("fh", 3, "3-101", doors=("entrance", "stair")),
            *_building("fh", 4, "4-101"),
        ),
    ),
    Site(
        "nanshan/baiyun",
        "gw-baiyun-01",
        (*_building("by", 1, "1-201"), *_building("by", 2, "2-201"), *_building("by", 3, "3-201")),
    ),
)

ALARM_DEVICE_ID: Final = "fh-b3-smoke-01"
"""Fenghuang building 3: where the demo's fire breaks out."""


def site_device(device_id: str) -> SiteDevice:
    """The device called ``device_id``; raises KeyError for one the demo does not have."""
    for site in SITES:
        for device in site.devices:
            if device.device_id == device_id:
                return device
    raise KeyError(device_id)


def egress_doors(building_of: SiteDevice) -> tuple[SiteDevice, ...]:
    """The egress doors of the building ``building_of`` stands in, in its community."""
    site = next(s for s in SITES if building_of in s.devices)
    return tuple(device for device in site.buildings()[building_of.building] if device.egress)


async def register_sites(database_url: str) -> None:
    """Register every community, gateway and device, as an installer would."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for site in SITES:
            await register_community(conn, site.community)
            await register_gateway(conn, site.gateway, site.community)
            for device in site.devices:
                await register_device(
                    conn,
                    device.device_id,
                    gateway_id=site.gateway,
                    kind=device.kind,
                    profile_id=device.profile,
                    building=device.building,
                    unit=device.unit,
                )
        await conn.commit()


@dataclass
class SiteSimulators:
    """A community's simulated hardware: the converter's units, and each device by id."""

    units: dict[int, SmokeDetector | DoorController]
    detectors: dict[str, SmokeDetector]
    doors: dict[str, DoorController]


def site_simulators(site: Site, serial_base: int) -> SiteSimulators:
    """Fresh simulators for ``site``, unit ids 1.. in the order of its devices.

    Detectors sit at slightly different temperatures with a little noise, so they
    report changing readings as real ones do; serial numbers count up from
    ``serial_base``.
    """
    made = SiteSimulators({}, {}, {})
    for index, device in enumerate(site.devices):
        if device.kind is DeviceKind.SMOKE:
            detector = SmokeDetector(
                serial_number=serial_base + index,
                temperature_c=19.0 + index % 4,
                temperature_noise_c=0.8,
                seed=serial_base + index,
            )
            made.detectors[device.device_id] = detector
            made.units[index + 1] = detector
        else:
            door = DoorController(serial_number=serial_base + index)
            made.doors[device.device_id] = door
            made.units[index + 1] = door
    return made


def gateway_config(
    site: Site, url_for: Callable[[int], str], broker: str, state_dir: Path
) -> GatewayConfig:
    """The gateway config of ``site``, its devices at ``url_for(unit)`` (units as in
    ``site_simulators``)."""
    return parse_config(
        {
            "gateway": site.gateway,
            "community": site.community,
            "broker": broker,
            "state_dir": str(state_dir),
            "devices": [
                {
                    "id": device.device_id,
                    "profile": device.profile,
                    "address": url_for(index + 1),
                    "building": device.building,
                    "unit": device.unit or "",
                    "egress": device.egress,
                }
                for index, device in enumerate(site.devices)
            ],
        },
        f"demo site {site.community}",
    )
