"""edge-serial: 16 OSDP readers on one 9600 baud line and 4 camera boxes at 50
records/s, against the time the wire itself needs.

Two processes, a broker and five pseudo-terminal pairs: the simulators (``serial_load.
sims``: libosdp readers with their secure channels, paced at 9600 baud, and camera
boxes paced at 115200), and the agent (``edge.app.Agent`` from an ordinary gateway
config, publishing to a real Mosquitto).

The baseline is the wire: in the window the agent counts the bytes each way on the
OSDP line and the commands each reader got. One poll cycle (every reader asked once)
cannot take less than those bytes' character times plus, per reader, the reader's
turnaround (from the end of a command to the start of its reply, as the simulator
measured it): ``wire_limit_cycle_ms``. ``osdp_poll_cycle_ms`` is the window over the
commands per reader; their ratio says what the panel's scheduling costs.
"""

import argparse
import os
import platform
import secrets
import sys
import tempfile
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Any

from anju.services.mosquitto import MosquittoServer
from benchmarks import Result
from benchmarks.child import Child
from firmware_sim.pty_pair import PtyPair

NAME = "edge-serial"

OSDP_BAUD = 9600
CAMERA_BAUD = 115200
TURNAROUND_S = 0.002
MAX_CYCLE_OVER_WIRE = 1.25
MIN_CAMERA_SHARE = 0.95
"""Of the records the boxes sent, the share the agent must have decoded in the window."""


def _say(message: str) -> None:
    print(f"[{NAME}] {message}", file=sys.stderr, flush=True)


def _config(
    args: argparse.Namespace, osdp_path: str, cameras: list[str], keys: dict[int, str], **more: Any
) -> dict[str, Any]:
    readers = [
        {
            "id": f"reader-{address:02d}",
            "profile": "anju-osdp-reader",
            "address": f"osdp://{osdp_path}?address={address}&baud={OSDP_BAUD}",
        }
        for address in keys
    ]
    boxes = [
        {
            "id": f"camera-{number:02d}",
            "profile": "anju-camera-serial",
            "address": f"serial://{path}?baud={CAMERA_BAUD}",
        }
        for number, path in enumerate(cameras, 1)
    ]
    return {
        "gateway": "gw-bench-serial",
        "community": "bench/serial",
        "drivers": {
            "osdp": {
                "card_hash_key": secrets.token_hex(32),
                "scbk": {f"reader-{address:02d}": key for address, key in keys.items()},
            }
        },
        "devices": readers + boxes,
        **more,
    }


def run(argv: list[str]) -> Result:
    parser = argparse.ArgumentParser(prog=f"bench.py {NAME}", description=__doc__)
    parser.add_argument("--readers", type=int, default=16, help="OSDP readers on the line (16)")
    parser.add_argument("--cameras", type=int, default=4, help="camera boxes (4)")
    parser.add_argument("--rate", type=float, default=50.0, help="records/s per box (50)")
    parser.add_argument("--window", type=float, default=20.0, help="window in seconds (20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before it (3)")
    args = parser.parse_args(argv)
    keys = {address: secrets.token_hex(16) for address in range(args.readers)}
    with tempfile.TemporaryDirectory(prefix="anju-bench-serial-") as work, ExitStack() as stack:
        broker = stack.enter_context(MosquittoServer(Path(work) / "mosquitto"))
        osdp_line = stack.enter_context(PtyPair())
        camera_lines = [stack.enter_context(PtyPair()) for _ in range(args.cameras)]
        sims = Child(
            "simulators",
            "benchmarks.serial_load.sims",
            {
                "osdp": {
                    "path": osdp_line.a,
                    "baud": OSDP_BAUD,
                    "turnaround_s": TURNAROUND_S,
                    "readers": [{"address": a, "scbk": k} for a, k in keys.items()],
                },
                "cameras": [
                    {"path": line.a, "baud": CAMERA_BAUD, "rate": args.rate}
                    for line in camera_lines
                ],
            },
        )
        stack.callback(sims.stop)
        sims.receive(30)
        _say(f"{args.readers} readers and {args.cameras} camera boxes up; the agent")
        config = _config(
            args,
            osdp_line.b,
            [line.b for line in camera_lines],
            keys,
            broker=broker.url,
            state_dir=str(Path(work) / "state"),
        )
        agent = Child(
            "agent",
            "benchmarks.serial_load.agent",
            {
                "config": config,
                "readers": args.readers,
                "online_within_s": 60,
                "warmup_s": args.warmup,
                "window_s": args.window,
            },
        )
        stack.callback(agent.stop)
        agent.receive(90)
        measured = agent.receive(args.window + 30)
        agent.finish()
        sims.finish()
        line = sims.receive(30)["osdp"]
    window = measured["window_s"]
    osdp = measured["osdp"]
    commands = [osdp["commands"].get(str(address), 0) for address in keys]
    cycles = sum(commands) / len(commands)
    cycle_ms = 1000 * window / cycles if cycles else None
    char_s = float(line["char_s"])
    turnarounds = [float(t) for t in line["turnaround_s"].values()]
    turnaround_s = sum(turnarounds) / len(turnarounds) if turnarounds else TURNAROUND_S
    wire_s_per_cycle = (osdp["bytes_out"] + osdp["bytes_in"]) * char_s / cycles if cycles else 0
    wire_limit_ms = 1000 * (wire_s_per_cycle + args.readers * turnaround_s)
    ratio = cycle_ms / wire_limit_ms if cycle_ms and wire_limit_ms else None
    cores = measured["cpu_s"] / window
    camera_per_s = measured["records"] / window
    offered_per_s = args.cameras * args.rate
    return {
        "benchmark": NAME,
        "osdp_readers": args.readers,
        "osdp_readers_online": measured["readers_online"],
        "osdp_baud": OSDP_BAUD,
        "osdp_poll_cycle_ms": round(cycle_ms, 1) if cycle_ms else None,
        "wire_limit_cycle_ms": round(wire_limit_ms, 1),
        "cycle_over_wire_limit": round(ratio, 3) if ratio else None,
        "osdp_bytes_per_cycle": round((osdp["bytes_out"] + osdp["bytes_in"]) / cycles, 1)
        if cycles
        else None,
        "osdp_reader_turnaround_ms": round(1000 * turnaround_s, 2),
        "osdp_bad_bytes": osdp["bad_bytes"],
        "camera_boxes": args.cameras,
        "camera_records_per_s": round(camera_per_s, 1),
        "camera_records_offered_per_s": offered_per_s,
        "readings_per_s": round(measured["readings"] / window, 1),
        "events_per_s": round(measured["events"] / window, 1),
        "agent_cpu_cores": round(cores, 4),
        "baseline": {
            "what": "the wire: bytes on the OSDP line at 9600 baud, 10 bits each, plus "
            "each reader's turnaround, per poll cycle",
            "wire_limit_cycle_ms": round(wire_limit_ms, 1),
        },
        "targets": {
            "cycle_over_wire_limit_max": MAX_CYCLE_OVER_WIRE,
            "camera_records_share_min": MIN_CAMERA_SHARE,
            "met": ratio is not None
            and ratio <= MAX_CYCLE_OVER_WIRE
            and camera_per_s >= MIN_CAMERA_SHARE * offered_per_s
            and measured["readers_online"] == args.readers,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "libosdp": version("libosdp"),
        },
    }
