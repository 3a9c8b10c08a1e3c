"""Which simulated device answers for which device profile id.

Profile ids are plain strings here: the simulators never read profile files (see the
package docstring), so this table is the only place a profile id meets a dedicated
simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from firmware_sim import UnknownModelError
from firmware_sim.door_controller import MODEL as DOOR_CONTROLLER_MODEL
from firmware_sim.door_controller import DoorController
from firmware_sim.modbus_server import ModbusDeviceModel
from firmware_sim.smoke_detector import MODEL as SMOKE_DETECTOR_MODEL
from firmware_sim.smoke_detector import SmokeDetector
from schemas.vocabulary import DeviceKind

__all__ = ["SIMULATED_MODELS", "SimulatedModbusDevice", "SimulatedModel", "get_model"]


class SimulatedModbusDevice(ModbusDeviceModel, Protocol):
    """A served Modbus model that the ``anju sim`` console can also drive and show.

    ``trigger_alarm`` raises the device's own alarm (smoke in the chamber, a door
    forced open); ``tick`` brings timed state up to date once a second.
    """

    def trigger_alarm(self) -> None: ...

    def tick(self) -> None: ...

    def describe(self) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class SimulatedModel:
    """One simulated device model and how to build a fresh instance of it."""

    profile_id: str
    model: str
    kind: DeviceKind
    summary: str
    create: Callable[[], SimulatedModbusDevice]


SIMULATED_MODELS: Final[Mapping[str, SimulatedModel]] = MappingProxyType(
    {
        "anju-smoke-mb": SimulatedModel(
            profile_id="anju-smoke-mb",
            model=SMOKE_DETECTOR_MODEL,
            kind=DeviceKind.SMOKE,
            summary="photoelectric smoke detector with temperature and CO, Modbus",
            create=SmokeDetector,
        ),
        "anju-door-mb": SimulatedModel(
            profile_id="anju-door-mb",
            model=DOOR_CONTROLLER_MODEL,
            kind=DeviceKind.DOOR,
            summary="single-door access controller with event ring buffer, Modbus",
            create=DoorController,
        ),
    }
)


def get_model(profile_id: str) -> SimulatedModel:
    """Return the simulated model for ``profile_id``.

    Raises ``UnknownModelError`` listing the known profile ids.
    """
    try:
        return SIMULATED_MODELS[profile_id]
    except KeyError:
        raise UnknownModelError(profile_id, sorted(SIMULATED_MODELS)) from None
