"""The ``bleak`` backend: the gateway box's own adapter, through BlueZ over D-Bus.

This is the production path on a gateway with BlueZ. BlueZ reports an address once
per scan unless asked for every advertisement (``DuplicateData``), which presence
and advertised data need. These machines have no BlueZ, so this backend is checked
here only for how it fails (no adapter: one clear reason); the code above it is the
same code the bumble backend runs under test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from edge.drivers.ble.radio import (
    Advertisement,
    Link,
    LinkFailed,
    Notify,
    Radio,
    RadioUnavailable,
    short_uuid,
)

log = logging.getLogger(__name__)

SYSFS: Final = Path("/sys/class/bluetooth")
"""Where the kernel lists Bluetooth adapters (``hci0``)."""

_ERRORS = (BleakError, OSError, EOFError)


def adapter_missing(adapter: str, sysfs: Path = SYSFS) -> str | None:
    """Why ``adapter`` cannot be used on this machine, or None when the kernel has it."""
    if (sysfs / adapter).exists():
        return None
    present = sorted(path.name for path in sysfs.glob("hci*")) if sysfs.is_dir() else []
    if not present:
        return (
            f"no Bluetooth adapter on this gateway ({sysfs} lists none): plug one in, or "
            "use a USB dongle that bumble drives itself (adapter bumble:usb:0)"
        )
    return f"no Bluetooth adapter {adapter} (this gateway has {', '.join(present)})"


class BleakRadio(Radio):
    def __init__(self, adapter: str) -> None:
        self.name = f"bleak:{adapter}"
        self._adapter = adapter
        self._scanner: BleakScanner | None = None
        self._devices: dict[str, BLEDevice] = {}
        self._heard: Callable[[Advertisement], None] | None = None
        self._lost = asyncio.Event()

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    async def open(self) -> None:
        problem = adapter_missing(self._adapter)
        if problem is not None:
            raise RadioUnavailable(self.name, problem)

    async def scan(self, heard: Callable[[Advertisement], None]) -> None:
        self._heard = heard
        self._scanner = BleakScanner(
            self._on_advertisement,
            bluez={"adapter": self._adapter, "filters": {"DuplicateData": True}},
        )
        try:
            await self._scanner.start()
        except _ERRORS as exc:
            self._scanner = None
            raise RadioUnavailable(self.name, f"BlueZ cannot scan: {exc}") from None

    async def stop_scan(self) -> None:
        scanner, self._scanner = self._scanner, None
        self._heard = None
        if scanner is not None:
            try:
                await scanner.stop()
            except _ERRORS as exc:
                log.debug("%s: stopping the scan failed: %r", self.name, exc)

    def _on_advertisement(self, device: BLEDevice, data: AdvertisementData) -> None:
        address = device.address.upper()
        self._devices[address] = device
        if self._heard is None:
            return
        self._heard(
            Advertisement(
                address,
                data.rssi,
                data.local_name,
                tuple(short_uuid(text) for text in data.service_uuids),
                dict(data.manufacturer_data),
                {short_uuid(key): value for key, value in data.service_data.items()},
            )
        )

    async def connect(self, address: str, timeout_s: float) -> Link:
        link = _BleakLink(address)
        client = BleakClient(
            self._devices.get(address, address),
            disconnected_callback=lambda _client: link.lost.set(),
            timeout=timeout_s,
            bluez={"adapter": self._adapter},
        )
        try:
            await client.connect()
        except (TimeoutError, *_ERRORS) as exc:
            raise LinkFailed(address, f"cannot connect: {exc or 'timed out'}") from None
        link.client = client
        return link

    async def close(self) -> None:
        await self.stop_scan()


class _BleakLink(Link):
    def __init__(self, address: str) -> None:
        self.address = address
        self.client: BleakClient | None = None
        self._lost = asyncio.Event()

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    def _handle(self, service: str, characteristic: str) -> int:
        client = self.client
        if client is None:
            raise LinkFailed(self.address, "not connected")
        for found in client.services:
            if short_uuid(found.uuid) != service:
                continue
            for candidate in found.characteristics:
                if short_uuid(candidate.uuid) == characteristic:
                    return candidate.handle
        raise LinkFailed(self.address, f"no characteristic {characteristic} in service {service}")

    async def read(self, service: str, characteristic: str) -> bytes:
        handle = self._handle(service, characteristic)
        assert self.client is not None
        try:
            return bytes(await self.client.read_gatt_char(handle))
        except _ERRORS as exc:
            raise LinkFailed(self.address, f"reading {characteristic}: {exc}") from None

    async def subscribe(self, service: str, characteristic: str, notify: Notify) -> None:
        handle = self._handle(service, characteristic)
        assert self.client is not None
        try:
            await self.client.start_notify(handle, lambda _char, value: notify(bytes(value)))
        except _ERRORS as exc:
            raise LinkFailed(self.address, f"subscribing to {characteristic}: {exc}") from None

    async def write(self, service: str, characteristic: str, value: bytes) -> None:
        handle = self._handle(service, characteristic)
        assert self.client is not None
        try:
            await self.client.write_gatt_char(handle, value, response=True)
        except _ERRORS as exc:
            raise LinkFailed(self.address, f"writing {characteristic}: {exc}") from None

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                await client.disconnect()
            except _ERRORS as exc:
                log.debug("%s: disconnecting failed: %r", self.address, exc)
        self._lost.set()
