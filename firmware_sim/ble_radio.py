"""The simulated radio: bands and the gateway's dongle on one bumble link, the dongle on TCP.

Every band is a bumble ``Controller`` on the :class:`Air` (a bumble ``LocalLink``); the
gateway's is a :class:`Dongle` on the same air, served as HCI (H4 packets) over a TCP
socket by :class:`DongleServer`, so a gateway opens ``tcp-client:HOST:PORT`` as it
would open a USB dongle. The dongle is plugged in when a gateway connects and
unplugged when it disconnects: its links drop, and the bands see the gateway vanish.

bumble's own virtual controller (0.0.236) differs from a real one where a gateway
notices, and :class:`Dongle` and :class:`Air` behave as a dongle and the air do:

- one advertising report per advertising event, with the advertiser's PDU type
  (bumble sends two, the second claiming to be a scan response and repeating the
  advertising data, and reports every advertiser as connectable);
- a scan response only when the host scans actively and the advertiser is
  scannable, carrying the advertiser's scan response data (bumble never sends it);
- a connection only to a connectable advertiser: a gateway trying to connect to a
  CB-100 beacon times out, as it would;
- LE Create Connection Cancel ends a pending connection with an LE Connection
  Complete event (status 0x02), so a host's connect timeout returns (bumble ignores
  the cancel and the host waits forever);
- HCI Reset, like unplugging, drops the dongle's links, which the bands see as a
  supervision timeout (reason 0x08), and stops scanning (bumble ignores it);
- advertisements travel only to dongles and connection requests only to the band
  they name: bumble hands every advertisement to every controller on the link, which
  for 320 bands is some 100,000 calls a second.

bumble's controller and host format every packet they pass for their debug log, on
or off (f-strings handed to ``logger.debug``): about half the CPU of 320 bands.
:class:`QuietController` and :class:`QuietHost` pass the frequent packets on without
formatting them unless that log is on; the bands and the dongle are built on them.

Bands advertise with advertising sets (bumble's ``Device`` uses them whenever the
controller supports extended advertising, as bumble's does), with legacy PDUs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from bumble import core, hci, ll
from bumble.controller import Controller
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import PacketParser

from firmware_sim import SimServerError

__all__ = ["Air", "Dongle", "DongleServer", "QuietController", "QuietHost"]

_log = logging.getLogger(__name__)
_controller_log = logging.getLogger("bumble.controller")
_host_log = logging.getLogger("bumble.host")

_Properties = hci.HCI_LE_Set_Extended_Advertising_Parameters_Command.AdvertisingProperties
_ReportType = hci.HCI_LE_Extended_Advertising_Report_Event.EventType
#: The report's event type carries these bits of the advertiser's properties.
_REPORTED_PROPERTIES: Final = (
    _Properties.CONNECTABLE_ADVERTISING
    | _Properties.SCANNABLE_ADVERTISING
    | _Properties.DIRECTED_ADVERTISING
    | _Properties.USE_LEGACY_ADVERTISING_PDUS
)
_ACTIVE_SCANNING: Final = hci.HCI_LE_Set_Scan_Parameters_Command.ACTIVE_SCANNING
_RSSI_DBM: Final = -60
_NO_ADI: Final = hci.HCI_LE_Extended_Advertising_Report_Event.NO_ADI_FIELD_PROVIDED
_NO_TX_POWER: Final = (
    hci.HCI_LE_Extended_Advertising_Report_Event.TX_POWER_INFORMATION_NOT_AVAILABLE
)


@dataclass(frozen=True, slots=True)
class _AdvertisingEvent:
    """What a scanner can hear of one advertising event."""

    address: hci.Address
    properties: int
    data: bytes
    scan_response: bytes


class Air(LocalLink):
    """The link between the bands' controllers and the gateway's dongles.

    Advertisements reach only dongles (bands never scan); a connection request
    reaches only the band it names. Everything else is bumble's ``LocalLink``.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._dongles: set[Dongle] = set()

    def add_controller(self, controller: Controller) -> None:
        """Put a controller on the air; a :class:`Dongle` also hears advertisements."""
        super().add_controller(controller)
        if isinstance(controller, Dongle):
            self._dongles.add(controller)

    def remove_controller(self, controller: Controller) -> None:
        """Take a controller off the air."""
        super().remove_controller(controller)
        self._dongles.discard(controller)

    def send_advertising_pdu(
        self, sender_controller: Controller, packet: ll.AdvertisingPdu
    ) -> None:
        """Carry an advertisement to the dongles, or a connection request to its band."""
        loop = asyncio.get_running_loop()
        if isinstance(packet, ll.ConnectInd):
            band = self.find_le_controller(packet.advertiser_address)
            if band is not None:
                loop.call_soon(band.on_ll_advertising_pdu, packet)
            return
        if not isinstance(packet, ll.AdvExtInd):
            return
        advertiser = next(
            (
                s
                for s in sender_controller.advertising_sets.values()
                if s.enabled and s.address == packet.advertiser_address
            ),
            None,
        )
        if advertiser is None or advertiser.parameters is None:
            return
        event = _AdvertisingEvent(
            address=packet.advertiser_address,
            properties=advertiser.parameters.advertising_event_properties,
            data=packet.data,
            scan_response=bytes(advertiser.scan_response_data),
        )
        for dongle in self._dongles:
            loop.call_soon(dongle.hear, event)


