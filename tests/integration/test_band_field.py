"""Simulated wristbands heard and read by a plain bumble host over the HCI socket.

The gateway here is bumble's own ``Device`` on ``tcp-client:``, as a gateway opens a
USB dongle: it scans, connects, discovers and subscribes. Every wait is for a
condition with a deadline; the only plain sleep measures an advertising rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import pytest
from bumble import core
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.hci import Address, HCI_ErrorCode
from bumble.transport import open_transport

from firmware_sim import BandScenarioError, UnknownBandError
from firmware_sim.band_models import AlertFlags
from firmware_sim.wearables import BandField, main
from tests.unit.test_band_models import hrm_is_well_formed

CB1 = "F0:A1:00:00:00:01"
CB2 = "F0:A1:00:00:00:02"
BB1 = "F0:B1:00:00:00:01"
BB2 = "F0:B1:00:00:00:02"
HEART_RATE = UUID("2A37")
BATTERY_LEVEL = UUID("2A19")
STATUS = UUID("7a1e0002-5c3b-4e8a-9d2f-6b0c4a8e1f30")
VENDOR_SERVICE = UUID("7a1e0001-5c3b-4e8a-9d2f-6b0c4a8e1f30")
#: How late an alert sent "at once" may arrive; the next regular one is ~1 s away.
AT_ONCE_S = 0.3


class Gateway:
    """A bumble host on the dongle, keeping what it hears by address."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.heard: dict[str, list[tuple[float, Advertisement]]] = defaultdict(list)
        self._news = asyncio.Event()
        device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        address = advertisement.address.to_string(with_type_qualifier=False)
        self.heard[address].append((time.monotonic(), advertisement))
        self._news.set()

    def since(self, address: str, moment: float) -> list[Advertisement]:
        return [adv for at, adv in self.heard[address] if at > moment]

    async def until(self, condition: Callable[[], bool], what: str, within_s: float = 5.0) -> None:
        """Wait until ``condition`` holds after some advertisement, or fail naming ``what``."""
        try:
            async with asyncio.timeout(within_s):
                while not condition():
                    self._news.clear()
                    await self._news.wait()
        except TimeoutError:
            pytest.fail(f"within {within_s} s: {what}")


@contextlib.asynccontextmanager
async def gateway(spec: str) -> AsyncIterator[Gateway]:
    transport = await open_transport(spec)
    try:
        device = Device.with_hci(
            "test gateway", Address("F1:00:00:00:00:01"), transport.source, transport.sink
        )
        await device.power_on()
        yield Gateway(device)
    finally:
        await transport.close()


async def subscribe(connection: Connection, uuid: UUID) -> asyncio.Queue[tuple[float, bytes]]:
    """Discover the band's GATT and subscribe to ``uuid``: (time.time(), value) per notification."""
    peer = Peer(connection)
    await peer.discover_services()
    await peer.discover_characteristics()
    received: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    [characteristic] = peer.get_characteristics_by_uuid(uuid)
    await characteristic.subscribe(lambda value: received.put_nowait((time.time(), bytes(value))))
    return received


async def next_value(queue: asyncio.Queue[tuple[float, bytes]]) -> tuple[float, bytes]:
    return await asyncio.wait_for(queue.get(), timeout=3)


async def first(
    queue: asyncio.Queue[tuple[float, bytes]], condition: Callable[[bytes], bool]
) -> bytes:
    """The first value to come that meets ``condition`` (older ones may be queued)."""
    async with asyncio.timeout(3):
        while not condition(value := (await queue.get())[1]):
            pass
    return value


def manufacturer_flags(advertisement: Advertisement) -> int:
    found = advertisement.data.get(AdvertisingData.Type.MANUFACTURER_SPECIFIC_DATA)
    assert found is not None
    company, value = found
    assert company == 0xFFFF
    return value[0]


