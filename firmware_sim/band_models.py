"""The CB-300 care band and the CB-100 beacon band: the wearer, the sensors and their bytes.

Written from the bands' datasheets (Anju reference hardware), not from Anju's device
profiles, so that a profile which misreads a datasheet is caught by the tests that
read these bands through the gateway. Pure: no radio, no clock of its own. The host
(``wearables``) calls :meth:`Band.advance` with the band's clock about once a second
and sends what the encoders return.

CB-300, kept connected by the gateway (every multi-byte field little-endian):

- Heart Rate Service 0x180D, Heart Rate Measurement 0x2A37, notified about once a
  second (Bluetooth SIG Heart Rate Service 1.0): a flags byte (bit 0 heart rate as
  UINT16, bits 1-2 sensor contact: bit 2 supported, bit 1 detected; bit 3 Energy
  Expended present; bit 4 RR intervals present), the heart rate, then the RR
  intervals of the beats since the previous measurement, UINT16 each in 1/1024 s.
  The band supports contact detection and sends no Energy Expended.
- Battery Service 0x180F, Battery Level 0x2A19, read: UINT8, 0-100 %.
- Vendor service 7a1e0001-5c3b-4e8a-9d2f-6b0c4a8e1f30, status characteristic
  7a1e0002-5c3b-4e8a-9d2f-6b0c4a8e1f30, notified once a second and at once when an
  alert flag changes, 8 bytes:

  ======  ===========================================================  =========
  offset  meaning                                                      type
  ======  ===========================================================  =========
  0       alert flags: bit 0 SOS, bit 1 fall suspected, bits 2-7 zero  uint8
  1       motion level over the last second, 0 (still) to 255          uint8
  2       steps since local midnight                                   uint32
  6       skin temperature, 0.01 °C                                    sint16
  ======  ===========================================================  =========

- Advertising (legacy PDUs, 31 bytes at most): Flags 0x06, Complete Local Name
  ``ANJU-CB-xxxx``, Incomplete List of 16-bit Service UUIDs 0x180D (21 bytes). The
  vendor UUID, 18 bytes as an AD structure, does not fit beside the name, so it goes
  in the scan response as a Complete List of 128-bit Service UUIDs: a gateway sees it
  when it scans actively.

CB-100, a beacon that never connects: advertisements about once a second, and at once
when an alert flag changes, with Flags 0x06, Complete Local Name ``ANJU-BB-xxxx`` and
Manufacturer Specific Data: company identifier 0xFFFF (UINT16), then alert flags
(bits as CB-300), battery %, heart rate in 1/min (0 without skin contact) and motion
level, one byte each (25 bytes in all).

An SOS (the button held 2 s) stays set until the wearer cancels it or 120 s pass; a
fall suspected (an impact) stays set for 60 s unless cancelled. ``xxxx`` is the band's
number in four hex digits, which are also the last two bytes of its static random
address: ``F0:A1:00:00:xx:xx`` for CB-300, ``F0:B1:00:00:xx:xx`` for CB-100.

Scenarios (:class:`Scenario`) are what happens to the wearer or the band; each starts
at a moment of the band's clock, and every later :meth:`Band.advance` plays it out.
All randomness comes from one ``random.Random`` seeded per band, so a band given the
same seed and the same clock readings sends the same bytes.
"""

from __future__ import annotations

import abc
import math
import random
import struct
import uuid
from enum import Enum, IntFlag, StrEnum
from typing import Final

__all__ = [
    "BATTERY_LEVEL_UUID",
    "BATTERY_SERVICE_UUID",
    "COMPANY_ID",
    "FALL_FLAG_S",
    "HEART_RATE_MEASUREMENT_UUID",
    "HEART_RATE_SERVICE_UUID",
    "MAX_RR_INTERVALS",
    "SOS_FLAG_S",
    "STATUS_UUID",
    "VENDOR_SERVICE_UUID",
    "AlertFlags",
    "Band",
    "BeaconBand",
    "CareBand",
    "Scenario",
]

