"""The OSDP driver: one panel per line, and the installer's probe and scan."""

import asyncio
import os
import queue
import time
from collections.abc import Sequence
from typing import Final

import serial

from edge.addresses import DeviceAddress
from edge.drivers.contract import (
    DeviceSpec,
    Driver,
    DriverOptions,
    Probe,
    ProbedPoint,
    ProfileCheck,
    RawRead,
    ScanHit,
    ScanProgress,
    ScanTerms,
)
from edge.drivers.osdp.bus import OsdpBus, SecureChannelError
from edge.drivers.osdp.line import SerialChannel, open_port
from edge.drivers.osdp.panel import (
    STATUS_INPUT,
    STATUS_LOCAL,
    CardRead,
    KeyPress,
    Offline,
    Online,
    Panel,
    PanelEvent,
    ReaderIdentity,
    ReaderSetup,
    Status,
)
from edge.drivers.osdp.reader import ReaderState
from edge.drivers.osdp.scan import ADDRESSES, Answer, parse_addresses, scan_line
from edge.drivers.osdp.settings import SOURCE, Secret, parse_settings
from edge.errors import ConfigError, DeviceTimeout, DeviceUnreachable
from schemas.profile import DeviceProfile
from schemas.protocols.osdp import OsdpAddress
from schemas.vocabulary import Protocol

PROBE_ONLINE_S: Final = 5.0
"""The least a probe waits for the reader to come online (a secure channel at 9600
baud takes a few hundred milliseconds; a reader retried after a miss, seconds)."""
PROBE_LISTEN_S: Final = 3.0
"""How long a probe listens for a card or a key press once the reader is online."""
_WHERE: Final = {
    "card_read": "osdp_RAW card",
    "keypress": "osdp_KEYPAD",
    "tamper": "osdp_LSTATR tamper",
    "power": "osdp_LSTATR power",
    "access": "card + release input",
    "credential": "card + release input",
    "forced": "contact + release input",
}


class OsdpDriver(Driver):
    """OSDP readers, the gateway each line's control panel (docs/osdp.md)."""

    name = "osdp"
    protocols = frozenset({Protocol.OSDP})
    scan_terms = ScanTerms(
        candidate="PD address",
        candidates="PD addresses",
        basis="every reader that answers a plain poll (or refuses it for want of a secure "
        "channel) is suggested each OSDP profile; anju device test, with the reader's key, "
        "confirms its inputs and replies",
        silence="Check the A/B wiring, the baud rate, the reader's address and its power; "
        "only one panel may poll a line at a time.",
    )

    def open(
        self, address: DeviceAddress, devices: Sequence[DeviceSpec], options: DriverOptions
    ) -> OsdpBus:
        """The line's bus, polling ``devices`` (the readers on ``address``'s port).

        Raises ConfigError naming ``drivers.osdp.<key>`` when a reader lacks what it
        needs, or naming both readers when two share a PD address or want different
        baud rates (one line runs at one).
        """
        _check_line(devices)
        settings = parse_settings(options.settings)
        settings.require(device.device_id for device in devices)
        return OsdpBus(
            address, devices, settings, card_key=settings.card_key(), timeout_s=options.timeout_s
        )

    async def probe(self, device: DeviceSpec, options: DriverOptions) -> Probe:
        """Bring the reader online (with its key, if the settings hold one), then show
        its identity, capabilities, inputs, tamper and power, and any card or key
        press within ``PROBE_LISTEN_S``. Without ``card_hash_key`` cards are hashed
        under a key made for this probe alone."""
        settings = parse_settings(options.settings)
        scbk = settings.scbk.get(device.device_id)
        key = settings.card_hash_key or Secret(os.urandom(32))
        return await asyncio.to_thread(
            _probe, device, scbk, key, max(options.timeout_s, PROBE_ONLINE_S)
        )

    def candidates(self, text: str) -> list[str]:
        """PD addresses, from a list such as ``0-20,31``; every address (0-126) when empty."""
        addresses = parse_addresses(text) if text.strip() else list(ADDRESSES)
        return [str(address) for address in addresses]

    async def scan(
        self,
        address: DeviceAddress,
        candidates: Sequence[str],
        profiles: Sequence[DeviceProfile],
        options: DriverOptions,
        progress: ScanProgress,
    ) -> list[ScanHit]:
        """Send a plain poll to each address of ``candidates``; no key is needed."""
        osdp_profiles = [profile for profile in profiles if profile.protocol == Protocol.OSDP]

        def hit(answer: Answer) -> ScanHit:
            secure = ", insists on a secure channel" if answer.secure_only else ""
            return ScanHit(
                str(answer.address),
                DeviceAddress(
                    Protocol.OSDP, path=address.path, unit=answer.address, baud=address.baud
                ),
                f"{answer.identity}{secure}",
                tuple(
                    ProfileCheck(profile.id, True, "an OSDP reader answered")
                    for profile in osdp_profiles
                ),
            )

        try:
            answers = await scan_line(
                address.path,
                address.baud,
                [int(candidate) for candidate in candidates],
                timeout_s=options.timeout_s,
                on_progress=lambda pd, answer: progress(
                    str(pd), hit(answer) if answer is not None else None
                ),
            )
        except serial.SerialException as exc:
            raise DeviceUnreachable(address.bus, f"cannot open the port: {exc}") from None
        return [hit(answer) for answer in answers]