async def test_every_band_is_heard_by_name_about_once_a_second() -> None:
    async with BandField(connected=3, beacons=4, seed=2) as field, gateway(field.hci_spec) as gw:
        assert field.hci_spec == f"tcp-client:127.0.0.1:{field.port}"
        await gw.device.start_scanning(active=True, filter_duplicates=False)
        await gw.until(lambda: len(gw.heard) == 7, "all seven bands heard")
        start = time.monotonic()
        await asyncio.sleep(3.0)
        for address, band in field.bands.items():
            heard = gw.since(address, start)
            # One advertising event a second: 3 in 3 s, give or take the window's edges.
            assert 2 <= len(heard) <= 4, (address, len(heard))
            advertisement = heard[-1]
            data = advertisement.data
            assert data.get(AdvertisingData.Type.COMPLETE_LOCAL_NAME) == band.name
            if address.startswith("F0:A1"):
                # Active scanning merges the scan response, which holds the vendor UUID.
                assert advertisement.is_connectable
                assert data.get(
                    AdvertisingData.Type.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS
                ) == [UUID("180D")]
                assert data.get(
                    AdvertisingData.Type.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS
                ) == [VENDOR_SERVICE]
            else:
                assert not advertisement.is_connectable
                found = data.get(AdvertisingData.Type.MANUFACTURER_SPECIFIC_DATA)
                assert found is not None
                company, value = found
                assert (company, len(value), value[0]) == (0xFFFF, 4, 0)
                assert abs(value[1] - band.battery_pct) <= 1
                assert 30 <= value[2] <= 220
        # A host scanning with legacy commands gets legacy reports, without scan responses.
        await gw.device.stop_scanning()
        await gw.device.start_scanning(legacy=True, active=False, filter_duplicates=False)
        moment = time.monotonic()
        await gw.until(lambda: bool(gw.since(CB1, moment)), "CB1 heard by a legacy scan")
        [legacy, *_] = gw.since(CB1, moment)
        assert (legacy.is_legacy, legacy.is_connectable, legacy.is_scan_response) == (
            True,
            True,
            False,
        )
        assert (
            legacy.data.get(AdvertisingData.Type.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS)
            is None
        )
        assert field.errors == 0


async def test_care_band_gatt_over_a_connection() -> None:
    async with BandField(connected=2, beacons=1, seed=3) as field, gateway(field.hci_spec) as gw:
        # A beacon never connects: the attempt times out, and the dongle is free again.
        with pytest.raises(core.TimeoutError):
            await gw.device.connect(Address(BB1), timeout=1.5)
        connection = await gw.device.connect(Address(CB1), timeout=3)
        heart_rate = await subscribe(connection, HEART_RATE)
        status = await subscribe(connection, STATUS)
        band = field.band(CB1)
        for _ in range(2):
            _, value = await next_value(heart_rate)
            assert hrm_is_well_formed(value), value.hex()
            assert value[0] & 0x0F == 0x06
            assert 30 <= value[1] <= 220
            rrs = [int.from_bytes(value[i : i + 2], "little") for i in range(2, len(value), 2)]
            for rr in rrs:
                assert rr == pytest.approx(60 / value[1] * 1024, rel=0.12)
        _, value = await next_value(status)
        assert len(value) == 8
        assert value[0] == 0
        peer = Peer(connection)
        await peer.discover_services()
        await peer.discover_characteristics()
        [battery] = peer.get_characteristics_by_uuid(BATTERY_LEVEL)
        assert await battery.read_value() == bytes([band.battery_pct])
        await field.apply(CB1, "garbage")
        await first(heart_rate, lambda value: not hrm_is_well_formed(value))
        await first(status, lambda value: len(value) < 8)
        assert field.errors == 0


async def test_sos_reaches_the_gateway_at_once() -> None:
    async with BandField(connected=1, beacons=1, seed=4) as field, gateway(field.hci_spec) as gw:
        connection = await gw.device.connect(Address(CB1), timeout=3)
        status = await subscribe(connection, STATUS)
        # Just after a regular notification, so the next regular one is a second away.
        await next_value(status)
        applied = await field.apply(CB1, "sos")
        received_at, value = await next_value(status)
        assert value[0] & 0x01
        assert applied.notified_at is not None
        assert 0 <= received_at - applied.notified_at < AT_ONCE_S
        assert field.band(CB1).alert_flags == AlertFlags.SOS
        cancelled = await field.apply("anju-cb-0001", "cancel")
        received_at, value = await next_value(status)
        assert value[0] == 0
        assert cancelled.notified_at is not None
        assert received_at - cancelled.notified_at < AT_ONCE_S

        await gw.device.start_scanning(active=False, filter_duplicates=False)
        moment = time.monotonic()
        await gw.until(lambda: bool(gw.since(BB1, moment)), "the beacon heard")
        heard_at = time.monotonic()
        applied = await field.apply(BB1, "sos")
        assert applied.notified_at is not None
        await gw.until(
            lambda: any(manufacturer_flags(a) & 0x01 for a in gw.since(BB1, heard_at)),
            "the beacon's SOS advertised",
        )
        [(sos_at, _)] = [
            (at, a) for at, a in gw.heard[BB1] if at > heard_at and manufacturer_flags(a) & 1
        ][:1]
        assert sos_at - heard_at < AT_ONCE_S + 0.1
        # Nothing changed, nothing sent at once.
        assert (await field.apply(BB1, "hr_drift", duration_s=60)).notified_at is None


