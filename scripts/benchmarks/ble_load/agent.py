"""The agent process of ``edge-ble``: ``edge.app.Agent`` with its BLE bands, measured
from inside over a timed window, then timing SOS presses into the spool.

Spec (JSON line on stdin): ``{"config": {...}, "warmup_s": W, "window_s": D,
"connected": N}``. After the agent has N bands connected and W seconds have passed it
sends ``{"measuring": true}``, measures D seconds and sends ``{"measured": ...}``
with its counters and CPU time. It then records, for every ``wearable.sos`` event,
the moment the spool committed it (``time.time()``, the clock the simulator stamps
its notifications with) and reports them when stdin closes.
"""

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.child import report, run_measurement, stop_when_parent_leaves
from edge.app import Agent
from edge.config import parse_config
from edge.drivers.ble.bus import BleBus
from edge.errors import EdgeError
from schemas.errors import SchemaError
from schemas.profile import load_profiles
from schemas.vocabulary import EventType
from schemas.wire import Event

_PROFILES = Path(__file__).resolve().parents[3] / "device_profiles"
_STOP_TIMEOUT_S = 20.0


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _bus(agent: Agent) -> BleBus:
    (pump,) = agent.pumps
    assert isinstance(pump.bus, BleBus)
    return pump.bus


def _counters(agent: Agent) -> dict[str, Any]:
    bus = _bus(agent)
    return {
        "advertisements": bus.advertisements,
        "notifications": bus.notifications,
        "readings": agent.readings_produced,
        "events": agent.events_produced,
        "faults": sum(sum(device.faults.values()) for device in agent.devices),
        "connects": bus.connects,
    }


def _record_sos(agent: Agent, spooled: list[tuple[str, float]]) -> None:
    """Note when each SOS event is committed to the spool's events lane."""
    add_events = agent.spool.add_events

    def timed(events: list[Event]) -> None:
        add_events(events)
        now = time.time()
        spooled.extend((e.device, now) for e in events if e.type is EventType.WEARABLE_SOS)

    agent.spool.add_events = timed  # type: ignore[method-assign]


async def _measure(spec: dict[str, Any]) -> None:
    config = parse_config(spec["config"], source="edge-ble benchmark config")
    agent = Agent(config, load_profiles(_PROFILES), source="edge-ble benchmark config")
    spooled: list[tuple[str, float]] = []
    _record_sos(agent, spooled)
    parent_gone, stop = asyncio.Event(), asyncio.Event()
    stop_when_parent_leaves(parent_gone)
    running = asyncio.create_task(agent.run(stop), name="agent")
    bus = _bus(agent)
    try:
        deadline = time.monotonic() + float(spec["connect_within_s"])
        while bus.connected < int(spec["connected"]):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {bus.connected} of {spec['connected']} bands connected in time"
                )
            await asyncio.sleep(0.2)
        await asyncio.sleep(float(spec["warmup_s"]))
        before, cpu_before, t_before = _counters(agent), _cpu_s(), time.monotonic()
        report({"measuring": True})
        await asyncio.sleep(float(spec["window_s"]))
        after, cpu_after, t_after = _counters(agent), _cpu_s(), time.monotonic()
        report(
            {
                "measured": True,
                "window_s": t_after - t_before,
                "cpu_s": cpu_after - cpu_before,
                "connected": bus.connected,
                **{key: after[key] - before[key] for key in after},
            }
        )
        await parent_gone.wait()
    finally:
        stop.set()
        await asyncio.wait_for(running, _STOP_TIMEOUT_S)
    report({"sos_spooled": spooled})


def main() -> None:
    run_measurement(_measure, failures=(EdgeError, SchemaError, RuntimeError))


if __name__ == "__main__":
    main()
