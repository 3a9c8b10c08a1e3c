"""Performs a profile's actions (unlock, fire release, alarm reset) on a device.

Commands from the cloud and local rules both come here, so a door is unlocked the
same way whoever asks, and whatever protocol drives it: an action is a write of a
value to a writable point, which the device's bus (its driver) carries out. The write
waits its turn behind the bus's other requests (one request in flight per bus).
"""

from dataclasses import dataclass

from edge.devices import AgentDevice
from edge.drivers.contract import Bus
from edge.errors import EdgeError
from schemas.profile import Action, ActionName


class ActionError(EdgeError):
    """An action the device's profile does not define, or a device the agent lacks."""

    def __init__(self, device_id: str, problem: str) -> None:
        self.device_id = device_id
        super().__init__(f"{device_id}: {problem}")


@dataclass(frozen=True, slots=True)
class Performed:
    device_id: str
    action: ActionName
    point: str
    value: float


class DeviceActions:
    """The agent's devices by id, with the bus each one is reached through."""

    def __init__(self, devices: dict[str, tuple[Bus, AgentDevice]]) -> None:
        self._devices = devices

    def device(self, device_id: str) -> AgentDevice:
        """The device called ``device_id``; raises ActionError if there is none."""
        try:
            return self._devices[device_id][1]
        except KeyError:
            raise ActionError(device_id, "no such device on this gateway") from None

    def action(self, device_id: str, name: ActionName) -> Action:
        """How ``device_id``'s model performs ``name``; raises ActionError if it cannot."""
        profile = self.device(device_id).profile
        action = profile.actions.get(name)
        if action is None:
            known = ", ".join(sorted(profile.actions)) or "none"
            raise ActionError(device_id, f"profile {profile.id} has no action {name} ({known})")
        return action

    async def perform(
        self, device_id: str, name: ActionName, *, value: float | None = None
    ) -> Performed:
        """Write the action's value (or ``value`` instead) to its point.

        Raises ActionError for an unknown device or action, and DeviceError (timeout,
        unreachable, rejected) when the device does not take the write.
        """
        action = self.action(device_id, name)
        bus, device = self._devices[device_id]
        point = device.profile.point(action.point)
        written = action.value if value is None else value
        await bus.write(device, point, written)
        return Performed(device_id, name, point.name, written)