async def test_walk_away_silences_and_disconnects() -> None:
    async with BandField(connected=2, beacons=2, seed=5) as field, gateway(field.hci_spec) as gw:
        connection = await gw.device.connect(Address(CB1), timeout=3)
        lost: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        connection.on(Connection.EVENT_DISCONNECTION, lost.set_result)
        await gw.device.start_scanning(active=False, filter_duplicates=False)
        await field.apply(CB1, "walk_away")
        await field.apply(BB1, "walk_away")
        gone = time.monotonic() + 0.05
        # The gateway sees a supervision timeout, as when a wearer walks out of range.
        assert await asyncio.wait_for(lost, timeout=1) == HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR
        await gw.until(
            lambda: all(len(gw.since(a, gone)) >= 2 for a in (CB2, BB2)),
            "the bands in range heard twice",
        )
        assert gw.since(CB1, gone) == []
        assert gw.since(BB1, gone) == []
        assert not field.band(BB1).in_range

        await field.apply(CB1, "return")
        await field.apply(BB1, "return")
        back = time.monotonic()
        await gw.until(
            lambda: bool(gw.since(CB1, back)) and bool(gw.since(BB1, back)),
            "both bands heard again",
            within_s=3,
        )
        await gw.device.connect(Address(CB1), timeout=3)
        assert field.errors == 0


async def test_a_gateway_leaving_unplugs_the_dongle() -> None:
    async with BandField(connected=1, beacons=0, seed=6) as field:
        async with gateway(field.hci_spec) as gw:
            await gw.device.connect(Address(CB1), timeout=3)
        # The band saw its gateway vanish and advertises again for the next one.
        async with gateway(field.hci_spec) as gw:
            connection = await gw.device.connect(Address(CB1), timeout=3)
            await next_value(await subscribe(connection, HEART_RATE))


async def test_unknown_band_and_scenario_errors() -> None:
    async with BandField(connected=1, beacons=1, seed=7) as field:
        with pytest.raises(UnknownBandError, match="no band 'F0:A1:00:00:09:99'"):
            await field.apply("F0:A1:00:00:09:99", "sos")
        with pytest.raises(BandScenarioError, match="band F0:B1:00:00:00:01: no scenario 'nap'"):
            await field.apply("ANJU-BB-0001", "nap")
        with pytest.raises(BandScenarioError, match="takes still_s, not duration_s"):
            await field.apply(CB1, "fall_recovery", duration_s=3)


def test_help_teaches_the_control_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for needle in ("--control PORT", "--scenario BAND=NAME", '"notified_at"', "ready hci="):
        assert needle in out


async def test_command_line_serves_bands_and_takes_commands() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_sim.wearables",
        "--port=0",
        "--connected=1",
        "--beacons=2",
        "--seed=8",
        "--control=0",
        "--scenario=ANJU-BB-0002=battery_dying",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        ready = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        assert ready.startswith("ready hci=tcp-client:127.0.0.1:"), ready
        hci_spec, control = (part.split("=", 1)[1] for part in ready.split()[1:])
        host, port = control.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))

        async def command(line: str) -> dict[str, object]:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            reply = json.loads(await asyncio.wait_for(reader.readline(), timeout=5))
            assert isinstance(reply, dict)
            return reply

        async with gateway(hci_spec) as gw:
            await gw.device.start_scanning(active=False, filter_duplicates=False)
            await gw.until(lambda: bool(gw.heard[BB1]), "the beacon heard")
            reply = await command(json.dumps({"band": BB1, "scenario": "sos"}))
            assert (reply["ok"], reply["band"], reply["scenario"]) == (True, BB1, "sos")
            assert isinstance(reply["notified_at"], float)
            assert abs(reply["notified_at"] - time.time()) < 2
            moment = time.monotonic() - 0.5
            await gw.until(
                lambda: any(manufacturer_flags(a) & 0x01 for a in gw.since(BB1, moment)),
                "the SOS advertised",
            )
        reply = await command(
            '{"band": "F0:A1:00:00:00:01", "scenario": "hr_drift", "args": {"duration_s": 5}}'
        )
        assert reply == {"ok": True, "band": CB1, "scenario": "hr_drift", "notified_at": None}
        for line, error in [
            ('{"band": "F0:A1:00:00:09:99", "scenario": "sos"}', "no band 'F0:A1:00:00:09:99'"),
            ('{"band": "F0:A1:00:00:00:01", "scenario": "nap"}', "no scenario 'nap'"),
            ("sos please", "not a JSON line"),
            ('{"band": 1, "scenario": "sos"}', "must be strings"),
            ('{"band": "ANJU-CB-0001", "scenario": "sos", "args": {"x": "y"}}', "numbers"),
        ]:
            reply = await command(line)
            assert reply["ok"] is False, (line, reply)
            assert error in str(reply["error"]), (line, reply)
        writer.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