HEART_RATE_SERVICE_UUID: Final = 0x180D
HEART_RATE_MEASUREMENT_UUID: Final = 0x2A37
BATTERY_SERVICE_UUID: Final = 0x180F
BATTERY_LEVEL_UUID: Final = 0x2A19
VENDOR_SERVICE_UUID: Final = uuid.UUID("7a1e0001-5c3b-4e8a-9d2f-6b0c4a8e1f30")
STATUS_UUID: Final = uuid.UUID("7a1e0002-5c3b-4e8a-9d2f-6b0c4a8e1f30")
#: The Bluetooth SIG's company identifier for tests and internal use.
COMPANY_ID: Final = 0xFFFF
#: How long the band keeps an SOS set unless the wearer cancels it.
SOS_FLAG_S: Final = 120.0
#: How long the band keeps a fall suspected set unless the wearer cancels it.
FALL_FLAG_S: Final = 60.0
#: RR intervals one measurement carries at most: flags, a UINT8 rate and nine UINT16
#: fill the 20 bytes a notification holds at the default ATT MTU of 23. With more
#: beats since the previous measurement (a compressed clock), the oldest are dropped.
MAX_RR_INTERVALS: Final = 9

# Heart Rate Measurement flags (Heart Rate Service 1.0, section 3.1.1.1).
_HRM_UINT16: Final = 0x01
_HRM_CONTACT_DETECTED: Final = 0x02
_HRM_CONTACT_SUPPORTED: Final = 0x04
_HRM_ENERGY: Final = 0x08
_HRM_RR: Final = 0x10
_RR_UNITS_PER_S: Final = 1024

# AD types (Bluetooth SIG Assigned Numbers, section 2.3).
_AD_FLAGS: Final = 0x01
_AD_INCOMPLETE_16_BIT_UUIDS: Final = 0x02
_AD_COMPLETE_128_BIT_UUIDS: Final = 0x07
_AD_COMPLETE_LOCAL_NAME: Final = 0x09
_AD_MANUFACTURER_DATA: Final = 0xFF
#: LE General Discoverable Mode, BR/EDR Not Supported.
_AD_FLAGS_VALUE: Final = 0x06

_STATUS: Final = struct.Struct("<BBIh")
_BEACON: Final = struct.Struct("<HBBBB")
_HRM_UINT8: Final = struct.Struct("<BB")
_UINT16: Final = struct.Struct("<H")

_MAX_NUMBER: Final = 0xFFFF
_DAY_S: Final = 86_400.0

# The wearer's physiology; times are on the band's clock, in seconds.
_HR_RELAX_S: Final = 20.0
_HR_NOISE_BPM: Final = 0.7
_HR_WALKING_BPM: Final = 25.0
_HR_MIN: Final = 30.0
_HR_MAX: Final = 220.0
_HRV_FRACTION: Final = 0.02
_REST_BOUT_S: Final = 900.0
_WALK_BOUT_S: Final = 240.0
_STEPS_PER_S: Final = 1.7
_TEMP_RELAX_S: Final = 300.0
_TEMP_WALKING_C: Final = 0.3
_TEMP_NOISE_C: Final = 0.03
_BATTERY_DRAIN_PCT_PER_S: Final = 0.5 / 3600
_IMPACT_MOTION: Final = 255
_RECOVERY_STILL_S: Final = 3.0
_RECOVERY_WALK_S: Final = 60.0
_HR_DRIFT_BPM: Final = 45.0
_HR_DRIFT_S: Final = 3600.0
_BATTERY_DYING_S: Final = 120.0
_BATTERY_DYING_FLOOR_PCT: Final = 3.0
_GARBAGE_VARIANTS: Final = 4


class AlertFlags(IntFlag):
    """Byte 0 of the CB-300 status and of the CB-100 manufacturer data."""

    NONE = 0
    SOS = 1 << 0
    FALL_SUSPECTED = 1 << 1


