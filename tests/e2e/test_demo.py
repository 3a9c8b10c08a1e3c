"""``anju demo`` end to end, as a visitor and a property manager run it.

The walk of docs/webhooks.md ("Trying it with the demo"): the demo runs as a child
process with the environment ``anju cloud run`` reads (here on the suite's database and
broker, with shorter escalation limits) and prints the API key of its run; the receiver
of examples/ is started with that key in ``ANJU_API_KEY``, subscribes through the
demo's API and verifies what arrives with the reference Standard Webhooks library. The
summary must show the fire's doors released, the incident as it stood at the end
(escalated, since nobody claims it) and the webhooks delivered; the receiver must have
verified them, and the run's key must no longer work once the run is over. The
resident wearing a care band must be registered and bound to it, their heart rate
must have reached the cloud and been read back through the API, and their SOS must
be on the queue as a P1 incident at their home, timed from the press.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

from anju.demo_sites import (
    ALARM_DEVICE_ID,
    SITES,
    WEARER_BAND_ID,
    egress_doors,
    site_band,
    site_device,
)
from anju.services.ports import free_port
from cloud.auth.keys import token_prefix

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DURATION_S = 20
ALARM_AFTER_S = 5
"""Long enough for the receiver, started once the key is printed, to subscribe first."""
KEY = re.compile(r"API key for this run \(admin.*\): (anju_\S+)")


def test_the_demo_releases_the_doors_escalates_and_sends_signed_webhooks(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str], tmp_path: Path
) -> None:
    api = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "ANJU_DATABASE_URL": database_url,
        "ANJU_MQTT_URL": mqtt_url,
        "ANJU_API_PORT": api.rsplit(":", 1)[1],
        "ANJU_INGEST_CLIENT_ID": unique_id("demo"),
        "ANJU_INGEST_GROUP": unique_id("demo-group"),
        "ANJU_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "ANJU_QUEUE_P1_UNCLAIMED_S": "3",
        "ANJU_QUEUE_REPEAT_S": "3",
    }
    summary_path = tmp_path / "summary.json"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anju.cli",
            "demo",
            "--duration",
            str(DURATION_S),
            "--alarm-after",
            str(ALARM_AFTER_S),
            "--summary-json",
            str(summary_path),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    receiver_path = tmp_path / "receiver.out"
    try:
        assert demo.stdout is not None
        head, key = _until_key(demo.stdout)
        with receiver_path.open("w", encoding="utf-8") as receiver_out:
            receiver = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "examples" / "webhook_receiver.py"),
                    "--api",
                    api,
                    "--listen",
                    f"127.0.0.1:{free_port()}",
                ],
                env={**os.environ, "ANJU_API_KEY": key},
                stdout=receiver_out,
                stderr=subprocess.STDOUT,
            )
            try:
                rest, _ = demo.communicate(timeout=DURATION_S + 90)
            finally:
                receiver.terminate()
                receiver.wait(timeout=10)
    finally:
        if demo.returncode is None:
            demo.kill()
            demo.wait()
    output = head + rest
    assert demo.returncode == 0, output
    summary = json.loads(summary_path.read_text(encoding="utf-8"))

    doors = egress_doors(site_device(ALARM_DEVICE_ID))
    assert summary["egress_doors"] == len(doors) >= 1
    assert summary["doors_released"] == len(doors), output
    for door in doors:
        assert f"egress door {door.device_id} released" in output

    incident = summary["incident"]
    assert (incident["type"], incident["device_id"], incident["status"]) == (
        "fire",
        ALARM_DEVICE_ID,
        "open",
    )
    assert incident["escalation_level"] >= 2, "unclaimed for over 6 s with a 3 s limit"
    escalations = [entry for entry in incident["log"] if entry["actor"] == "escalation"]
    assert len(escalations) == incident["escalation_level"]
    assert summary["escalations"] >= incident["escalation_level"]
    assert summary["escalation_limits"].startswith("P1 unclaimed after 3 s, again every 3 s")

    deliveries = summary["webhook_deliveries"]
    assert summary["webhook_subscriptions"] == 1
    assert deliveries["delivered"] >= 1 + 2, deliveries
    assert deliveries["dead"] == 0
    received = receiver_path.read_text(encoding="utf-8")
    assert "REJECTED" not in received
    verified = [line for line in received.splitlines() if line.startswith("verified ")]
    assert len(verified) >= deliveries["delivered"], received
    assert f"verified incident.opened: incident {incident['id']} fire" in received
    assert f"verified incident.escalated: incident {incident['id']} fire" in received

    assert summary["api_key"] == key
    with psycopg.connect(database_url) as conn:
        revoked = conn.execute(
            "SELECT revoked_at IS NOT NULL FROM api_keys WHERE prefix = %s", [token_prefix(key)]
        ).fetchone()
    assert revoked == (True,), "the run's key outlived the run"

    _check_the_wearer(summary, output, received, database_url)


def _check_the_wearer(
    summary: dict[str, Any], output: str, received: str, database_url: str
) -> None:
    """The wearer's heart rate reached the cloud and the API; their SOS reached the queue
    as a P1 incident at their home, bound to them, timed and sent to the receiver."""
    site, band = site_band(WEARER_BAND_ID)
    wearable = summary["wearable"]
    assert (wearable["device"], wearable["building"], wearable["unit"]) == (
        band.device_id,
        band.building,
        band.unit,
    )
    assert wearable["bands"] == sum(len(s.bands) for s in SITES) == wearable["bands_reporting"]
    with psycopg.connect(database_url) as conn:
        stored = [
            float(value)
            for (value,) in conn.execute(
                "SELECT value FROM readings WHERE device_id = %s AND metric = 'heart_rate_bpm'",
                [band.device_id],
            ).fetchall()
        ]
        bound = conn.execute(
            "SELECT r.id, r.building, r.unit, r.personal_ciphertext IS NULL "
            "FROM devices d JOIN residents r ON r.id = d.resident_id WHERE d.id = %s",
            [band.device_id],
        ).fetchone()
    assert wearable["heart_rate_readings"] == len(stored) >= wearable["heart_rate_seen"] >= 2
    assert wearable["heart_rate_bpm"] in stored
    assert 40 <= wearable["heart_rate_bpm"] <= 150
    wearer = f"resident {wearable['resident_id']} in {band.unit} ({band.device_id})"
    assert f"heart rate of {wearer} reached the cloud" in output

    assert bound == (wearable["resident_id"], band.building, band.unit, True), "location only"
    assert wearable["sos_resident"]["id"] == wearable["resident_id"]
    sos = wearable["sos_incident"]
    assert (sos["type"], sos["priority"], sos["device_id"]) == ("sos", 1, band.device_id)
    assert (sos["community"], sos["building"], sos["unit"]) == (
        site.community,
        band.building,
        band.unit,
    )
    assert 0 < wearable["sos_latency_ms"] < 30_000
    assert wearable["sos_pipeline_latency_ms"] is not None
    assert f"SOS to the emergency queue (incident {sos['id']}) in" in output
    assert f"verified incident.opened: incident {sos['id']} sos" in received


def _until_key(stdout: IO[str]) -> tuple[str, str]:
    """The demo's output up to the line with its API key, and the key."""
    lines: list[str] = []
    for line in stdout:
        lines.append(line)
        found = KEY.search(line)
        if found:
            return "".join(lines), found.group(1)
    raise AssertionError("the demo ended without printing its API key:\n" + "".join(lines))
