"""edge-ble: what 300 advertising bands and 20 connected ones cost the gateway agent,
and how soon an SOS reaches the spool.

Three processes and a broker: the simulated bands (``python -m
firmware_sim.wearables``, their own process, serving a virtual HCI dongle over TCP),
the agent (``edge.app.Agent`` from an ordinary gateway config with ``bumble:``
as its adapter, publishing to a real Mosquitto), and first, as the baseline, a bare
bumble host doing the same radio work (every advertisement, the same connections
and notifications) with nothing of Anju's above it. ``agent_over_host_cpu`` is the
agent's CPU over the bare stack's: what scanning, presence, decoding, normalising,
analysis, spooling and publishing add.

After the CPU window, the benchmark presses SOS on the connected bands through the
simulator's control socket, one after another. The simulator stamps the moment it
hands each notification to bumble (``time.time()``), the agent the moment its spool
committed the ``wearable.sos`` event; ``sos_to_spool_ms`` is the difference.
"""

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from anju.services.mosquitto import MosquittoServer
from benchmarks import Result
from benchmarks.child import Child

NAME = "edge-ble"
_REPO = Path(__file__).resolve().parents[2]

MAX_AGENT_CPU_CORES = 0.25
MAX_SOS_TO_SPOOL_P99_MS = 50.0
_SIM_STOP_S = 20.0


def _say(message: str) -> None:
    print(f"[{NAME}] {message}", file=sys.stderr, flush=True)


