"""The agent process of ``edge-serial``: ``edge.app.Agent`` with OSDP readers and
camera boxes, measured from inside over a timed window.

Spec (JSON line on stdin): ``{"config": {...}, "readers": N, "online_within_s": T,
"warmup_s": W, "window_s": D}``. Once its N readers are online with their secure
channels and W seconds have passed, it resets the OSDP line's statistics, measures D
seconds and reports ``{"measured": ...}``: CPU time, records and readings, and what
crossed the OSDP line (bytes both ways, commands per reader).
"""

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.child import report, run_measurement, stop_when_parent_leaves
from edge.app import Agent
from edge.config import parse_config
from edge.drivers.osdp.bus import OsdpBus
from edge.drivers.serial.bus import SerialBus
from edge.errors import EdgeError
from schemas.errors import SchemaError
from schemas.profile import load_profiles

_PROFILES = Path(__file__).resolve().parents[3] / "device_profiles"
_STOP_TIMEOUT_S = 20.0


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _osdp_bus(agent: Agent) -> OsdpBus:
    (bus,) = [pump.bus for pump in agent.pumps if isinstance(pump.bus, OsdpBus)]
    return bus


def _records(agent: Agent) -> int:
    return sum(pump.bus.records for pump in agent.pumps if isinstance(pump.bus, SerialBus))


def _readers_online(agent: Agent) -> int:
    """Readers being polled: libosdp polls a reader only once it is online, and with a
    key only once its secure channel is up."""
    line = _osdp_bus(agent).stats()
    return 0 if line is None else sum(1 for r in line.readers.values() if r.polls)


async def _measure(spec: dict[str, Any]) -> None:
    config = parse_config(spec["config"], source="edge-serial benchmark config")
    agent = Agent(config, load_profiles(_PROFILES), source="edge-serial benchmark config")
    parent_gone, stop = asyncio.Event(), asyncio.Event()
    stop_when_parent_leaves(parent_gone)
    running = asyncio.create_task(agent.run(stop), name="agent")
    try:
        deadline = time.monotonic() + float(spec["online_within_s"])
        while _readers_online(agent) < int(spec["readers"]):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {_readers_online(agent)} of {spec['readers']} readers online in time"
                )
            await asyncio.sleep(0.2)
        await asyncio.sleep(float(spec["warmup_s"]))
        bus = _osdp_bus(agent)
        bus.reset_stats()
        records, readings, events = _records(agent), agent.readings_produced, agent.events_produced
        cpu_before, t_before = _cpu_s(), time.monotonic()
        report({"measuring": True})
        await asyncio.sleep(float(spec["window_s"]))
        cpu_after, t_after = _cpu_s(), time.monotonic()
        line = bus.stats()
        assert line is not None, "the OSDP line closed during the window"
        report(
            {
                "measured": True,
                "window_s": t_after - t_before,
                "cpu_s": cpu_after - cpu_before,
                "records": _records(agent) - records,
                "readings": agent.readings_produced - readings,
                "events": agent.events_produced - events,
                "readers_online": _readers_online(agent),
                "osdp": {
                    "bytes_out": line.bytes_out,
                    "bytes_in": line.bytes_in,
                    "bad_bytes": line.bad_bytes,
                    "commands": {str(a): r.commands for a, r in line.readers.items()},
                    "polls": {str(a): r.polls for a, r in line.readers.items()},
                },
            }
        )
        await parent_gone.wait()
    finally:
        stop.set()
        await asyncio.wait_for(running, _STOP_TIMEOUT_S)


def main() -> None:
    run_measurement(_measure, failures=(EdgeError, SchemaError, RuntimeError))


if __name__ == "__main__":
    main()
