"""The BLE driver: one bus for every band on the gateway's adapter, and the installer's
probe (``anju device test``) and scan (``anju device scan ble``)."""

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from typing import ClassVar

from edge.addresses import DeviceAddress
from edge.drivers.ble.band import BandPlan, Characteristic
from edge.drivers.ble.bleak_radio import BleakRadio, adapter_missing
from edge.drivers.ble.bumble_radio import BumbleRadio
from edge.drivers.ble.bus import BleBus
from edge.drivers.ble.gatt import MalformedValue, decode_point
from edge.drivers.ble.radio import Advertisement, Radio
from edge.drivers.ble.settings import BleDriverSettings, parse_settings
from edge.drivers.contract import (
    DeviceSpec,
    Driver,
    DriverOptions,
    DriverUnavailable,
    Probe,
    ProbedPoint,
    ProfileCheck,
    RawRead,
    ScanHit,
    ScanProgress,
    ScanTerms,
)
from edge.errors import DeviceMalformed, DeviceUnreachable, EdgeError
from schemas.profile import DeviceProfile
from schemas.protocols.ble import BleAddress, BleSettings
from schemas.vocabulary import Protocol

PROBE_WAIT_MIN_S = 3.0
"""The least a probe listens for a band, and waits for each first notification: a band
advertises about once a second, many notify once a second."""
SCAN_DEFAULT_S = 5
SCAN_MAX_S = 120


def radio_for(settings: BleDriverSettings) -> Callable[[], Radio]:
    """A maker of the configured backend's radio (a fresh one after each loss)."""
    if settings.backend == "bleak":
        return lambda: BleakRadio(settings.target)
    return lambda: BumbleRadio(settings.target)


class BleDriver(Driver):
    name = "ble"
    protocols = frozenset({Protocol.BLE})
    scan_needs_address: ClassVar[bool] = False
    scan_terms = ScanTerms(
        candidate="second",
        candidates="seconds of listening",
        basis="a band is suggested a profile when its advertisement carries the profile's "
        "name prefix, one of its advertised services or its manufacturer id; a connect "
        "with anju device test confirms it",
        outcome="{found} band(s) fitting a profile heard in {tried} {candidates}",
        silence="Check that the bands are charged and worn, and within a few metres of the "
        "adapter; listen longer with --candidates SECONDS.",
    )

    def open(
        self, address: DeviceAddress, devices: Sequence[DeviceSpec], options: DriverOptions
    ) -> BleBus:
        settings = parse_settings(options.settings)
        if settings.backend == "bleak":
            problem = adapter_missing(settings.target)
            if problem is not None:
                raise DriverUnavailable(Protocol.BLE, problem)
        return BleBus(radio_for(settings), devices, settings)

    async def probe(self, device: DeviceSpec, options: DriverOptions) -> Probe:
        """Hear the band once, then connect if its profile has GATT points and take one
        value of each: a read, or the first notification."""
        settings = parse_settings(options.settings)
        wait_s = max(options.timeout_s, PROBE_WAIT_MIN_S)
        plan = BandPlan.of(device, device.profile.points)
        radio = radio_for(settings)()
        await radio.open()
        try:
            advertisement = await _hear(radio, plan.mac, wait_s, str(device.address))
            points, requests = _advertised(plan, advertisement)
            if plan.connects:
                await radio.stop_scan()
                gatt_points, gatt_requests = await _connected(
                    radio, plan, wait_s, settings.connect_timeout_s
                )
                points += gatt_points
                requests += gatt_requests
        finally:
            await radio.stop_scan()
            await radio.close()
        return Probe(tuple(points), tuple(requests))

    def candidates(self, text: str) -> list[str]:
        """Seconds to listen, one candidate each: ``10``; 5 when empty."""
        text = text.strip()
        if not text:
            seconds = SCAN_DEFAULT_S
        elif text.isdigit() and 1 <= int(text) <= SCAN_MAX_S:
            seconds = int(text)
        else:
            raise EdgeError(
                f"--candidates for ble is how many seconds to listen, 1-{SCAN_MAX_S}, not {text!r}"
            )
        return [str(second) for second in range(1, seconds + 1)]

    async def scan(
        self,
        address: DeviceAddress,
        candidates: Sequence[str],
        profiles: Sequence[DeviceProfile],
        options: DriverOptions,
        progress: ScanProgress,
    ) -> list[ScanHit]:
        """Listen for ``len(candidates)`` seconds; every advertiser that fits a BLE
        profile is a hit, with its strongest RSSI."""
        ble_profiles = [profile for profile in profiles if profile.protocol == Protocol.BLE]
        radio = radio_for(parse_settings(options.settings))()
        await radio.open()
        heard: dict[str, Advertisement] = {}
        first: dict[str, str] = {}
        second = candidates[0] if candidates else "1"

        def on_advertisement(advertisement: Advertisement) -> None:
            known = heard.get(advertisement.address)
            if known is None or (advertisement.rssi or -999) > (known.rssi or -999):
                heard[advertisement.address] = _merged(known, advertisement)
            first.setdefault(advertisement.address, second)

        hits: dict[str, ScanHit] = {}
        try:
            await radio.scan(on_advertisement)
            for second in candidates:
                await asyncio.sleep(1.0)
                new = None
                for mac, advertisement in heard.items():
                    hit = _hit(first[mac], advertisement, ble_profiles)
                    if hit.suggestions:
                        new = new or (hit if mac not in hits else None)
                        hits[mac] = hit
                progress(second, new)
        finally:
            await radio.stop_scan()
            await radio.close()
        return sorted(hits.values(), key=lambda hit: -(heard[hit.address.host].rssi or -999))