class Scenario(StrEnum):
    """What can happen to a band and its wearer, started at a moment of the band's clock.

    ``normal_day`` ends every other scenario: alert flags cleared, back in range, the
    wearer's own heart rate and activity, well-formed values, the battery draining at
    its usual 0.5 %/h from wherever it is.
    """

    NORMAL_DAY = "normal_day"
    """The wearer's day: rest, now and then a walk; the default."""
    SOS = "sos"
    """The SOS button held: flag bit 0 set until ``cancel`` or 120 s."""
    CANCEL = "cancel"
    """The wearer cancels on the band: both alert flags cleared."""
    FALL = "fall"
    """An impact (flag bit 1, motion 255), then stillness: motion about 0, steps frozen."""
    FALL_RECOVERY = "fall_recovery"
    """An impact, still for ``still_s`` (3 s), then walking: motion and steps rise."""
    HR_DRIFT = "hr_drift"
    """At rest, the heart rate drifts up by ``delta_bpm`` (45) over ``duration_s`` (3600 s)."""
    WALK_AWAY = "walk_away"
    """Out of range: the band stops advertising and its connection drops."""
    RETURN = "return"
    """Back in range after ``walk_away``."""
    BATTERY_DYING = "battery_dying"
    """The battery falls to ``floor_pct`` (3 %) over ``duration_s`` (120 s)."""
    GARBAGE = "garbage"
    """Malformed values: truncated measurements, short status and manufacturer data."""


#: The keyword arguments each scenario takes, with their defaults.
_SCENARIO_ARGS: Final[dict[Scenario, dict[str, float]]] = {
    Scenario.FALL_RECOVERY: {"still_s": _RECOVERY_STILL_S},
    Scenario.HR_DRIFT: {"delta_bpm": _HR_DRIFT_BPM, "duration_s": _HR_DRIFT_S},
    Scenario.BATTERY_DYING: {
        "floor_pct": _BATTERY_DYING_FLOOR_PCT,
        "duration_s": _BATTERY_DYING_S,
    },
}


class _Activity(Enum):
    REST = "rest"
    WALK = "walk"
    STILL = "still"


def _ad(ad_type: int, data: bytes) -> bytes:
    """One AD structure: its length (type and data), its type, its data."""
    return bytes([len(data) + 1, ad_type]) + data


