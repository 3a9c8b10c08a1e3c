"""The ``bumble`` backend: a Bluetooth host of its own over any HCI transport.

On a gateway without BlueZ this drives a USB dongle directly (``bumble:usb:0``); in
tests and the demo it reaches the simulated bands' virtual controller over TCP
(``bumble:tcp-client:127.0.0.1:PORT``), so scanning, connecting, discovery and
notifications run through the same HCI commands and events as on a real dongle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from bumble.core import UUID, BaseBumbleError
from bumble.device import Advertisement as BumbleAdvertisement
from bumble.device import Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy
from bumble.hci import Address, AddressType, HCI_Error
from bumble.host import Host
from bumble.transport import open_transport
from bumble.transport.common import Transport, TransportLostError

from edge.drivers.ble.hci_reports import advertisement, parse_report
from edge.drivers.ble.radio import (
    Advertisement,
    Link,
    LinkFailed,
    Notify,
    Radio,
    RadioUnavailable,
)

log = logging.getLogger(__name__)

_HOST_ADDRESS: Final = "F0:FF:00:00:00:01"
"""The gateway host's own static random address on the air."""

_TRANSPORT_ERRORS = (OSError, ValueError, TransportLostError, BaseBumbleError, HCI_Error)


class BumbleRadio(Radio):
    """An HCI controller reached over ``transport`` (bumble's transport syntax)."""

    def __init__(self, transport: str) -> None:
        self.name = f"bumble:{transport}"
        self._spec = transport
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._heard: Callable[[Advertisement], None] | None = None
        self._addresses: dict[str, Address] = {}
        """The last advertised address of each band with its type, to connect to it."""
        self._lost = asyncio.Event()
        self._connecting = asyncio.Lock()

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    @property
    def _host(self) -> Device:
        if self._device is None:
            raise RadioUnavailable(self.name, "the adapter is not open")
        return self._device

    async def open(self) -> None:
        try:
            self._transport = await open_transport(self._spec)
        except _TRANSPORT_ERRORS as exc:
            raise RadioUnavailable(self.name, f"cannot open the HCI transport: {exc}") from None
        source = self._transport.source
        terminated = getattr(source, "terminated", None)
        if isinstance(terminated, asyncio.Future):
            terminated.add_done_callback(lambda _: self._lost.set())
        device = Device.with_hci(
            "anju-gateway", Address(_HOST_ADDRESS), source, self._transport.sink
        )
        device.on("advertisement", self._on_advertisement)
        source.set_packet_sink(_ReportTap(self, device.host))
        try:
            await asyncio.wait_for(device.power_on(), timeout=10)
        except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
            await self.close()
            raise RadioUnavailable(self.name, f"the controller does not answer: {exc!r}") from None
        self._device = device

    async def scan(self, heard: Callable[[Advertisement], None]) -> None:
        self._heard = heard
        try:
            await self._host.start_scanning(active=False, filter_duplicates=False)
        except _TRANSPORT_ERRORS as exc:
            raise RadioUnavailable(self.name, f"cannot scan: {exc}") from None

    async def stop_scan(self) -> None:
        self._heard = None
        device = self._device
        if device is not None and device.scanning and not self._lost.is_set():
            try:
                await device.stop_scanning()
            except _TRANSPORT_ERRORS as exc:
                log.debug("%s: stopping the scan failed: %r", self.name, exc)

    def _on_advertisement(self, report: BumbleAdvertisement) -> None:
        """A report bumble's host decoded (one the fast path left to it)."""
        address = report.address.to_string(with_type_qualifier=False)
        self._addresses[address] = report.address
        rssi = report.rssi if report.rssi != BumbleAdvertisement.RSSI_NOT_AVAILABLE else None
        self.heard(advertisement(address, rssi, bytes(report.data_bytes)), None)

    def heard(self, advertisement: Advertisement, address_type: int | None) -> None:
        """An advertisement from either path; ``address_type`` when known from HCI."""
        if address_type is not None and advertisement.address not in self._addresses:
            self._addresses[advertisement.address] = Address(
                advertisement.address, AddressType(address_type)
            )
        if self._heard is not None:
            self._heard(advertisement)

    async def connect(self, address: str, timeout_s: float) -> Link:
        device = self._host
        peer_address = self._addresses.get(address, Address(address))
        # The controller makes one connection at a time; the next waits its turn.
        async with self._connecting:
            try:
                connection = await device.connect(peer_address, timeout=timeout_s)
            except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
                raise LinkFailed(address, f"cannot connect: {_reason(exc)}") from None
        link = _BumbleLink(address, connection)
        try:
            await asyncio.wait_for(link.discover(), timeout=timeout_s)
        except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
            await link.close()
            raise LinkFailed(address, f"service discovery failed: {_reason(exc)}") from None
        return link

    async def close(self) -> None:
        device, self._device = self._device, None
        if device is not None and not self._lost.is_set():
            for connection in list(device.connections.values()):
                try:
                    await asyncio.wait_for(connection.disconnect(), timeout=1)
                except (TimeoutError, *_TRANSPORT_ERRORS):
                    pass
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()


class _ReportTap:
    """Sits between the HCI transport and bumble's host: advertising reports go to the
    radio parsed from their bytes (``hci_reports``), every other packet to the host."""

    def __init__(self, radio: BumbleRadio, host: Host) -> None:
        self._radio = radio
        self._host = host

    def on_packet(self, packet: bytes) -> None:
        report = parse_report(packet)
        if report is None:
            self._host.on_packet(packet)
        else:
            self._radio.heard(*report)


class _BumbleLink(Link):
    def __init__(self, address: str, connection: Connection) -> None:
        self.address = address
        self._connection = connection
        self._peer = Peer(connection)
        self._lost = asyncio.Event()
        connection.on("disconnection", lambda _reason: self._lost.set())

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    async def discover(self) -> None:
        await self._peer.discover_services()
        await self._peer.discover_characteristics()

    def _characteristic(self, service: str, characteristic: str) -> CharacteristicProxy[Any]:
        for proxy in self._peer.get_characteristics_by_uuid(
            _uuid(characteristic), service=_uuid(service)
        ):
            return proxy
        raise LinkFailed(self.address, f"no characteristic {characteristic} in service {service}")

    async def read(self, service: str, characteristic: str) -> bytes:
        proxy = self._characteristic(service, characteristic)
        try:
            return bytes(await proxy.read_value())
        except _TRANSPORT_ERRORS as exc:
            raise LinkFailed(self.address, f"reading {characteristic}: {_reason(exc)}") from None

    async def subscribe(self, service: str, characteristic: str, notify: Notify) -> None:
        proxy = self._characteristic(service, characteristic)
        try:
            await proxy.subscribe(lambda value: notify(bytes(value)))
        except _TRANSPORT_ERRORS as exc:
            raise LinkFailed(
                self.address, f"subscribing to {characteristic}: {_reason(exc)}"
            ) from None

    async def write(self, service: str, characteristic: str, value: bytes) -> None:
        proxy = self._characteristic(service, characteristic)
        try:
            await proxy.write_value(value, with_response=True)
        except _TRANSPORT_ERRORS as exc:
            raise LinkFailed(self.address, f"writing {characteristic}: {_reason(exc)}") from None

    async def close(self) -> None:
        if self._lost.is_set():
            return
        try:
            await asyncio.wait_for(self._connection.disconnect(), timeout=2)
        except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
            log.debug("%s: disconnecting failed: %r", self.address, exc)
        self._lost.set()


def _uuid(text: str) -> UUID:
    return UUID(text.upper() if len(text) == 4 else text)


def _reason(exc: BaseException) -> str:
    return "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
