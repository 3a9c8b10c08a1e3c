"""Performs a profile's actions (unlock, fire release, alarm reset) on a device.

Commands from the cloud and local rules both come here, so a door is unlocked the
same way whoever asks, and whatever protocol drives it: an action is a write of a
value to a writable point, which the device's bus (its driver) carries out. The write
waits its turn behind the bus's other requests (one request in flight per bus).

``read_all`` is the read the cloud asks for (``read_device``, an installer's test
through the running gateway): every point of the profile, once, through the same bus
and so in the same queue as the poller's reads and the actions' writes. That is what
keeps it off a shared RS-485 line while another request is on the wire, where opening
the line a second time (``anju device test`` beside a running agent) would put two
masters on it.
"""

from dataclasses import dataclass

from edge.devices import AgentDevice
from edge.drivers.contract import Bus, PolledBus, Sample
from edge.errors import EdgeError
from edge.inspection import ProbeTarget
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

    def polled(self, device_id: str) -> AgentDevice:
        """The device called ``device_id`` if its bus answers reads on request.

        Raises ActionError for a device the agent lacks, and for one on a streaming bus
        (a band, a serial record stream, an OSDP reader): those send when they send,
        and their bus has no read to ask for.
        """
        device = self.device(device_id)
        bus = self._devices[device_id][0]
        if not isinstance(bus, PolledBus):
            raise ActionError(
                device_id,
                f"{device.profile.protocol} device on {bus.name}, which sends its values "
                "as they come; a one-off read is only for polled devices (see its latest "
                "readings instead)",
            )
        return device

    async def read_all(self, device_id: str) -> Sample:
        """Read every point of the device's profile once, through its running bus.

        Configuration points too, not only the polled ones. The read queues behind the
        bus's other requests like ``perform``'s write, and leaves the device's record
        (health, faults, normaliser) to the poller: a test is no poll. Returns the raw
        values by point name; raises ActionError (see ``polled``) and DeviceError
        (timeout, unreachable, rejected) naming the device's address.
        """
        device = self.polled(device_id)
        bus = self._devices[device_id][0]
        assert isinstance(bus, PolledBus), "polled() checked it"
        profile = device.profile
        target = ProbeTarget(device_id, profile, device.address, tuple(profile.points))
        return await bus.read(target)

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