class Band(abc.ABC):
    """One band on a wearer: state, scenarios and the clock that plays them out.

    ``number`` (1-65535) makes the name and the address; ``seed`` the randomness.
    ``clock_s`` is the band's clock at creation; ``time_of_day_s`` what its clock
    reads in local time then (steps restart at local midnight). Subclasses add the
    model's bytes.
    """

    model: str = ""
    _name_prefix: str = ""
    _address_prefix: str = ""

    def __init__(
        self,
        number: int,
        *,
        seed: int = 0,
        clock_s: float = 0.0,
        time_of_day_s: float = 8 * 3600.0,
    ) -> None:
        if not 1 <= number <= _MAX_NUMBER:
            raise ValueError(f"band number must be 1-{_MAX_NUMBER}, got {number}")
        self._number = number
        self._random = random.Random(f"{self.model}/{number}/{seed}")
        rng = self._random
        self._clock = clock_s
        self._midnight = clock_s - time_of_day_s % _DAY_S
        self._resting_hr = rng.uniform(58.0, 78.0)
        self._hr = self._resting_hr
        self._rr: tuple[int, ...] = ()
        self._beat_phase = rng.random()
        self._activity = _Activity.REST
        self._activity_until = clock_s + rng.expovariate(1 / _REST_BOUT_S)
        self._motion = rng.randint(0, 15)
        self._steps = rng.randint(0, 2500)
        self._skin_base_c = rng.uniform(32.8, 34.2)
        self._skin_c = self._skin_base_c
        self._battery = rng.uniform(55.0, 100.0)
        self._drain_per_s = _BATTERY_DRAIN_PCT_PER_S
        self._battery_floor = 0.0
        self._sos_until: float | None = None
        self._fall_until: float | None = None
        self._drift: tuple[float, float, float] | None = None
        self._in_range = True
        self._garbage = False
        self._samples = 0

    # -- identity ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The advertised name: ``ANJU-CB-0001`` for CB-300 number 1."""
        return f"{self._name_prefix}{self._number:04X}"

    @property
    def address(self) -> str:
        """The static random address: ``F0:A1:00:00:00:01`` for CB-300 number 1."""
        return f"{self._address_prefix}{self._number >> 8:02X}:{self._number & 0xFF:02X}"

    # -- what the sensors report -------------------------------------------------------

    @property
    def alert_flags(self) -> AlertFlags:
        """The alert flags as sent now."""
        flags = AlertFlags.NONE
        if self._sos_until is not None:
            flags |= AlertFlags.SOS
        if self._fall_until is not None:
            flags |= AlertFlags.FALL_SUSPECTED
        return flags

    @property
    def heart_rate_bpm(self) -> int:
        """The heart rate as sent, in 1/min."""
        return round(self._hr)

    @property
    def rr_intervals(self) -> tuple[int, ...]:
        """The RR intervals of the beats since the previous sample, in 1/1024 s."""
        return self._rr

    @property
    def motion(self) -> int:
        """The motion level over the last second, 0 (still) to 255."""
        return self._motion

    @property
    def steps(self) -> int:
        """Steps since local midnight."""
        return self._steps

    @property
    def skin_temperature_c(self) -> float:
        """Skin temperature as sent (0.01 °C resolution)."""
        return round(self._skin_c, 2)

    @property
    def battery_pct(self) -> int:
        """Battery level as sent, 0-100 %."""
        return max(0, min(100, round(self._battery)))

    @property
    def in_range(self) -> bool:
        """False between ``walk_away`` and ``return``: the host keeps the band silent."""
        return self._in_range

    @property
    def garbage(self) -> bool:
        """True while the band sends malformed values (``garbage``)."""
        return self._garbage

    # -- scenarios and the clock --------------------------------------------------------

    def start(self, scenario: Scenario | str, *, now: float, **args: float) -> None:
        """Start ``scenario`` at ``now`` on the band's clock (not before its last reading).

        Raises ``ValueError`` for an unknown scenario or argument, naming the known
        ones, or for an argument out of its range.
        """
        try:
            chosen = Scenario(scenario)
        except ValueError:
            known = ", ".join(s.value for s in Scenario)
            raise ValueError(f"no scenario {scenario!r}; known scenarios: {known}") from None
        options = dict(_SCENARIO_ARGS.get(chosen, {}))
        unknown = sorted(set(args) - set(options))
        if unknown:
            takes = ", ".join(sorted(options)) or "no arguments"
            raise ValueError(f"scenario {chosen} takes {takes}, not {', '.join(unknown)}")
        options.update(args)
        if any(not math.isfinite(v) or v < 0 for v in options.values()):
            raise ValueError(f"scenario {chosen} arguments must be finite and >= 0: {args}")
        now = max(now, self._clock)
        match chosen:
            case Scenario.NORMAL_DAY:
                self._normal_day(now)
            case Scenario.SOS:
                self._sos_until = now + SOS_FLAG_S
            case Scenario.CANCEL:
                self._sos_until = self._fall_until = None
            case Scenario.FALL:
                self._impact(now)
                self._set_activity(_Activity.STILL, until=math.inf)
            case Scenario.FALL_RECOVERY:
                self._impact(now)
                self._set_activity(_Activity.STILL, until=now + options["still_s"])
            case Scenario.HR_DRIFT:
                duration = max(options["duration_s"], 1e-9)
                self._drift = (now, duration, options["delta_bpm"])
                self._set_activity(_Activity.REST, until=now + duration)
            case Scenario.WALK_AWAY:
                self._in_range = False
            case Scenario.RETURN:
                self._in_range = True
            case Scenario.BATTERY_DYING:
                floor = min(options["floor_pct"], self._battery)
                self._battery_floor = floor
                self._drain_per_s = (self._battery - floor) / max(options["duration_s"], 1e-9)
            case Scenario.GARBAGE:
                self._garbage = True

    def advance(self, now: float) -> None:
        """Sample the sensors at ``now`` on the band's clock; earlier readings do nothing.

        Plays out the running scenarios and the wearer's day over the time since the
        previous sample: alert flags expire, the heart beats (the RR intervals of the
        beats in between), the wearer rests or walks, the battery drains.
        """
        dt = now - self._clock
        if dt <= 0:
            return
        rng = self._random
        self._clock = now
        self._samples += 1
        if self._sos_until is not None and now >= self._sos_until:
            self._sos_until = None
        if self._fall_until is not None and now >= self._fall_until:
            self._fall_until = None
        if now >= self._activity_until:
            self._next_activity(now)
        walking = self._activity is _Activity.WALK
        if self._activity is _Activity.STILL:
            self._motion = rng.randint(0, 2)
        elif walking:
            self._motion = max(60, min(254, round(rng.gauss(125, 25))))
            self._steps += round(_STEPS_PER_S * dt * rng.uniform(0.9, 1.1))
        else:
            self._motion = max(0, min(40, round(rng.gauss(8, 5))))
        days = math.floor((now - self._midnight) / _DAY_S)
        if days > math.floor((now - dt - self._midnight) / _DAY_S):
            self._steps = 0
        target = self._resting_hr + (_HR_WALKING_BPM if walking else 0.0) + self._drift_bpm(now)
        relax = min(1.0, dt / _HR_RELAX_S)
        self._hr += (target - self._hr) * relax + rng.gauss(0, _HR_NOISE_BPM)
        self._hr = max(_HR_MIN, min(_HR_MAX, self._hr))
        self._beat(dt)
        skin_target = self._skin_base_c + (_TEMP_WALKING_C if walking else 0.0)
        self._skin_c += (skin_target - self._skin_c) * min(1.0, dt / _TEMP_RELAX_S)
        self._skin_c += rng.gauss(0, _TEMP_NOISE_C)
        self._battery = max(self._battery_floor, self._battery - self._drain_per_s * dt)

    def _normal_day(self, now: float) -> None:
        self._sos_until = self._fall_until = None
        self._drift = None
        self._in_range = True
        self._garbage = False
        self._drain_per_s = _BATTERY_DRAIN_PCT_PER_S
        self._battery_floor = 0.0
        self._set_activity(_Activity.REST, until=now + self._random.expovariate(1 / _REST_BOUT_S))

    def _impact(self, now: float) -> None:
        self._fall_until = now + FALL_FLAG_S
        self._motion = _IMPACT_MOTION

    def _set_activity(self, activity: _Activity, *, until: float) -> None:
        self._activity = activity
        self._activity_until = until

    def _next_activity(self, now: float) -> None:
        """End a bout: still becomes a short walk (a recovery), rest and walk alternate."""
        if self._activity is _Activity.STILL:
            self._set_activity(_Activity.WALK, until=now + _RECOVERY_WALK_S)
        elif self._activity is _Activity.WALK:
            self._set_activity(
                _Activity.REST, until=now + self._random.expovariate(1 / _REST_BOUT_S)
            )
        else:
            self._set_activity(
                _Activity.WALK, until=now + self._random.expovariate(1 / _WALK_BOUT_S)
            )

    def _drift_bpm(self, now: float) -> float:
        if self._drift is None:
            return 0.0
        started, duration, delta = self._drift
        return delta * min(1.0, (now - started) / duration)

    def _beat(self, dt: float) -> None:
        """The beats completed over ``dt`` at the current rate, newest kept."""
        self._beat_phase += dt * self._hr / 60
        beats = math.floor(self._beat_phase)
        self._beat_phase -= beats
        mean = 60 / self._hr * _RR_UNITS_PER_S
        rng = self._random
        self._rr = tuple(
            max(1, min(0xFFFF, round(mean * (1 + rng.gauss(0, _HRV_FRACTION)))))
            for _ in range(min(beats, MAX_RR_INTERVALS))
        )

    def _garbage_variant(self) -> int:
        return self._samples % _GARBAGE_VARIANTS

    @abc.abstractmethod
    def advertising_data(self) -> bytes:
        """The advertising data as sent now (legacy PDUs: 31 bytes at most)."""


