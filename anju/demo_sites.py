"""The demo's two pilot communities: their buildings, detectors, egress doors and wristbands.

Each building has a smoke detector in a flat and an entrance door on its escape route
(``egress``), so a smoke alarm anywhere releases that building's doors at the gateway,
as the fire code asks; building 3 of Fenghuang, where the demo's fire starts, also
has a stairwell exit. Elderly residents of Fenghuang wear wristbands (``SiteBand``):
CB-300 care bands the gateway keeps connected and CB-100 beacon bands it only hears,
each registered to its wearer; the wearer of ``WEARER_BAND_ID`` is the one the demo
follows and whose SOS it presses. Everything here is what an installer would write
down: the cloud registration (``register_sites``, ``register_bands``), the simulated
hardware on one Modbus TCP converter per community (``site_simulators``) and one
band field (``band_counts``), and the gateway's config (``gateway_config``).
"""

from collections.abc import Callable, Mapping
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
"""The device profile of each kind of Modbus device the demo installs."""
CARE_BAND: Final = "anju-wearable-ble"
"""CB-300: kept connected, heart rate notified each second."""
BEACON_BAND: Final = "anju-wearable-beacon"
"""CB-100: never connects, its state read from its advertisements."""
_BAND_ADDRESS_PREFIXES: Final = {CARE_BAND: "F0:A1:00:00:00:", BEACON_BAND: "F0:B1:00:00:00:"}
"""The address blocks of the two models, band numbers counting up from 01."""


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
class SiteBand:
    """A wristband as handed out: its model and number, and who wears it where.

    The wearer is registered as a resident with location only (``reference``,
    building, flat): the demo stores no personal data, which would need
    ``ANJU_RESIDENT_KEYS`` (docs/residents.md).
    """

    device_id: str
    profile: str
    """``CARE_BAND`` or ``BEACON_BAND``."""
    number: int
    """The band's number within its model, 1.. (``ANJU-CB-0001``, ``ANJU-BB-0001``)."""
    building: str
    unit: str
    """The wearer's flat."""
    wearer: str
    """The care provider's reference for the wearer (``reference`` of ``POST /residents``)."""

    @property
    def address(self) -> str:
        """The Bluetooth address on the band's label, ``F0:A1:00:00:00:01`` for CB-300 no. 1."""
        return f"{_BAND_ADDRESS_PREFIXES[self.profile]}{self.number:02X}"


@dataclass(frozen=True)
class Site:
    """One community: a gateway, its devices behind one Modbus TCP converter, and the
    wristbands its residents wear."""

    community: str
    gateway: str
    devices: tuple[SiteDevice, ...]
    bands: tuple[SiteBand, ...] = ()

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


def _band(profile: str, number: int, flat: str) -> SiteBand:
    """Fenghuang band ``number`` of its model, worn by the resident of ``flat``."""
    kind = "band" if profile == CARE_BAND else "beacon"
    building = flat.split("-", 1)[0]
    return SiteBand(f"fh-{kind}-{number:02d}", profile, number, building, flat, f"care-fh-{flat}")


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
        # Nobody wearing a band lives in a flat with a detector: the fire's flat would
        # open a resident_smoke_alarm incident too, which is not what the demo shows.
        (
            _band(CARE_BAND, 1, "2-302"),
            _band(CARE_BAND, 2, "1-402"),
            _band(CARE_BAND, 3, "4-201"),
            _band(BEACON_BAND, 1, "1-203"),
            _band(BEACON_BAND, 2, "2-501"),
            _band(BEACON_BAND, 3, "3-602"),
            _band(BEACON_BAND, 4, "4-305"),
            _band(BEACON_BAND, 5, "4-502"),
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
WEARER_BAND_ID: Final = "fh-band-01"
"""The CB-300 of the Fenghuang resident the demo follows (heart rate) and whose SOS it
presses."""


def site_device(device_id: str) -> SiteDevice:
    """The device called ``device_id``; raises KeyError for one the demo does not have."""
    for site in SITES:
        for device in site.devices:
            if device.device_id == device_id:
                return device
    raise KeyError(device_id)


def site_band(device_id: str) -> tuple[Site, SiteBand]:
    """The band called ``device_id`` and its site; raises KeyError for one the demo lacks."""
    for site in SITES:
        for band in site.bands:
            if band.device_id == device_id:
                return site, band
    raise KeyError(device_id)


def band_counts(site: Site) -> tuple[int, int]:
    """How many CB-300 and CB-100 bands ``site``'s band field must serve: the highest
    number of each model, since the field numbers its bands 1.. (``BandField``)."""
    care = [band.number for band in site.bands if band.profile == CARE_BAND]
    beacons = [band.number for band in site.bands if band.profile == BEACON_BAND]
    return max(care, default=0), max(beacons, default=0)


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


async def register_bands(database_url: str, wearers: Mapping[str, int]) -> None:
    """Register every wristband at its wearer's home, bound to the wearer.

    ``wearers`` maps each band's ``wearer`` reference to the resident's id (as
    ``POST /residents`` answered). Raises KeyError for a band whose wearer is missing,
    RegistryError as ``register_device`` does.
    """
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for site in SITES:
            for band in site.bands:
                await register_device(
                    conn,
                    band.device_id,
                    gateway_id=site.gateway,
                    kind=DeviceKind.WEARABLE,
                    profile_id=band.profile,
                    building=band.building,
                    unit=band.unit,
                    resident_id=wearers[band.wearer],
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
    site: Site,
    url_for: Callable[[int], str],
    broker: str,
    state_dir: Path,
    band_adapter: str | None = None,
) -> GatewayConfig:
    """The gateway config of ``site``, its devices at ``url_for(unit)`` (units as in
    ``site_simulators``) and its bands on the BLE adapter ``band_adapter``
    (``bumble:tcp-client:HOST:PORT`` for a ``BandField``).

    Raises ValueError when the site has bands and no adapter is given.
    """
    if site.bands and band_adapter is None:
        raise ValueError(f"{site.community} has wristbands: give their BLE adapter")
    devices: list[dict[str, object]] = [
        {
            "id": device.device_id,
            "profile": device.profile,
            "address": url_for(index + 1),
            "building": device.building,
            "unit": device.unit or "",
            "egress": device.egress,
        }
        for index, device in enumerate(site.devices)
    ]
    devices += [
        {
            "id": band.device_id,
            "profile": band.profile,
            "address": f"ble://{band.address}",
            "building": band.building,
            "unit": band.unit,
        }
        for band in site.bands
    ]
    document: dict[str, object] = {
        "gateway": site.gateway,
        "community": site.community,
        "broker": broker,
        "state_dir": str(state_dir),
        "devices": devices,
    }
    if site.bands:
        document["drivers"] = {"ble": {"adapter": band_adapter}}
    return parse_config(document, f"demo site {site.community}")
