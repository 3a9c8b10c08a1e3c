"""The agent process: edge.app.Agent under load, measuring itself over a timed window.

Run by the benchmark as ``python -m benchmarks.modbus_load.agent``. Spec (JSON line
on stdin): ``{"config": {...gateway config...}, "profile": PATH, "warmup_s": W,
"window_s": D}``. The agent runs exactly as ``anju edge run`` would (same config
parser, same Agent), polls for W seconds so connections, phases and caches settle,
sends ``{"measuring": true}``, measures for D seconds, sends ``{"measured": true}``,
stops, and sends one result message with counter deltas over the window and its own
CPU time and peak RSS.

Everything is measured from inside because only this process knows its own counters,
and CPU time from ``os.times`` covers every thread it has.
"""

import asyncio
import os
import resource
import time
from pathlib import Path
from typing import Any

from benchmarks.child import report, run_measurement, stop_when_parent_leaves
from edge.app import Agent
from edge.config import parse_config
from edge.errors import EdgeError
from schemas.errors import SchemaError
from schemas.profile import load_profile

_STOP_TIMEOUT_S = 20.0
_LAG_PERIOD_S = 0.05


def _counters(agent: Agent) -> dict[str, Any]:
    """Everything the agent counts, summed over devices and buses."""
    devices = agent.devices
    return {
        "polls": sum(device.polls for device in devices),
        "faults": sum(sum(device.faults.values()) for device in devices),
        "overruns": sum(poller.overruns for poller in agent.pollers),
        "readings": agent.readings_produced,
        "events": agent.events_produced,
        "uplink_items": agent.uplink.published_items,
        "uplink_batches": agent.uplink.published_batches,
        "per_bus": {
            poller.bus.name: [sum(d.polls for d in poller.devices), poller.overruns]
            for poller in agent.pollers
        },
    }


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def _watch_lag(lags: list[float], stop: asyncio.Event) -> None:
    """Record how late the event loop wakes a short sleep: the delay every poll also sees."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(_LAG_PERIOD_S)
        lags.append(loop.time() - start - _LAG_PERIOD_S)


async def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    profile = load_profile(Path(spec["profile"]))
    config = parse_config(spec["config"], source="edge-modbus benchmark config")
    agent = Agent(config, {profile.id: profile}, source="edge-modbus benchmark config")
    parent_gone, stop = asyncio.Event(), asyncio.Event()
    stop_when_parent_leaves(parent_gone)
    lags: list[float] = []
    running = asyncio.create_task(agent.run(stop), name="agent")
    lag_watch = asyncio.create_task(_watch_lag(lags, stop), name="lag-watch")
    aborted = asyncio.create_task(parent_gone.wait(), name="parent-gone")

    async def phase(seconds: float) -> None:
        done, _ = await asyncio.wait(
            {running, aborted}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        if running in done:
            running.result()
            raise RuntimeError("the agent stopped by itself")
        if aborted in done:
            raise RuntimeError("the benchmark went away")

    try:
        await phase(float(spec["warmup_s"]))
        before, cpu_before, t_before = _counters(agent), _cpu_s(), time.monotonic()
        lags.clear()
        report({"measuring": True})
        await phase(float(spec["window_s"]))
        after, cpu_after, t_after = _counters(agent), _cpu_s(), time.monotonic()
        window_lags = sorted(lags)
        report({"measured": True})
    finally:
        stop.set()
        aborted.cancel()
        try:
            await asyncio.wait_for(running, _STOP_TIMEOUT_S)
        finally:
            lag_watch.cancel()
    wall = t_after - t_before
    deltas = {key: after[key] - before[key] for key in after if isinstance(after[key], int | float)}
    per_bus = {
        bus: [polls - before["per_bus"][bus][0], overruns - before["per_bus"][bus][1]]
        for bus, (polls, overruns) in after["per_bus"].items()
    }
    return {
        "window_s": wall,
        "cpu_s": cpu_after - cpu_before,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "warmup_overruns": before["overruns"],
        "warmup_faults": before["faults"],
        "spool_depth_at_end": sum(agent.spool.depth.values()),
        "loop_lag_p99_ms": 1000 * window_lags[int(0.99 * (len(window_lags) - 1))]
        if window_lags
        else 0.0,
        "loop_lag_max_ms": 1000 * window_lags[-1] if window_lags else 0.0,
        "per_bus": per_bus,
        **deltas,
    }


def main() -> None:
    run_measurement(_measure, failures=(EdgeError, SchemaError, RuntimeError))


if __name__ == "__main__":
    main()