class CareBand(Band):
    """The CB-300 care band: GATT values and advertisements (see the module docstring)."""

    model = "CB-300"
    _name_prefix = "ANJU-CB-"
    _address_prefix = "F0:A1:00:00:"

    def heart_rate_measurement(self) -> bytes:
        """The Heart Rate Measurement (0x2A37) as notified now.

        Well formed: flags 0x06 (a UINT8 rate, contact supported and detected) and the
        rate, or flags 0x16 and the rate followed by RR intervals. Under
        ``garbage``, one of four malformed values in turn: the flags alone; bit 0 with a
        one-byte rate; RR intervals promised with one byte after the rate; Energy
        Expended promised with one byte after the rate.
        """
        flags = _HRM_CONTACT_SUPPORTED | _HRM_CONTACT_DETECTED
        rate = self.heart_rate_bpm
        if self._garbage:
            variant = self._garbage_variant()
            if variant == 0:
                return bytes([flags | _HRM_RR])
            if variant == 1:
                return bytes([flags | _HRM_UINT16, rate & 0xFF])
            if variant == 2:
                return bytes([flags | _HRM_RR, rate & 0xFF, 0x04])
            return bytes([flags | _HRM_ENERGY, rate & 0xFF, 0x10])
        if self._rr:
            flags |= _HRM_RR
        return _HRM_UINT8.pack(flags, rate) + b"".join(_UINT16.pack(rr) for rr in self._rr)

    def status(self) -> bytes:
        """The vendor status (7a1e0002-...) as notified now: 8 bytes, or fewer under ``garbage``.

        Under ``garbage`` the value is cut to 0, 3, 5 or 7 bytes in turn.
        """
        value = _STATUS.pack(
            int(self.alert_flags), self._motion, self._steps, round(self._skin_c * 100)
        )
        if self._garbage:
            return value[: (0, 3, 5, 7)[self._garbage_variant()]]
        return value

    def battery_level(self) -> bytes:
        """The Battery Level (0x2A19) as read now: one byte, 0-100."""
        return bytes([self.battery_pct])

    def advertising_data(self) -> bytes:
        """Flags, the complete local name and the 16-bit UUID 0x180D (21 bytes)."""
        return (
            _ad(_AD_FLAGS, bytes([_AD_FLAGS_VALUE]))
            + _ad(_AD_COMPLETE_LOCAL_NAME, self.name.encode("ascii"))
            + _ad(_AD_INCOMPLETE_16_BIT_UUIDS, _UINT16.pack(HEART_RATE_SERVICE_UUID))
        )

    def scan_response_data(self) -> bytes:
        """The vendor service UUID as a complete list of 128-bit UUIDs (18 bytes).

        A 128-bit UUID goes over the air least significant byte first.
        """
        return _ad(_AD_COMPLETE_128_BIT_UUIDS, VENDOR_SERVICE_UUID.bytes[::-1])


class BeaconBand(Band):
    """The CB-100 beacon band: its advertisements (see the module docstring)."""

    model = "CB-100"
    _name_prefix = "ANJU-BB-"
    _address_prefix = "F0:B1:00:00:"

    def manufacturer_data(self) -> bytes:
        """Company identifier 0xFFFF then flags, battery, heart rate and motion (6 bytes).

        Under ``garbage`` the four bytes after the company identifier are cut to 0, 1,
        2 or 3 in turn.
        """
        value = _BEACON.pack(
            COMPANY_ID,
            int(self.alert_flags),
            self.battery_pct,
            self.heart_rate_bpm,
            self._motion,
        )
        if self._garbage:
            return value[: 2 + self._garbage_variant()]
        return value

    def advertising_data(self) -> bytes:
        """Flags, the complete local name and the manufacturer data (25 bytes)."""
        return (
            _ad(_AD_FLAGS, bytes([_AD_FLAGS_VALUE]))
            + _ad(_AD_COMPLETE_LOCAL_NAME, self.name.encode("ascii"))
            + _ad(_AD_MANUFACTURER_DATA, self.manufacturer_data())
        )
