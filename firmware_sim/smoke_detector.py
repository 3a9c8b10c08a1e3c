"""The SD-MB100 photoelectric smoke detector: device state and its Modbus register image.

Written from the SD-MB100 register map (Anju reference hardware), not from Anju's
device profile, so that a profile which misreads the datasheet is caught by tests.

Input registers (function code 4):

====  ====================================================  ======
addr  meaning                                               type
====  ====================================================  ======
0     status word: bit0 alarm (latched), bit1 fault,        u16
      bit2 self-test, bit3 tamper, bit4 battery low
1     smoke obscuration, 0.01 %/m                           u16
2     temperature, 0.1 °C                                   s16
3     carbon monoxide, ppm                                  u16
4     battery, %                                            u16
10    serial number, high word                              u32 (high word first)
11    serial number, low word
====  ====================================================  ======

Holding registers (function codes 3, 6, 16):

====  ====================================================  ======
addr  meaning                                               type
====  ====================================================  ======
100   alarm threshold, 0.01 %/m; 100..1000 accepted,        u16
      factory default 350 (3.50 %/m)
101   alarm reset: write 1 to clear a latched alarm once    u16
      obscuration is below the threshold; reads back 0
====  ====================================================  ======

The factory threshold of 3.50 %/m sits inside the response band that EN 54-7 and
UL 268 allow for photoelectric detectors (roughly 1-4 %/m for EN 54-7 test fires);
the accepted range 1.00-10.00 %/m covers the sensitivity settings installers use.

The alarm latches when obscuration reaches the threshold and stays latched after the
smoke clears, until a reset (register 101, or :meth:`SmokeDetector.reset_alarm`)
arrives while obscuration is below the threshold. Self-test sets only its own status
bit: an edge gateway must be able to tell a test from a fire.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

from firmware_sim import IllegalDataAddress, IllegalDataValue

__all__ = [
    "BATTERY_LOW_BELOW_PCT",
    "DEFAULT_ALARM_THRESHOLD_PCT_PER_M",
    "MODEL",
    "HoldingRegister",
    "InputRegister",
    "SmokeDetector",
    "SmokeDetectorState",
    "Status",
]

MODEL: Final = "SD-MB100"

#: Factory alarm threshold (register 100 reads 350).
DEFAULT_ALARM_THRESHOLD_PCT_PER_M: Final = 3.5
#: The battery-low status bit is set while the battery is below this level.
BATTERY_LOW_BELOW_PCT: Final = 15

_THRESHOLD_RAW_MIN: Final = 100
_THRESHOLD_RAW_MAX: Final = 1000
_U16_MAX: Final = 0xFFFF
_S16_MIN: Final = -0x8000
_S16_MAX: Final = 0x7FFF
_U32_MAX: Final = 0xFFFF_FFFF


class InputRegister(IntEnum):
    """Input register addresses (function code 4)."""

    STATUS = 0
    OBSCURATION = 1
    TEMPERATURE = 2
    CO = 3
    BATTERY = 4
    SERIAL_HIGH = 10
    SERIAL_LOW = 11


class HoldingRegister(IntEnum):
    """Holding register addresses (function codes 3, 6 and 16)."""

    ALARM_THRESHOLD = 100
    ALARM_RESET = 101


class Status(IntFlag):
    """Bits of the status word (input register 0)."""

    NORMAL = 0
    ALARM = 1 << 0
    FAULT = 1 << 1
    SELF_TEST = 1 << 2
    TAMPER = 1 << 3
    BATTERY_LOW = 1 << 4


@dataclass(frozen=True, slots=True)
class SmokeDetectorState:
    """A snapshot of what the detector reports, in engineering units.

    Snapshots compare equal when nothing visible on the registers changed, so a
    caller can print or assert state transitions by comparing two of them.
    """

    status: Status
    obscuration_pct_per_m: float
    alarm_threshold_pct_per_m: float
    temperature_c: float
    co_ppm: int
    battery_pct: int


def _pct_per_m_to_raw(value: float, *, what: str) -> int:
    if value < 0:
        raise ValueError(f"{what} must be >= 0 %/m, got {value}")
    return round(value * 100)


class SmokeDetector:
    """One SD-MB100 detector: its state and the register image a Modbus master reads.

    The model knows nothing of Modbus transport, so tests of the register image are
    pure and one instance can sit behind any server (see ``modbus_server``). All
    setters validate their argument and raise ``ValueError`` for a value the real
    sensor could not report; register writes raise ``IllegalDataAddress`` or
    ``IllegalDataValue`` as the device would answer with Modbus exceptions 2 and 3.
    """

    model: Final = MODEL

    def __init__(
        self,
        *,
        serial_number: int = 20240001,
        alarm_threshold_pct_per_m: float = DEFAULT_ALARM_THRESHOLD_PCT_PER_M,
        temperature_c: float = 21.0,
        co_ppm: int = 0,
        battery_pct: int = 100,
        temperature_noise_c: float = 0.0,
        seed: int = 0,
    ) -> None:
        """Create a detector in its quiet state (no smoke, no alarm, no fault).

        ``temperature_noise_c`` is the amplitude of the jitter :meth:`tick` adds to
        the temperature; it stays 0 (no jitter) unless asked for, and ``seed`` makes
        the jitter reproducible.
        """
        if not 0 <= serial_number <= _U32_MAX:
            raise ValueError(f"serial_number must fit in 32 bits, got {serial_number}")
        if temperature_noise_c < 0:
            raise ValueError(f"temperature_noise_c must be >= 0, got {temperature_noise_c}")
        self._serial_number = serial_number
        self._obscuration_raw = 0
        self._threshold_raw = 0
        self._temperature_set_raw = 0
        self._temperature_raw = 0
        self._co_ppm = 0
        self._battery_pct = 0
        self._alarm_latched = False
        self._fault = False
        self._self_test = False
        self._tamper = False
        self._noise_c = temperature_noise_c
        self._random = random.Random(seed)
        self.set_alarm_threshold(alarm_threshold_pct_per_m)
        self.set_temperature(temperature_c)
        self.set_co(co_ppm)
        self.set_battery(battery_pct)

    # -- what the detector reports -------------------------------------------------

    @property
    def serial_number(self) -> int:
        """The factory serial number (input registers 10-11)."""
        return self._serial_number

    @property
    def status(self) -> Status:
        """The status word (input register 0) as flags."""
        status = Status.NORMAL
        if self._alarm_latched:
            status |= Status.ALARM
        if self._fault:
            status |= Status.FAULT
        if self._self_test:
            status |= Status.SELF_TEST
        if self._tamper:
            status |= Status.TAMPER
        if self._battery_pct < BATTERY_LOW_BELOW_PCT:
            status |= Status.BATTERY_LOW
        return status

    @property
    def alarm(self) -> bool:
        """True while the alarm is latched (status bit 0)."""
        return self._alarm_latched

    @property
    def obscuration_pct_per_m(self) -> float:
        """Smoke obscuration as reported, in %/m (0.01 %/m resolution)."""
        return self._obscuration_raw / 100

    @property
    def alarm_threshold_pct_per_m(self) -> float:
        """The alarm threshold in %/m (holding register 100)."""
        return self._threshold_raw / 100

    @property
    def temperature_c(self) -> float:
        """Temperature as reported, in °C (0.1 °C resolution, including any jitter)."""
        return self._temperature_raw / 10

    def state(self) -> SmokeDetectorState:
        """Return a snapshot of everything the registers report, in engineering units."""
        return SmokeDetectorState(
            status=self.status,
            obscuration_pct_per_m=self.obscuration_pct_per_m,
            alarm_threshold_pct_per_m=self.alarm_threshold_pct_per_m,
            temperature_c=self.temperature_c,
            co_ppm=self._co_ppm,
            battery_pct=self._battery_pct,
        )

    def describe(self) -> dict[str, str]:
        """Return the reported values as short readable strings with units, by name.

        Meant for logs and the ``anju sim`` console: two calls differ exactly where
        something visible on the registers changed.
        """
        state = self.state()
        flags = [str(flag.name).lower().replace("_", " ") for flag in Status if flag & state.status]
        return {
            "status": ", ".join(flags) or "normal",
            "obscuration": f"{state.obscuration_pct_per_m:.2f} %/m",
            "threshold": f"{state.alarm_threshold_pct_per_m:.2f} %/m",
            "temperature": f"{state.temperature_c:.1f} °C",
            "co": f"{state.co_ppm} ppm",
            "battery": f"{state.battery_pct} %",
        }

    # -- the physical world acting on the detector -----------------------------------

    def set_smoke(self, level_pct_per_m: float) -> None:
        """Set the smoke obscuration the sensor measures, in %/m.

        Reaching the alarm threshold latches the alarm. Levels past what a u16 in
        0.01 %/m can hold saturate at 655.35 %/m, as the sensor's reading would.
        """
        raw = _pct_per_m_to_raw(level_pct_per_m, what="smoke level")
        self._obscuration_raw = min(raw, _U16_MAX)
        self._update_alarm()

    def trigger_alarm(self) -> None:
        """Fill the chamber with smoke at three times the threshold, latching the alarm."""
        self.set_smoke(3 * self.alarm_threshold_pct_per_m)

    def clear_smoke(self) -> None:
        """Clear the smoke; a latched alarm stays latched until it is reset."""
        self.set_smoke(0.0)

    def self_test(self, on: bool) -> None:
        """Start or end a self-test (status bit 2)."""
        self._self_test = on

    def set_fault(self, on: bool) -> None:
        """Raise or clear a device fault such as a dirty chamber (status bit 1)."""
        self._fault = on

    def set_tamper(self, on: bool) -> None:
        """Report the detector removed from its base, or put back (status bit 3)."""
        self._tamper = on

    def set_battery(self, pct: int) -> None:
        """Set the battery level in % (0-100); below 15 % sets status bit 4."""
        if not 0 <= pct <= 100:
            raise ValueError(f"battery must be 0-100 %, got {pct}")
        self._battery_pct = pct

    def set_temperature(self, celsius: float) -> None:
        """Set the ambient temperature in °C; the register holds it in 0.1 °C as s16."""
        raw = round(celsius * 10)
        if not _S16_MIN <= raw <= _S16_MAX:
            raise ValueError(f"temperature {celsius} °C does not fit an s16 in 0.1 °C")
        self._temperature_set_raw = raw
        self._temperature_raw = raw

    def set_co(self, ppm: int) -> None:
        """Set the carbon monoxide concentration in ppm (0-65535)."""
        if not 0 <= ppm <= _U16_MAX:
            raise ValueError(f"CO must be 0-65535 ppm, got {ppm}")
        self._co_ppm = ppm

    def tick(self) -> None:
        """Advance one sampling period: the temperature jitters around its set value.

        The jitter is uniform within ``temperature_noise_c`` of the set value, never a
        drift, so a long run stays where the scenario put it. Without noise this does
        nothing.
        """
        if self._noise_c == 0:
            return
        jitter = round(self._random.uniform(-self._noise_c, self._noise_c) * 10)
        self._temperature_raw = max(_S16_MIN, min(_S16_MAX, self._temperature_set_raw + jitter))

    # -- what an installer or the gateway does ----------------------------------------

    def set_alarm_threshold(self, pct_per_m: float) -> None:
        """Set the alarm threshold in %/m (1.00-10.00); reaching it latches the alarm."""
        raw = _pct_per_m_to_raw(pct_per_m, what="alarm threshold")
        if not _THRESHOLD_RAW_MIN <= raw <= _THRESHOLD_RAW_MAX:
            raise ValueError(
                f"alarm threshold must be {_THRESHOLD_RAW_MIN / 100}-"
                f"{_THRESHOLD_RAW_MAX / 100} %/m, got {pct_per_m}"
            )
        self._threshold_raw = raw
        self._update_alarm()

    def reset_alarm(self) -> bool:
        """Clear a latched alarm if the smoke is below the threshold.

        Returns True when no alarm is latched afterwards; False when smoke at or above
        the threshold keeps it latched (the reset is then ignored, as on the device).
        """
        if self._obscuration_raw < self._threshold_raw:
            self._alarm_latched = False
        return not self._alarm_latched

    def power_cycle(self) -> None:
        """Lose power and boot again: a latched alarm and a self-test end.

        The threshold is kept (the detector stores it in non-volatile memory), as are
        the physical conditions (smoke, fault, tamper, battery): smoke still at or
        above the threshold latches the alarm again at once, as the first sample
        after boot would.
        """
        self._alarm_latched = False
        self._self_test = False
        self._temperature_raw = self._temperature_set_raw
        self._update_alarm()

    def _update_alarm(self) -> None:
        if self._obscuration_raw >= self._threshold_raw:
            self._alarm_latched = True

    # -- register image ---------------------------------------------------------------

    def input_registers(self) -> dict[int, int]:
        """Return every input register (function code 4) by address, as u16 words."""
        return {
            InputRegister.STATUS: int(self.status),
            InputRegister.OBSCURATION: self._obscuration_raw,
            InputRegister.TEMPERATURE: self._temperature_raw & _U16_MAX,
            InputRegister.CO: self._co_ppm,
            InputRegister.BATTERY: self._battery_pct,
            InputRegister.SERIAL_HIGH: self._serial_number >> 16,
            InputRegister.SERIAL_LOW: self._serial_number & _U16_MAX,
        }

    def holding_registers(self) -> dict[int, int]:
        """Return every holding register (function codes 3/6/16) by address."""
        return {
            HoldingRegister.ALARM_THRESHOLD: self._threshold_raw,
            HoldingRegister.ALARM_RESET: 0,
        }

    def read_input_registers(self, address: int, count: int) -> list[int]:
        """Read ``count`` input registers from ``address`` (function code 4).

        Raises ``IllegalDataAddress`` if any address in the range is not mapped.
        """
        return _read(self.input_registers(), address, count, table="input")

    def read_holding_registers(self, address: int, count: int) -> list[int]:
        """Read ``count`` holding registers from ``address`` (function code 3).

        Raises ``IllegalDataAddress`` if any address in the range is not mapped.
        """
        return _read(self.holding_registers(), address, count, table="holding")

    def write_holding_registers(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers from ``address`` on (function codes 6 and 16).

        The whole write is checked before any of it applies, as one Modbus request
        either succeeds or fails. Raises ``IllegalDataAddress`` for an unmapped
        address and ``IllegalDataValue`` for a threshold outside 100-1000 or a reset
        value other than 0 or 1. Writing 0 to the reset register does nothing.
        """
        writes = list(zip(range(address, address + len(values)), values, strict=True))
        for reg, value in writes:
            if reg == HoldingRegister.ALARM_THRESHOLD:
                if not _THRESHOLD_RAW_MIN <= value <= _THRESHOLD_RAW_MAX:
                    raise IllegalDataValue(
                        f"alarm threshold {value} outside "
                        f"{_THRESHOLD_RAW_MIN}-{_THRESHOLD_RAW_MAX} (0.01 %/m)",
                        address=reg,
                    )
            elif reg == HoldingRegister.ALARM_RESET:
                if value not in (0, 1):
                    raise IllegalDataValue(f"alarm reset accepts 0 or 1, got {value}", address=reg)
            else:
                raise IllegalDataAddress(f"no holding register {reg}", address=reg)
        for reg, value in writes:
            if reg == HoldingRegister.ALARM_THRESHOLD:
                self._threshold_raw = value
                self._update_alarm()
            elif value == 1:
                self.reset_alarm()


def _read(image: Mapping[int, int], address: int, count: int, *, table: str) -> list[int]:
    if count < 1:
        raise IllegalDataAddress(f"cannot read {count} {table} registers", address=address)
    addresses = range(address, address + count)
    missing = [a for a in addresses if a not in image]
    if missing:
        raise IllegalDataAddress(
            f"no {table} register {missing[0]} (read {address}+{count})", address=missing[0]
        )
    return [image[a] for a in addresses]
