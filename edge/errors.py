"""Errors of the gateway agent.

    EdgeError
    ├── ConfigError          a gateway config file that cannot be used (file, key, fix)
    ├── AddressError         a device address URL that cannot be parsed
    ├── DeviceError          talking to one device failed (device, address)
    │   ├── DeviceTimeout        no answer within the timeout
    │   ├── DeviceUnreachable    no connection to the device or its bus
    │   ├── DeviceDisconnected   the device closed the connection during a request
    │   └── DeviceRejected       the device answered with a protocol exception
    ├── PointError           a point that does not exist, cannot be written, or cannot
    │                        hold a value (checked before anything is sent)
    ├── UplinkError          the broker connection failed or a publish was not acknowledged
    │   └── PublishRefused       (uplink.py) the broker answered a publish with a failure code
    ├── SpoolError           (spool.py) the spool file cannot be used (path)
    ├── ActionError          (actions.py) an action the device or its profile lacks
    ├── CommandError         (commands.py)
    │   └── CommandRefused       a command refused with its reason
    ├── AuditError           (audit.py) the command audit log cannot be read or written
    ├── ProbeError           (drivers/modbus/probe.py) an installer's read or scan
    │   ├── UnsupportedProfile, UnitListError
    └── MetricsError         (metrics.py) the metrics endpoint cannot serve

Errors used by one module only live beside it; this is the one tree they share.
"""

from typing import ClassVar


class EdgeError(Exception):
    """Base of every error raised by the gateway agent."""


class ConfigError(EdgeError):
    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        super().__init__(f"{path}: {key}: {problem}")


class AddressError(EdgeError):
    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        self.problem = problem
        super().__init__(f"device address {address!r}: {problem}")


class DeviceError(EdgeError):
    """Talking to one device failed; ``kind`` names the fault counter it adds to.

    Every protocol's driver raises these, so the core counts faults, decides when a
    device is offline and reports why the same way for all of them.
    """

    kind: ClassVar[str] = "error"

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        self.problem = problem
        super().__init__(f"{address}: {problem}")


class DeviceTimeout(DeviceError):
    kind = "timeout"


class DeviceUnreachable(DeviceError):
    kind = "unreachable"


class DeviceDisconnected(DeviceError):
    """The connection was made, then closed from the device's side before it answered.

    Not a timeout: it is known at once, and its causes (a reboot, a device that serves
    one client at a time and has one, a firewall resetting the connection) are not the
    wiring, unit id or line settings a silent device suggests.
    """

    kind = "disconnected"


class DeviceMalformed(DeviceError):
    """What the device sent does not parse (a short notification, a bad frame); skipped."""

    kind = "malformed"


class DeviceRejected(DeviceError):
    """A Modbus exception response; ``code`` is the exception code (2: illegal address)."""

    kind = "exception"

    def __init__(self, address: str, problem: str, code: int) -> None:
        self.code = code
        super().__init__(address, problem)


class PointError(EdgeError):
    """A point that does not exist, cannot be written, or cannot hold a value."""

    def __init__(self, profile_id: str, point: str, problem: str, *, address: str = "") -> None:
        self.profile_id = profile_id
        self.point = point
        self.address = address
        self.problem = problem
        where = f" at {address}" if address else ""
        super().__init__(f"point {point!r} of {profile_id}{where}: {problem}")


class UplinkError(EdgeError):
    pass