async def _hear(radio: Radio, mac: str, wait_s: float, where: str) -> Advertisement:
    heard: asyncio.Future[Advertisement] = asyncio.get_running_loop().create_future()

    def on_advertisement(advertisement: Advertisement) -> None:
        if advertisement.address == mac and not heard.done():
            heard.set_result(advertisement)

    await radio.scan(on_advertisement)
    try:
        return await asyncio.wait_for(heard, timeout=wait_s)
    except TimeoutError:
        raise DeviceUnreachable(
            where,
            f"not heard advertising within {wait_s:g} s: is the band charged and worn, "
            "within a few metres, and its MAC right (anju device scan ble lists what is heard)?",
        ) from None


def _advertised(
    plan: BandPlan, advertisement: Advertisement
) -> tuple[list[ProbedPoint], list[RawRead]]:
    rssi = "unknown" if advertisement.rssi is None else f"{advertisement.rssi} dBm"
    request = RawRead(
        "advertisement",
        f"name {advertisement.name or '-'}, RSSI {rssi}, "
        + ", ".join(
            [
                f"manufacturer 0x{company:04x} {data.hex(' ')}"
                for company, data in advertisement.manufacturer_data.items()
            ]
            + [
                f"service data {uuid} {data.hex(' ')}"
                for uuid, data in advertisement.service_data.items()
            ]
        ),
        tuple(point.name for point in plan.advertised),
    )
    points = [ProbedPoint(plan.presence, 1, "presence", f"RSSI {rssi}")] if plan.presence else []
    try:
        values = plan.advertised_values(advertisement)
    except MalformedValue as exc:
        raise DeviceMalformed(f"ble://{plan.mac}", str(exc)) from None
    for point in plan.advertised:
        if point.name in values:
            data = _advertised_bytes(point.address, advertisement)
            points.append(ProbedPoint(point.name, values[point.name], _where(point.address), data))
    return points, [request]


def _advertised_bytes(address: BleAddress, advertisement: Advertisement) -> str:
    if address.manufacturer_id is not None:
        return advertisement.manufacturer_data[address.manufacturer_id].hex(" ")
    assert address.service_data is not None
    return advertisement.service_data[address.service_data].hex(" ")