def _check_line(devices: Sequence[DeviceSpec]) -> None:
    """Raises ConfigError naming both readers when two of one line share a PD address
    (one would never be heard) or its readers want different baud rates."""
    first: dict[int, DeviceSpec] = {}
    for device in devices:
        address = device.address
        other = first.setdefault(address.unit, device)
        if other is not device:
            raise ConfigError(
                SOURCE,
                "devices",
                f"{other.device_id} and {device.device_id} are both at OSDP address "
                f"{address.unit} on {address.path}: give each reader on a line an address "
                "of its own (set on the reader; anju device scan osdp lists those that answer)",
            )
        if address.baud != devices[0].address.baud:
            raise ConfigError(
                SOURCE,
                "devices",
                f"{devices[0].device_id} is at {devices[0].address.baud} baud and "
                f"{device.device_id} at {address.baud} on {address.path}: the readers on one "
                "line share one baud rate; set the same baud= in both addresses (and readers)",
            )


def _probe(device: DeviceSpec, scbk: Secret | None, card_key: Secret, wait_s: float) -> Probe:
    """The probe, on a thread of its own: a panel for this one reader, briefly."""
    where = str(device.address)
    unit = device.address.unit
    try:
        port = open_port(device.address.path, device.address.baud)
    except serial.SerialException as exc:
        raise DeviceUnreachable(where, f"cannot open the port: {exc}") from None
    events: queue.SimpleQueue[tuple[PanelEvent, float]] = queue.SimpleQueue()
    try:
        panel = Panel(
            SerialChannel(port),
            [ReaderSetup(unit, device.device_id, scbk)],
            lambda event: events.put((event, time.monotonic())),
            baud=device.address.baud,
            name=device.address.bus,
        )
    except BaseException:
        port.close()
        raise
    panel.start()
    seen: list[tuple[PanelEvent, float]] = []
    try:
        online = _wait_online(events, seen, device, wait_s, secure=scbk is not None)
        deadline = time.monotonic() + PROBE_LISTEN_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen.append(events.get(timeout=left))
            except queue.Empty:
                break
    finally:
        panel.stop()
    return _as_probe(device, card_key, online, panel.identity(unit), seen)


def _wait_online(
    events: "queue.SimpleQueue[tuple[PanelEvent, float]]",
    seen: list[tuple[PanelEvent, float]],
    device: DeviceSpec,
    wait_s: float,
    *,
    secure: bool,
) -> Online:
    where = str(device.address)
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            event, at = events.get(timeout=left)
        except queue.Empty:
            break
        if isinstance(event, Online):
            return event
        if isinstance(event, Offline) and event.reason != "silent":
            key = f"the key given for {device.device_id}"
            problem = (
                f"answered the secure-channel challenge with another key than {key}"
                if event.reason == "key_mismatch"
                else "offers no secure channel, yet a key was given for it"
            )
            raise SecureChannelError(where, f"the reader at OSDP address {event.address} {problem}")
        seen.append((event, at))
    hint = "" if secure else "; a reader that insists on a secure channel needs its key"
    raise DeviceTimeout(
        where,
        f"no reader came online at OSDP address {device.address.unit} within {wait_s:g} s "
        f"(check the address, baud rate and A/B wiring; anju device scan osdp lists the "
        f"readers that answer{hint})",
    )


def _as_probe(
    device: DeviceSpec,
    card_key: Secret,
    online: Online,
    identity: ReaderIdentity | None,
    seen: list[tuple[PanelEvent, float]],
) -> Probe:
    reader = ReaderState(device, card_key)
    requests = [RawRead("secure channel", "active" if online.secure else "not used (plain)")]
    if identity is not None:
        requests.append(RawRead("osdp_ID", str(identity.pd_id)))
        requests.append(
            RawRead(
                "osdp_CAP",
                ", ".join(
                    f"{label} {level}/{items}"
                    for label, (level, items) in identity.capabilities.items()
                ),
            )
        )
    values: dict[str, int | float | bool | str] = {}
    sources: dict[str, str] = {}
    for event, at in seen:
        if isinstance(event, CardRead):
            samples = reader.card(event, at)
            text = f"{event.bits}-bit card, format {event.card_format} (number not shown)"
        elif isinstance(event, KeyPress):
            samples = reader.keys(event, at)
            text = f"{len(event.digits)} key(s) (digits not shown)"
        elif isinstance(event, Status):
            samples = reader.status(event, at)
            text = event.report.hex(" ")
        else:
            continue
        names = [name for sample in samples for name in sample]
        requests.append(RawRead(_reply_name(event), text, tuple(dict.fromkeys(names))))
        for sample in samples:
            values.update(sample)
            sources.update(dict.fromkeys(sample, text))
    for sample in reader.due(time.monotonic() + 3600):
        values.update(sample)
        sources.update(dict.fromkeys(sample, "no release within the grant window"))
    if not any(isinstance(event, Status) for event, _ in seen):
        requests.append(
            RawRead(
                "inputs",
                f"none reported within {PROBE_LISTEN_S:g} s: this reader sends its inputs "
                "only when they change; open the door or press exit while it listens",
            )
        )
    points = [
        ProbedPoint(
            point.name,
            values[point.name],
            _where(point.address_as(OsdpAddress)),
            sources[point.name],
        )
        for point in device.points
        if point.name in values
    ]
    return Probe(tuple(points), tuple(requests))


def _reply_name(event: PanelEvent) -> str:
    if isinstance(event, CardRead):
        return "osdp_RAW"
    if isinstance(event, KeyPress):
        return "osdp_KEYPAD"
    if isinstance(event, Status):
        return {STATUS_INPUT: "osdp_ISTATR", STATUS_LOCAL: "osdp_LSTATR"}.get(
            event.kind, "osdp_OSTATR"
        )
    return type(event).__name__


def _where(address: OsdpAddress) -> str:
    if address.reply == "input_status":
        return f"osdp_ISTATR input {address.index}"
    if address.reply == "output_status":
        return f"osdp_OSTATR output {address.index}"
    return _WHERE.get(address.reply, address.reply)
