"""The Modbus driver: TCP and RTU buses, and the installer's probe and unit scan."""

from collections.abc import Sequence

from edge.addresses import DeviceAddress
from edge.drivers.contract import (
    DeviceSpec,
    Driver,
    DriverOptions,
    Probe,
    ScanHit,
    ScanProgress,
    ScanTerms,
)
from edge.drivers.modbus.bus import MODBUS_PROTOCOLS, ModbusBus
from edge.drivers.modbus.probe import UNIT_IDS, parse_units, read_device, scan_units
from schemas.profile import DeviceProfile


class ModbusDriver(Driver):
    name = "modbus"
    protocols = MODBUS_PROTOCOLS
    scan_terms = ScanTerms(
        candidate="unit",
        candidates="units",
        basis="profiles carry no identification register: a profile is suggested when every "
        "read it plans succeeds at that unit and the values it decodes are plausible",
        silence="Check the wiring, baud rate and parity, and that the devices are powered.",
    )

    def open(
        self, address: DeviceAddress, devices: Sequence[DeviceSpec], options: DriverOptions
    ) -> ModbusBus:
        return ModbusBus(address, timeout_s=options.timeout_s)

    async def probe(self, device: DeviceSpec, options: DriverOptions) -> Probe:
        return await read_device(
            device.profile, device.address, device.points, timeout_s=options.timeout_s
        )

    def candidates(self, text: str) -> list[str]:
        """Unit ids, from a list such as ``1-20,31``; every unit id (1-247) when empty."""
        units = parse_units(text) if text.strip() else UNIT_IDS
        return [str(unit) for unit in units]

    async def scan(
        self,
        address: DeviceAddress,
        candidates: Sequence[str],
        profiles: Sequence[DeviceProfile],
        options: DriverOptions,
        progress: ScanProgress,
    ) -> list[ScanHit]:
        """Try each unit id of ``candidates`` with one read of holding register 0."""
        return await scan_units(
            address,
            [int(unit) for unit in candidates],
            profiles=profiles,
            timeout_s=options.timeout_s,
            on_progress=lambda unit, hit: progress(str(unit), hit),
        )
