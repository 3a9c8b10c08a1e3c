"""An installer's BLE commands against simulated bands in their own process.

``anju sim bands`` serves CB-300 and CB-100 bands as an HCI dongle over TCP; ``anju
device scan ble`` and ``anju device test`` reach it through the bumble backend, as
they would reach a USB dongle on site.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ANJU = [sys.executable, "-m", "anju.cli"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def adapter() -> Iterator[str]:
    """The adapter setting for 2 care bands and 2 beacon bands served by ``anju sim bands``."""
    process = subprocess.Popen(
        [*ANJU, "sim", "bands", "--connected", "2", "--beacons", "2", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        assert ready[:1] == ["ready"], ready
        yield "bumble:" + ready[1].removeprefix("hci=")
    finally:
        process.terminate()
        process.wait(timeout=20)


def anju(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as an installer would, on a terminal wide enough for its tables."""
    return subprocess.run(
        [*ANJU, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_scan_lists_every_band_with_the_profiles_that_fit(adapter: str) -> None:
    done = anju("device", "scan", "ble", "--adapter", adapter, "--candidates", "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    found = {hit["address"]: hit["suggested"] for hit in result["found"]}
    assert found == {
        "ble://F0:A1:00:00:00:01": ["anju-wearable-ble"],
        "ble://F0:A1:00:00:00:02": ["anju-wearable-ble"],
        "ble://F0:B1:00:00:00:01": ["anju-wearable-beacon"],
        "ble://F0:B1:00:00:00:02": ["anju-wearable-beacon"],
    }
    assert all("RSSI" in hit["detail"] for hit in result["found"])


def test_a_care_band_is_connected_once_and_its_values_decoded(adapter: str) -> None:
    done = anju(
        "device",
        "test",
        "--profile",
        "anju-wearable-ble",
        "--address",
        "ble://F0:A1:00:00:00:01",
        "--adapter",
        adapter,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    points = {point["name"]: point for point in result["points"]}
    assert 40 <= points["heart_rate"]["value"] <= 130
    assert points["heart_rate"]["where"] == "characteristic 2a37 bpm"
    assert 0 <= points["battery"]["value"] <= 100
    assert points["alert_flags"]["label"] == "none"
    assert 25 <= points["skin_temperature"]["value"] <= 40
    assert points["in_range"]["value"] == 1
    requests = [request["request"] for request in result["requests"]]
    assert requests[0] == "advertisement"
    assert "read 2a19" in requests
    assert "notification 2a37" in requests


def test_raw_shows_the_bytes_each_value_came_from(adapter: str) -> None:
    done = anju(
        "device",
        "test",
        "--profile",
        "anju-wearable-beacon",
        "--address",
        "ble://F0:B1:00:00:00:02",
        "--adapter",
        adapter,
        "--raw",
    )
    assert done.returncode == 0, done.stderr
    assert "manufacturer data 0xffff byte 1 uint8" in done.stdout
    assert "advertisement" in done.stdout


def test_a_band_that_is_not_there_is_named_with_what_to_check(adapter: str) -> None:
    done = anju(
        "device",
        "test",
        "--profile",
        "anju-wearable-beacon",
        "--address",
        "ble://F0:B1:00:00:00:09",
        "--adapter",
        adapter,
        "--timeout",
        "0.5",
    )
    assert done.returncode == 1
    assert "ble://F0:B1:00:00:00:09" in done.stderr
    assert "not heard advertising" in done.stderr


def test_a_modbus_profile_with_a_ble_address_is_refused() -> None:
    done = anju(
        "device", "test", "--profile", "anju-smoke-mb", "--address", "ble://F0:B1:00:00:00:01"
    )
    assert done.returncode == 1
    assert "which the modbus driver reaches at modbus-rtu:// or modbus-tcp://" in done.stderr


def test_without_an_adapter_the_reason_is_said() -> None:
    done = anju("device", "scan", "ble", "--adapter", "bleak:hci9")
    assert done.returncode == 1
    assert "no Bluetooth adapter" in done.stderr
