"""A simulator process: many bench-30tag devices behind firmware_sim's Modbus servers.

Run by the benchmark as ``python -m benchmarks.modbus_load.sims``. Spec (JSON line on
stdin):

- ``{"kind": "tcp", "profile": PATH, "devices": N, "seed": S}``: N Modbus TCP servers
  on 127.0.0.1, one port per device (unit 1), as N devices with their own converter or
  Ethernet port would be; replies ``{"ports": [...]}`` once all listen.
- ``{"kind": "rtu", "profile": PATH, "lines": [PATH, ...], "units": N, "seed": S}``: one
  Modbus RTU server per serial line, units 1..N on each; replies ``{"ready": true}``.

Then it serves until its stdin closes, replies ``{"cpu_s": ...}`` and exits. A failure
to start is reported as ``{"error": ...}``.
"""

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks.child import read_spec, report, stop_when_parent_leaves
from benchmarks.modbus_load.model import ZoneModuleModel
from firmware_sim import SimError
from firmware_sim.modbus_server import ModbusRtuSimServer, ModbusSimServer
from schemas.profile import load_profile


async def _serve(spec: dict[str, Any]) -> None:
    profile = load_profile(Path(spec["profile"]))
    seed = int(spec["seed"])
    stop = asyncio.Event()
    stop_when_parent_leaves(stop)
    servers: list[ModbusSimServer | ModbusRtuSimServer] = []
    try:
        if spec["kind"] == "tcp":
            ports: list[int] = []
            for n in range(int(spec["devices"])):
                tcp = ModbusSimServer({1: ZoneModuleModel(profile, seed=seed + n)})
                await tcp.start()
                servers.append(tcp)
                ports.append(tcp.port)
            report({"ports": ports})
        else:
            units = int(spec["units"])
            for line, path in enumerate(spec["lines"]):
                rtu = ModbusRtuSimServer(
                    {
                        unit: ZoneModuleModel(profile, seed=seed + 1000 * line + unit)
                        for unit in range(1, units + 1)
                    },
                    path=path,
                )
                await rtu.start()
                servers.append(rtu)
            report({"ready": True})
        await stop.wait()
    except SimError as exc:
        report({"error": str(exc)})
    finally:
        for server in servers:
            try:
                await server.stop()
            except SimError as exc:
                print(f"sims: {exc}", file=sys.stderr)
    times = os.times()
    report({"cpu_s": times.user + times.system})


def main() -> None:
    # pymodbus logs every client disconnect at the end of a run; only real trouble shows.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    asyncio.run(_serve(read_spec()))


if __name__ == "__main__":
    main()