class QuietController(Controller):
    """bumble's ``Controller``, formatting packets only when ``bumble.controller`` debugs."""

    def on_hci_packet(self, packet: hci.HCI_Packet) -> None:
        """A packet from the host: commands and ACL data dispatched without formatting."""
        if _controller_log.isEnabledFor(logging.DEBUG):
            super().on_hci_packet(packet)
        elif isinstance(packet, hci.HCI_Command):
            self.on_hci_command_packet(packet)
        elif isinstance(packet, hci.HCI_AclDataPacket):
            self.on_hci_acl_data_packet(packet)
        else:
            super().on_hci_packet(packet)

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        """A packet to the host, on the next turn of the event loop as bumble sends it."""
        if _controller_log.isEnabledFor(logging.DEBUG):
            super().send_hci_packet(packet)
        elif self.host is not None:
            asyncio.get_running_loop().call_soon(self.host.on_packet, bytes(packet))


class QuietHost(Host):
    """bumble's ``Host``, formatting packets only when ``bumble.host`` debugs."""

    def on_hci_packet(self, packet: hci.HCI_Packet) -> None:
        """A packet from the controller: events and ACL data dispatched without formatting."""
        if _host_log.isEnabledFor(logging.DEBUG) or self.snooper is not None:
            super().on_hci_packet(packet)
        elif isinstance(packet, hci.HCI_Event):
            self.on_hci_event_packet(packet)
        elif isinstance(packet, hci.HCI_AclDataPacket):
            self.on_hci_acl_data_packet(packet)
        else:
            super().on_hci_packet(packet)

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        """A packet to the controller."""
        if _host_log.isEnabledFor(logging.DEBUG) or self.snooper is not None:
            super().send_hci_packet(packet)
        elif self.hci_sink is not None:
            self.hci_sink.on_packet(bytes(packet))


class Dongle(QuietController):
    """The gateway's controller, reporting and connecting as a real one does.

    See the module docstring for where it departs from bumble's ``Controller``.
    """

    _extended_reports: bool = True

    def hear(self, event: _AdvertisingEvent) -> None:
        """Report an advertising event to the host while scanning; connect if asked to."""
        if self.le_scan_enable:
            event_type = event.properties & _REPORTED_PROPERTIES
            self._report(event, event_type, event.data)
            if (
                self.le_scan_type == _ACTIVE_SCANNING
                and event.properties & _Properties.SCANNABLE_ADVERTISING
            ):
                self._report(event, event_type | _ReportType.SCAN_RESPONSE, event.scan_response)
        pending = self.pending_le_connection
        if (
            pending is not None
            and pending.peer_address == event.address
            and event.properties & _Properties.CONNECTABLE_ADVERTISING
        ):
            self.create_le_connection(event.address)

    def _report(self, event: _AdvertisingEvent, event_type: int, data: bytes) -> None:
        if self._extended_reports:
            self.send_hci_packet(
                hci.HCI_LE_Extended_Advertising_Report_Event(
                    [
                        hci.HCI_LE_Extended_Advertising_Report_Event.Report(
                            event_type=event_type,
                            address_type=event.address.address_type,
                            address=event.address,
                            primary_phy=hci.Phy.LE_1M,
                            secondary_phy=0,
                            advertising_sid=_NO_ADI,
                            tx_power=_NO_TX_POWER,
                            rssi=_RSSI_DBM,
                            periodic_advertising_interval=0,
                            direct_address_type=0,
                            direct_address=hci.Address.ANY,
                            data=data,
                        )
                    ]
                )
            )
            return
        legacy_type = hci.HCI_LE_Extended_Advertising_Report_Event.LEGACY_PDU_TYPE_MAP[
            event_type & 0x0F
        ]
        self.send_hci_packet(
            hci.HCI_LE_Advertising_Report_Event(
                [
                    hci.HCI_LE_Advertising_Report_Event.Report(
                        event_type=legacy_type,
                        address_type=event.address.address_type,
                        address=event.address,
                        data=data,
                        rssi=_RSSI_DBM,
                    )
                ]
            )
        )

    def unplug(self) -> None:
        """Lose power: every link drops (the bands see a supervision timeout), scanning stops."""
        for connection in list(self.le_connections.values()):
            connection.send_ll_control_pdu(
                ll.TerminateInd(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)
            )
        self.le_connections.clear()
        self.pending_le_connection = None
        self.le_scan_enable = False

    # -- HCI commands bumble's controller gets wrong ---------------------------------

    def on_hci_reset_command(
        self, command: hci.HCI_Reset_Command
    ) -> hci.HCI_StatusReturnParameters:
        """HCI Reset: drop every link and stop scanning, as a real controller does."""
        self.unplug()
        return super().on_hci_reset_command(command)

    def on_hci_le_set_scan_enable_command(
        self, command: hci.HCI_LE_Set_Scan_Enable_Command
    ) -> hci.HCI_StatusReturnParameters:
        """Legacy scanning: report with legacy advertising reports."""
        self._extended_reports = False
        return super().on_hci_le_set_scan_enable_command(command)

    def on_hci_le_set_extended_scan_parameters_command(
        self, command: hci.HCI_LE_Set_Extended_Scan_Parameters_Command
    ) -> hci.HCI_StatusReturnParameters:
        """Remember whether the host scans actively (bumble keeps only the address type)."""
        self.le_scan_type = command.scan_types[0] if command.scan_types else 0
        return super().on_hci_le_set_extended_scan_parameters_command(command)

    def on_hci_le_set_extended_scan_enable_command(
        self, command: hci.HCI_LE_Set_Extended_Scan_Enable_Command
    ) -> hci.HCI_StatusReturnParameters:
        """Extended scanning: report with extended advertising reports."""
        self._extended_reports = True
        return super().on_hci_le_set_extended_scan_enable_command(command)

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        """End the pending connection: Command Complete, then a failed Connection Complete."""
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        # Scheduled, so that the host reads the Command Complete first, as the
        # specification orders (Vol 4, Part E, 7.8.13).
        asyncio.get_running_loop().call_soon(
            self.send_hci_packet,
            hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=pending.peer_address.address_type,
                peer_address=pending.peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            ),
        )
        return super().on_hci_le_create_connection_cancel_command(command)


