"""The simulated 30-tag device of the edge-modbus benchmark, served by firmware_sim's servers.

Its values move the way a quiet building's do (temperature and RSSI wander, a door opens
now and then, a badge is read about once a minute per door), so the agent's
report-by-exception and event rules have the work they would have in service, rather
than the nothing a frozen register image would give them. The register image is
rebuilt at most once per simulated second, on the first read after it is due, so a
process can host hundreds of these without a timer per device.
"""

import random
import time
from collections.abc import Callable, Mapping, Sequence

from edge.drivers.modbus.plan import encode_value
from firmware_sim import IllegalDataAddress, IllegalDataValue
from schemas.profile import DeviceProfile, Point
from schemas.protocols.modbus import ModbusAddress, ModbusTable

_U16_MAX = 0xFFFF
_ZONES = 8
# Expected number of seconds between two events of each kind at one device.
_BADGE_EVERY_S = 60.0
_DOOR_OPENS_EVERY_S = 120.0
_ZONE_ALARM_EVERY_S = 3600.0


class ZoneModuleModel:
    """One bench-30tag device: a ``firmware_sim.modbus_server.ModbusDeviceModel``.

    ``profile`` supplies the register map (so the benchmark profile file is the one
    source of addresses, types and scales); ``seed`` makes a run repeatable.
    """

    def __init__(
        self,
        profile: DeviceProfile,
        *,
        seed: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._profile = profile
        self._random = random.Random(seed)
        self._clock = clock
        self._points = [p for p in profile.points if isinstance(p.address, ModbusAddress)]
        self._input: dict[int, int] = {}
        self._holding: dict[int, int] = {}
        self._next_tick = clock()
        self._values: dict[str, float] = {}
        self.power_cycle()

    @property
    def model(self) -> str:
        return self._profile.model

    def power_cycle(self) -> None:
        """Back to power-on values: door closed and locked, event log empty, zones normal."""
        self._values = {
            "temperature": 21.0 + self._random.uniform(-2, 2),
            "co": 1.0,
            "obscuration": 0.01,
            "battery": float(self._random.randint(60, 100)),
            "rssi": float(self._random.randint(-80, -55)),
            "supply_voltage": 24.0,
            "door_locked": 1.0,
            "held_open_limit": 30.0,
            **{f"zone{k}_level": 0.2 for k in range(1, _ZONES + 1)},
        }
        self._rebuild()

    def input_registers(self) -> Mapping[int, int]:
        self._maybe_tick()
        return self._input

    def holding_registers(self) -> Mapping[int, int]:
        self._maybe_tick()
        return self._holding

    def write_holding_registers(self, address: int, values: Sequence[int]) -> None:
        """Accept a new held-open limit (5-600 s) at its register; refuse anything else."""
        for offset, value in enumerate(values):
            if address + offset not in self._holding:
                raise IllegalDataAddress(
                    f"no holding register {address + offset}", address=address + offset
                )
            if not 5 <= value <= 600:
                raise IllegalDataValue(f"held-open limit {value} outside 5-600 s", address=address)
        self._values["held_open_limit"] = float(values[0])
        self._rebuild()

    def _maybe_tick(self) -> None:
        now = self._clock()
        if now < self._next_tick:
            return
        # Catch up at most a few seconds, so a process that stalled does not loop here.
        steps = min(5, int(now - self._next_tick) + 1)
        self._next_tick += steps
        if self._next_tick < now:
            self._next_tick = now + 1
        for _ in range(steps):
            self._step()
        self._rebuild()

    def _step(self) -> None:
        """One simulated second."""
        rng, v = self._random, self._values
        v["temperature"] = min(35.0, max(10.0, v["temperature"] + rng.gauss(0, 0.15)))
        v["co"] = min(30.0, max(0.0, v["co"] + rng.gauss(0, 0.8)))
        v["obscuration"] = min(0.5, max(0.0, v["obscuration"] + rng.gauss(0, 0.005)))
        v["rssi"] = min(-40.0, max(-95.0, v["rssi"] + rng.choice((-1, 0, 0, 1))))
        v["supply_voltage"] = 24.0 + rng.gauss(0, 0.05)
        if rng.random() < 1 / 3600:
            v["battery"] = max(0.0, v["battery"] - 1)
        for k in range(1, _ZONES + 1):
            v[f"zone{k}_level"] = max(0.0, 0.2 + rng.gauss(0, 0.02))
            status = v.get(f"zone{k}_status", 0.0)
            if status == 0 and rng.random() < 1 / _ZONE_ALARM_EVERY_S:
                v[f"zone{k}_status"] = 1.0
            elif status == 1 and rng.random() < 0.2:
                v[f"zone{k}_status"] = 0.0
        if v.get("door_open", 0.0):
            v["open_seconds"] = min(_U16_MAX, v.get("open_seconds", 0.0) + 1)
            if rng.random() < 0.25:
                v["door_open"], v["open_seconds"], v["door_locked"] = 0.0, 0.0, 1.0
        elif rng.random() < 1 / _DOOR_OPENS_EVERY_S:
            v["door_open"], v["door_locked"] = 1.0, 0.0
        held = v.get("open_seconds", 0.0) > v["held_open_limit"]
        v["status"] = 16.0 if held else 0.0
        if rng.random() < 1 / _BADGE_EVERY_S:
            v["event_count"] = (v.get("event_count", 0.0) + 1) % (_U16_MAX + 1)
            v["event_code"] = 1.0 if rng.random() < 0.9 else 2.0
            v["event_card_hash"] = float(rng.getrandbits(32))

    def _rebuild(self) -> None:
        """Encode every point's value into the register tables, bits last."""
        inputs: dict[int, int] = {}
        holding: dict[int, int] = {}
        bits: list[tuple[Point, bool]] = []
        for point in self._points:
            address = point.address_as(ModbusAddress)
            table = holding if address.table is ModbusTable.HOLDING_REGISTER else inputs
            value = self._values.get(point.name, 0.0)
            if address.bit is not None:
                table.setdefault(address.address, 0)
                bits.append((point, bool(value)))
                continue
            for offset, word in enumerate(encode_value(value, point)):
                table[address.address + offset] = word
        for point, on in bits:
            address = point.address_as(ModbusAddress)
            table = holding if address.table is ModbusTable.HOLDING_REGISTER else inputs
            if on and address.bit is not None:
                table[address.address] |= 1 << address.bit
        # Unused words inside the map (reserved registers) read as 0, as on the device,
        # so a coalesced read spanning them is answered rather than refused.
        for table in (inputs, holding):
            if table:
                for register in range(min(table), max(table) + 1):
                    table.setdefault(register, 0)
        self._input, self._holding = inputs, holding
