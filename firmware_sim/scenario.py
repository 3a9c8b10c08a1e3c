"""Scenarios: a small timed script of what happens to the devices on one simulated bus.

A scenario file names the devices by unit (profile ids with a dedicated simulator)
and lists steps, each ``{at: SECONDS, unit: N, action: NAME, ...arguments}``::

    devices:
      1: anju-smoke-mb
      2: anju-door-mb
    steps:
      - {at: 1, unit: 2, action: present_card, card_id: "04:A2:19:7C", granted: false}
      - {at: 2, unit: 2, action: force_open}
      - {at: 3, unit: 1, action: trigger_alarm}
      - {at: 4, unit: 1, action: fault_drop, count: 3}
      - {at: 8, unit: 1, action: clear_smoke}

An action is either a method of the unit's device called with the step's other keys
as keyword arguments (``trigger_alarm``, ``clear_smoke``, ``set_smoke``,
``present_card``, ``force_open``, ``close_door``, ``fire_release``, ...), or a fault
(``fault_drop``, ``fault_delay``, ``fault_garble``, ``fault_exception``,
``fault_reboot``, ``fault_clear``) applied through the server's ``FaultInjector``.
Every step is checked against the device it targets when the file is loaded, so a
typo fails before anything is served.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from firmware_sim import ScenarioError, UnknownModelError
from firmware_sim.faults import FaultInjector
from firmware_sim.models import SimulatedModbusDevice, get_model

__all__ = ["FAULT_ACTIONS", "Scenario", "Step", "load_scenario", "parse_scenario", "run_scenario"]

#: Scenario fault actions and the ``FaultInjector`` method each one calls.
FAULT_ACTIONS: Final = {
    "fault_drop": "drop",
    "fault_delay": "delay",
    "fault_garble": "garble",
    "fault_exception": "exception",
    "fault_reboot": "reboot",
    "fault_clear": "clear",
}
_STEP_KEYS: Final = ("at", "unit", "action")


@dataclass(frozen=True, slots=True)
class Step:
    """One timed action: ``at`` seconds after the start, on ``unit``."""

    at: float
    unit: int
    action: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The step as one readable line, for the console and logs."""
        args = ", ".join(f"{key}={value!r}" for key, value in self.arguments.items())
        return f"t+{self.at:g}s unit {self.unit}: {self.action}({args})"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario: the profile id of each unit and the steps sorted by time."""

    source: str
    profiles: Mapping[int, str]
    steps: tuple[Step, ...]

    @property
    def duration_s(self) -> float:
        """When the last step runs."""
        return self.steps[-1].at if self.steps else 0.0

    def create_devices(self) -> dict[int, SimulatedModbusDevice]:
        """Fresh devices for every unit, ready to serve."""
        return {unit: get_model(profile).create() for unit, profile in self.profiles.items()}


def _target(
    action: str, device: SimulatedModbusDevice, faults: FaultInjector
) -> Callable[..., Any]:
    if action in FAULT_ACTIONS:
        method: Callable[..., Any] = getattr(faults, FAULT_ACTIONS[action])
        return method
    if action.startswith("_") or not callable(getattr(device, action, None)):
        raise AttributeError(action)
    device_method: Callable[..., Any] = getattr(device, action)
    return device_method


def parse_scenario(document: object, *, source: str = "<scenario>") -> Scenario:
    """Validate a loaded YAML document as a scenario.

    Raises ``ScenarioError`` naming ``source``, the step index and its unit for a
    missing or unknown key, an unknown profile or action, or arguments the action
    does not take.
    """
    if not isinstance(document, dict) or set(document) - {"devices", "steps"}:
        raise ScenarioError(f"{source}: expected a mapping with 'devices' and 'steps'")
    devices = document.get("devices")
    if not isinstance(devices, dict) or not devices:
        raise ScenarioError(f"{source}: 'devices' must map unit ids to profile ids")
    profiles: dict[int, str] = {}
    for unit, profile in devices.items():
        if not isinstance(unit, int) or not 1 <= unit <= 247:
            raise ScenarioError(f"{source}: device unit {unit!r} is not a unit id 1-247", unit=None)
        try:
            get_model(str(profile))
        except UnknownModelError as exc:
            raise ScenarioError(f"{source}: unit {unit}: {exc}", unit=unit) from None
        profiles[unit] = str(profile)
    probes = {unit: get_model(p).create() for unit, p in profiles.items()}
    raw_steps = document.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError(f"{source}: 'steps' must be a non-empty list")
    steps: list[Step] = []
    for index, raw in enumerate(raw_steps):
        where = f"{source}: steps[{index}]"
        if not isinstance(raw, dict) or any(key not in raw for key in _STEP_KEYS):
            raise ScenarioError(f"{where}: give at, unit and action", step=index)
        at, unit, action = raw["at"], raw["unit"], raw["action"]
        if not isinstance(at, int | float) or isinstance(at, bool) or at < 0:
            raise ScenarioError(f"{where}: 'at' must be seconds >= 0, got {at!r}", step=index)
        if unit not in profiles:
            raise ScenarioError(
                f"{where}: unit {unit!r} is not among the devices {sorted(profiles)}",
                step=index,
                unit=unit if isinstance(unit, int) else None,
            )
        arguments = {key: value for key, value in raw.items() if key not in _STEP_KEYS}
        device = probes[unit]
        try:
            method = _target(str(action), device, FaultInjector(unit, device))
        except AttributeError:
            raise ScenarioError(
                f"{where}: a {device.model} (unit {unit}) has no action {action!r}; "
                f"fault actions: {', '.join(FAULT_ACTIONS)}",
                step=index,
                unit=unit,
            ) from None
        try:
            inspect.signature(method).bind(**arguments)
        except TypeError as exc:
            raise ScenarioError(
                f"{where}: {action} (unit {unit}) does not take {sorted(arguments)}: {exc}",
                step=index,
                unit=unit,
            ) from None
        steps.append(Step(float(at), unit, str(action), arguments))
    steps.sort(key=lambda step: step.at)
    return Scenario(source=source, profiles=profiles, steps=tuple(steps))


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; ``ScenarioError`` names the file and the step."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    return parse_scenario(document, source=str(path))


async def run_scenario(
    scenario: Scenario,
    devices: Mapping[int, SimulatedModbusDevice],
    faults: Callable[[int], FaultInjector],
    *,
    on_step: Callable[[Step], None] | None = None,
) -> None:
    """Run every step at its time (measured from the call) on the served devices.

    ``devices`` are the devices the server serves by unit (``server.devices``) and
    ``faults`` is ``server.faults``. ``on_step`` is called after each step ran. A step
    that the device refuses at run time (``ValueError``) raises ``ScenarioError``
    naming the step.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    for index, step in enumerate(scenario.steps):
        delay = started + step.at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        method = _target(step.action, devices[step.unit], faults(step.unit))
        try:
            method(**step.arguments)
        except ValueError as exc:
            raise ScenarioError(
                f"{scenario.source}: steps[{index}] ({step.describe()}): {exc}",
                step=index,
                unit=step.unit,
            ) from None
        if on_step is not None:
            on_step(step)