class _HciSession(asyncio.Protocol):
    """One gateway on the HCI socket: a dongle plugged in for as long as it stays."""

    def __init__(self, server: DongleServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._dongle: Dongle | None = None
        self._parser: PacketParser | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        if self._server.session is not None:
            # The previous gateway may be gone without its close having arrived yet
            # (a restart): the newcomer takes the dongle over.
            _log.info("HCI client %s takes the dongle over from the previous one", peer)
            self._server.session.end()
        self._transport = transport
        self._server.session = self
        self._dongle = Dongle(f"dongle for {peer}", host_sink=self, link=self._server.air)
        self._parser = PacketParser(self._dongle)
        _log.info("HCI client %s connected on port %d", peer, self._server.port)

    def data_received(self, data: bytes) -> None:
        if self._parser is None or self._transport is None:
            return
        try:
            self._parser.feed_data(data)
        except core.InvalidPacketError as error:
            # Without H4 framing there is no way back in step: drop the host.
            _log.warning("HCI client sent an invalid packet (%s): disconnecting it", error)
            self.end()

    def on_packet(self, packet: bytes) -> None:
        """The dongle's packets to the host."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(packet)

    def connection_lost(self, exc: Exception | None) -> None:
        self.end()

    def end(self) -> None:
        """Unplug the dongle and close the connection (once; later calls do nothing)."""
        if self._dongle is not None:
            self._dongle.unplug()
            self._server.air.remove_controller(self._dongle)
            self._dongle = self._parser = None
            _log.info("HCI client left port %d: dongle unplugged", self._server.port)
        if self._server.session is self:
            self._server.session = None
        if self._transport is not None:
            self._transport.close()


class DongleServer:
    """Serves a :class:`Dongle` on the air to one gateway at a time, as HCI over TCP.

    A gateway connecting while another is connected takes the dongle over: the
    first one's links drop and its connection closes. ``port`` 0 picks a free port;
    :attr:`port` is the one bound once started. An async context manager: entering
    binds (``SimServerError`` when it cannot), leaving closes the socket and unplugs
    the dongle of a connected gateway.
    """

    def __init__(self, air: Air, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.air = air
        self.session: _HciSession | None = None
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port the socket listens on (the one asked for until started)."""
        return self._port

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _HciSession(self), self._host, self._port
            )
        except OSError as error:
            raise SimServerError(
                f"cannot serve HCI on {self._host}:{self._port}: {error}"
            ) from None
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is None:
            return
        self._server.close()
        if self.session is not None:
            self.session.end()
        await self._server.wait_closed()
        self._server = None