async def _connected(
    radio: Radio, plan: BandPlan, wait_s: float, connect_s: float
) -> tuple[list[ProbedPoint], list[RawRead]]:
    link = await radio.connect(plan.mac, connect_s)
    values: dict[Characteristic, bytes] = {}
    requests: list[RawRead] = []
    try:
        for characteristic in plan.read:
            values[characteristic] = await link.read(*characteristic)
            requests.append(_raw("read", characteristic, values[characteristic], plan))
        first: dict[Characteristic, asyncio.Future[bytes]] = {}
        for characteristic in plan.notified:
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            first[characteristic] = future
            await link.subscribe(*characteristic, _once(future))
        for characteristic, future in first.items():
            with contextlib.suppress(TimeoutError):
                values[characteristic] = await asyncio.wait_for(future, timeout=wait_s)
                requests.append(_raw("notification", characteristic, values[characteristic], plan))
    finally:
        await link.close()
    points: list[ProbedPoint] = []
    for characteristic, value in values.items():
        for point in plan.notified.get(characteristic) or plan.read.get(characteristic, []):
            try:
                decoded = _decode(point.address, value)
            except MalformedValue as exc:
                raise DeviceMalformed(f"ble://{plan.mac}", str(exc)) from None
            if decoded is not None:
                points.append(
                    ProbedPoint(point.name, decoded, _where(point.address), value.hex(" "))
                )
    silent = [c for c in plan.notified if c not in values]
    if silent and not points:
        raise DeviceUnreachable(
            f"ble://{plan.mac}",
            f"connected, but characteristic {silent[0][1]} sent no notification in {wait_s:g} s",
        )
    return points, requests


def _decode(address: BleAddress, value: bytes) -> int | float | bool | None:
    decoded = decode_point(address, value)
    return decoded[0] if decoded else None


def _once(future: asyncio.Future[bytes]) -> Callable[[bytes], None]:
    def notified(value: bytes) -> None:
        if not future.done():
            future.set_result(value)

    return notified


def _raw(kind: str, characteristic: Characteristic, value: bytes, plan: BandPlan) -> RawRead:
    points = plan.notified.get(characteristic) or plan.read.get(characteristic, [])
    return RawRead(
        f"{kind} {characteristic[1]}", value.hex(" "), tuple(point.name for point in points)
    )


def _where(address: BleAddress) -> str:
    """Where a point lives, short enough for a table: a vendor UUID by its first 8
    digits, which tell a vendor's characteristics apart (they share the rest)."""
    if address.decoder is None:
        return address.source
    source = re.sub(r"([0-9a-f]{8})(-[0-9a-f]{4}){3}-[0-9a-f]{12}", r"\1…", address.source)
    if address.field:
        return f"{source} {address.field}"
    return f"{source} byte {address.offset} {address.decoder}"


def _merged(known: Advertisement | None, new: Advertisement) -> Advertisement:
    """What a band advertised across reports (a name in one, data in another)."""
    if known is None:
        return new
    return Advertisement(
        new.address,
        max(new.rssi or -999, known.rssi or -999),
        new.name or known.name,
        tuple(dict.fromkeys((*known.services, *new.services))),
        {**known.manufacturer_data, **new.manufacturer_data},
        {**known.service_data, **new.service_data},
    )


def _hit(second: str, advertisement: Advertisement, profiles: Sequence[DeviceProfile]) -> ScanHit:
    rssi = "RSSI unknown" if advertisement.rssi is None else f"RSSI {advertisement.rssi} dBm"
    name = f", name {advertisement.name}" if advertisement.name else ""
    return ScanHit(
        second,
        DeviceAddress(Protocol.BLE, host=advertisement.address),
        f"{rssi}{name}",
        tuple(_check(profile, advertisement) for profile in profiles),
    )


def _check(profile: DeviceProfile, advertisement: Advertisement) -> ProfileCheck:
    settings = profile.settings_as(BleSettings)
    if settings is None:
        return ProfileCheck(profile.id, False, "the profile says nothing to recognise it by")
    if settings.name_prefix and (advertisement.name or "").startswith(settings.name_prefix):
        return ProfileCheck(profile.id, True, f"name starts with {settings.name_prefix}")
    shared = [uuid for uuid in settings.advertised_services if uuid in advertisement.services]
    if shared:
        return ProfileCheck(profile.id, True, f"advertises service {shared[0]}")
    if (
        settings.manufacturer_id is not None
        and settings.manufacturer_id in advertisement.manufacturer_data
    ):
        return ProfileCheck(
            profile.id, True, f"carries manufacturer data 0x{settings.manufacturer_id:04x}"
        )
    return ProfileCheck(profile.id, False, "neither its name, services nor manufacturer data fit")
