"""``anju demo``: everything on one machine, with simulated communities."""

import asyncio
import json
import logging
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from anju.commands.common import fail, profile_root
from anju.demo import BrokerChoice, DemoSummary, run_demo, summary_json
from anju.services import ServiceError
from cloud.errors import SettingsError
from schemas.errors import SchemaError
from schemas.profile import load_profiles

EPILOG = (
    "Uses ANJU_DATABASE_URL and ANJU_MQTT_URL when set; otherwise starts an embedded "
    "PostgreSQL and Mosquitto (or an in-process Python broker when Mosquitto is not "
    "installed). Nothing needs root or pre-installed services. Every other ANJU_* "
    "variable of `anju cloud run` applies too (ANJU_API_PORT, ANJU_WEBHOOK_*, "
    "ANJU_QUEUE_*); without any ANJU_QUEUE_* the escalation limits are a sixth of the "
    "defaults, so a short run shows escalations.\n\n"
    "Examples:\n\n"
    "  anju demo                       # watch it live; Ctrl-C to stop\n\n"
    "  anju demo --duration 40 --summary-json /tmp/s.json   # unattended, exit 0 on success"
)


def demo(
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration", min=5, help="Run this many seconds, then exit (default: until Ctrl-C)."
        ),
    ] = None,
    summary_json_path: Annotated[
        Path | None,
        typer.Option(
            "--summary-json",
            help="Write counts (devices, readings stored, events, incidents, escalations), "
            "the egress doors the fire released (doors_released of egress_doors), the "
            "fire's incident as it stood at the end, webhook deliveries by status, the "
            "alarm's end-to-end latency in ms and, under wearable, the band wearer's heart "
            "rate as the API gave it and their SOS (press to queue in ms, its incident) "
            "to this file.",
        ),
    ] = None,
    broker: Annotated[
        BrokerChoice,
        typer.Option(
            help="Broker to start when ANJU_MQTT_URL is unset: Mosquitto if installed (auto), "
            "or the in-process Python broker."
        ),
    ] = BrokerChoice.AUTO,
    alarm_after: Annotated[
        float,
        typer.Option(help="Seconds of normal reporting before the smoke alarm goes off."),
    ] = 8.0,
) -> None:
    """Run the whole platform: two simulated communities, a fire alarm and an SOS.

    Smoke detectors in Fenghuang and Baiyun communities report over Modbus TCP
    to their gateway agents, and Fenghuang residents' wristbands over BLE; the
    agents stream to the cloud tier over MQTT, and the demo shows one wearer's
    heart rate as the cloud stores it. After a few seconds the detector in
    Fenghuang building 3 raises its alarm, then the wearer presses SOS, and the
    demo shows each becoming an incident on the emergency queue, timed end to end.
    """
    console = Console()
    if duration is not None and duration < alarm_after + 5:
        fail(f"--duration must leave time for the alarm: at least {alarm_after + 5:g} s")
    logging.getLogger().setLevel(logging.WARNING)
    try:
        profiles = load_profiles(profile_root())
    except SchemaError as exc:
        fail(str(exc))
    try:
        summary, interrupted = asyncio.run(
            _until_signalled(
                lambda interrupted: run_demo(
                    profiles=profiles,
                    duration_s=duration,
                    alarm_after_s=alarm_after,
                    console=console,
                    interrupted=interrupted,
                    broker=broker,
                )
            )
        )
    except ServiceError as exc:
        fail(f"could not start a local service: {exc}")
    except SettingsError as exc:
        fail(str(exc))
    data = summary_json(summary)
    console.print_json(json.dumps(data))
    if summary_json_path is not None:
        summary_json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        console.print(f"summary written to {summary_json_path}")
    if interrupted:
        console.print("stopped early by a signal")
    elif summary.alarm_latency_ms is None:
        fail("the smoke alarm never reached the emergency queue")
    elif summary.wearable.sos_latency_ms is None:
        fail("the wearer's SOS never reached the emergency queue")
    elif summary.doors_released < summary.egress_doors:
        fail(
            f"the fire released {summary.doors_released} of its building's "
            f"{summary.egress_doors} egress doors"
        )


async def _until_signalled(
    demo: Callable[[asyncio.Event], Coroutine[None, None, DemoSummary]],
) -> tuple[DemoSummary, bool]:
    """Run the demo; Ctrl-C, SIGTERM or SIGHUP end it early but in order.

    The database and broker run in sessions of their own so that a Ctrl-C reaches
    only us; a closed terminal or a kill must then also go through the demo's
    clean-up, or they are left running.
    """
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, interrupted.set)
    return await demo(interrupted), interrupted.is_set()