@contextmanager
def _band_field(args: argparse.Namespace) -> Iterator[tuple[str, tuple[str, int]]]:
    """The simulator process; yields its HCI transport and control address."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_sim.wearables",
            "--port",
            "0",
            "--control",
            "0",
            "--connected",
            str(args.connected),
            "--beacons",
            str(args.beacons),
            "--seed",
            "1",
        ],
        cwd=_REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError(f"the band simulator did not start: {line!r}")
        fields = dict(part.split("=", 1) for part in line[1:])
        host, port = fields["control"].rsplit(":", 1)
        yield fields["hci"], (host, int(port))
    finally:
        process.terminate()
        try:
            process.wait(timeout=_SIM_STOP_S)
        except subprocess.TimeoutExpired:
            _say(f"the band simulator took over {_SIM_STOP_S:g} s to stop; killed")
            process.kill()
            process.wait()


def _care_bands(count: int) -> list[str]:
    return [f"F0:A1:00:00:{n >> 8:02X}:{n & 0xFF:02X}" for n in range(1, count + 1)]


def _beacons(count: int) -> list[str]:
    return [f"F0:B1:00:00:{n >> 8:02X}:{n & 0xFF:02X}" for n in range(1, count + 1)]


def _config(args: argparse.Namespace, hci: str, broker: str, state: Path) -> dict[str, Any]:
    devices = [
        {"id": f"band-{n:04d}", "profile": "anju-wearable-ble", "address": f"ble://{mac}"}
        for n, mac in enumerate(_care_bands(args.connected), 1)
    ] + [
        {"id": f"beacon-{n:04d}", "profile": "anju-wearable-beacon", "address": f"ble://{mac}"}
        for n, mac in enumerate(_beacons(args.beacons), 1)
    ]
    return {
        "gateway": "gw-bench-ble",
        "community": "bench/ble",
        "broker": broker,
        "state_dir": str(state),
        "drivers": {"ble": {"adapter": f"bumble:{hci}", "max_connections": args.connected}},
        "devices": devices,
    }


def _press(control: tuple[str, int], bands: list[str], rounds: int) -> dict[str, list[float]]:
    """Press and cancel SOS on each band ``rounds`` times; the simulator's send times."""
    notified: dict[str, list[float]] = {mac: [] for mac in bands}
    with socket.create_connection(control, timeout=10) as sock, sock.makefile("rw") as stream:

        def ask(band: str, scenario: str) -> dict[str, Any]:
            stream.write(json.dumps({"band": band, "scenario": scenario}) + "\n")
            stream.flush()
            reply: dict[str, Any] = json.loads(stream.readline())
            if not reply.get("ok"):
                raise RuntimeError(f"the simulator refused {scenario} on {band}: {reply}")
            return reply

        for _ in range(rounds):
            for band in bands:
                reply = ask(band, "sos")
                if reply.get("notified_at") is not None:
                    notified[band].append(float(reply["notified_at"]))
                time.sleep(0.05)
            time.sleep(0.3)
            for band in bands:
                ask(band, "cancel")
            time.sleep(0.3)
    return notified


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def run(argv: list[str]) -> Result:
    parser = argparse.ArgumentParser(prog=f"bench.py {NAME}", description=__doc__)
    parser.add_argument("--beacons", type=int, default=300, help="bands only heard (300)")
    parser.add_argument("--connected", type=int, default=20, help="bands kept connected (20)")
    parser.add_argument("--window", type=float, default=20.0, help="CPU window in seconds (20)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before it (5)")
    parser.add_argument("--sos-rounds", type=int, default=5, help="SOS presses per band (5)")
    args = parser.parse_args(argv)
    care = _care_bands(args.connected)
    with (
        tempfile.TemporaryDirectory(prefix="anju-bench-ble-") as work,
        MosquittoServer(Path(work) / "mosquitto") as broker,
        _band_field(args) as (hci, control),
    ):
        _say(f"bands up ({args.beacons} beacons, {args.connected} care bands); baseline host")
        host = Child(
            "bare bumble host",
            "benchmarks.ble_load.host",
            {"hci": hci, "connected": care, "window_s": args.window, "warmup_s": args.warmup},
        )
        try:
            baseline = host.receive(args.window + args.warmup + 120)
        finally:
            host.stop()
        _say(f"baseline {baseline['cpu_s'] / baseline['window_s']:.3f} cores; the agent")
        agent = Child(
            "agent",
            "benchmarks.ble_load.agent",
            {
                "config": _config(args, hci, broker.url, Path(work) / "state"),
                "connected": args.connected,
                "connect_within_s": 60,
                "warmup_s": args.warmup,
                "window_s": args.window,
            },
        )
        try:
            agent.receive(180)
            measured = agent.receive(args.window + 30)
            _say("CPU measured; pressing SOS")
            notified = _press(control, care, args.sos_rounds)
            time.sleep(1.0)
            agent.finish()
            spooled = agent.receive(60)["sos_spooled"]
        finally:
            agent.stop()
    latencies = _latencies(notified, spooled)
    window = measured["window_s"]
    agent_cores = measured["cpu_s"] / window
    host_cores = baseline["cpu_s"] / baseline["window_s"]
    p99 = _percentile(latencies, 0.99)
    return {
        "benchmark": NAME,
        "bands_passive": args.beacons,
        "bands_connected": measured["connected"],
        "advertisements_per_s": round(measured["advertisements"] / window, 1),
        "notifications_per_s": round(measured["notifications"] / window, 1),
        "readings_per_s": round(measured["readings"] / window, 1),
        "agent_cpu_cores": round(agent_cores, 4),
        "baseline": {
            "what": "a bare bumble host scanning and holding the same connections",
            "cpu_cores": round(host_cores, 4),
            "advertisements_per_s": round(baseline["advertisements"] / baseline["window_s"], 1),
            "notifications_per_s": round(baseline["notifications"] / baseline["window_s"], 1),
        },
        "agent_over_host_cpu": round(agent_cores / host_cores, 2) if host_cores else None,
        "faults_in_window": measured["faults"],
        "sos_presses": sum(len(times) for times in notified.values()),
        "sos_spooled": len(latencies),
        "sos_to_spool_ms_p50": round(_percentile(latencies, 0.5), 2),
        "sos_to_spool_ms_p99": round(p99, 2),
        "sos_to_spool_ms_max": round(max(latencies), 2),
        "targets": {
            "agent_cpu_cores_max": MAX_AGENT_CPU_CORES,
            "sos_to_spool_ms_p99_max": MAX_SOS_TO_SPOOL_P99_MS,
            "met": agent_cores < MAX_AGENT_CPU_CORES and p99 <= MAX_SOS_TO_SPOOL_P99_MS,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "bumble": version("bumble"),
        },
    }


def _latencies(notified: dict[str, list[float]], spooled: list[list[Any]]) -> list[float]:
    """Each press matched with the first SOS of its band spooled after it, in ms."""
    by_band: dict[str, list[float]] = {}
    for device, at in spooled:
        by_band.setdefault(str(device), []).append(float(at))
    latencies: list[float] = []
    for n, (mac, presses) in enumerate(notified.items(), 1):
        stored = sorted(by_band.get(f"band-{n:04d}", []))
        for pressed in presses:
            later = [at for at in stored if at >= pressed]
            if not later:
                raise RuntimeError(
                    f"an SOS of {mac} pressed at {pressed:.3f} never reached the spool"
                )
            stored.remove(later[0])
            latencies.append(1000 * (later[0] - pressed))
    return latencies
