"""Which driver serves which protocol: the agent's only way to a driver.

Built-in drivers are imported on first use, by protocol (``BUILT_IN``), so a gateway without a
driver's library (no ``bleak`` on a Modbus-only box) still runs every other device,
and a driver that cannot load is reported as unavailable rather than crashing the
agent. A driver from elsewhere (a site's own, or a test's) is added with ``register``.
"""

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from edge.drivers.contract import Driver, DriverUnavailable

BUILT_IN: Final[dict[str, str]] = {
    "modbus-tcp": "edge.drivers.modbus",
    "modbus-rtu": "edge.drivers.modbus",
    "ble": "edge.drivers.ble",
    "serial": "edge.drivers.serial",
    "osdp": "edge.drivers.osdp",
}
"""The module holding the built-in driver (as ``DRIVER``) of each protocol."""

_drivers: dict[str, Driver] = {}


class NoDriver(DriverUnavailable):
    """No driver is registered or built in for a protocol."""

    def __init__(self, protocol: str) -> None:
        known = ", ".join(sorted({*BUILT_IN, *_drivers})) or "none"
        super().__init__(protocol, f"no driver for protocol '{protocol}' (drivers: {known})")


def register(driver: Driver, *, replacing: bool = False) -> None:
    """Serve ``driver.protocols`` with ``driver``.

    Refuses a protocol another driver serves, unless ``replacing`` (a site's own
    driver in place of a built-in one).
    """
    taken = sorted(p for p in driver.protocols if p in _drivers and _drivers[p] is not driver)
    if taken and not replacing:
        raise ValueError(
            f"{', '.join(taken)} already served by the {_drivers[taken[0]].name} driver"
        )
    for protocol in driver.protocols:
        _drivers[protocol] = driver


def unregister(driver: Driver) -> None:
    """Forget ``driver``; its protocols fall back to their built-in driver, if any."""
    for protocol in driver.protocols:
        if _drivers.get(protocol) is driver:
            del _drivers[protocol]


@contextmanager
def registered(driver: Driver, *, replacing: bool = False) -> Iterator[Driver]:
    """``driver`` registered for the duration of a ``with`` block (tests, tools); the
    drivers it replaced, if ``replacing``, are back afterwards."""
    before = {p: _drivers[p] for p in driver.protocols if p in _drivers}
    register(driver, replacing=replacing)
    try:
        yield driver
    finally:
        unregister(driver)
        _drivers.update(before)


def driver_for(protocol: str) -> Driver:
    """The driver serving ``protocol``, importing a built-in one on first use.

    Raises NoDriver when there is none, DriverUnavailable when a built-in one cannot
    be imported here (its library is missing).
    """
    driver = _drivers.get(protocol)
    if driver is not None:
        return driver
    module = BUILT_IN.get(protocol)
    if module is None:
        raise NoDriver(protocol)
    try:
        loaded = importlib.import_module(module).DRIVER
    except ImportError as exc:
        reason = f"the {protocol} driver cannot be loaded: {exc}"
        raise DriverUnavailable(protocol, reason) from None
    if not isinstance(loaded, Driver):
        raise TypeError(f"{module}.DRIVER is not a Driver but {loaded!r}")
    register(loaded)
    return loaded
