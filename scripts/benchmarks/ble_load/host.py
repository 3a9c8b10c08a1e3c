"""The baseline of ``edge-ble``: a bare bumble host doing the radio work the agent does
(scanning every advertisement, holding the same connections, subscribed to the same
notifications) and nothing else, so the agent's CPU can be set against the stack's.

Spec: ``{"hci": "tcp-client:...", "connected": ["F0:A1:...", ...], "window_s": D,
"warmup_s": W}``; reports ``{"cpu_s", "window_s", "advertisements",
"notifications"}``.
"""

import asyncio
import os
import time
from typing import Any

from bumble.core import UUID
from bumble.device import Device, Peer
from bumble.hci import Address
from bumble.transport import open_transport

from benchmarks.child import run_measurement

_NOTIFIED = ("2A37", "7a1e0002-5c3b-4e8a-9d2f-6b0c4a8e1f30")


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    transport = await open_transport(spec["hci"])
    device = Device.with_hci(
        "baseline", Address("F0:FF:00:00:00:02"), transport.source, transport.sink
    )
    await device.power_on()
    counts = {"advertisements": 0, "notifications": 0}

    def heard(_advertisement: object) -> None:
        counts["advertisements"] += 1

    def notified(_value: bytes) -> None:
        counts["notifications"] += 1

    device.on("advertisement", heard)
    await device.start_scanning(active=False, filter_duplicates=False)
    for mac in spec["connected"]:
        connection = await device.connect(Address(mac), timeout=10)
        peer = Peer(connection)
        await peer.discover_services()
        await peer.discover_characteristics()
        for uuid in _NOTIFIED:
            for characteristic in peer.get_characteristics_by_uuid(UUID(uuid)):
                await characteristic.subscribe(notified)
    await asyncio.sleep(float(spec["warmup_s"]))
    before, cpu_before, t_before = dict(counts), _cpu_s(), time.monotonic()
    await asyncio.sleep(float(spec["window_s"]))
    result = {
        "window_s": time.monotonic() - t_before,
        "cpu_s": _cpu_s() - cpu_before,
        **{key: counts[key] - before[key] for key in counts},
    }
    await transport.close()
    return result


def main() -> None:
    run_measurement(_measure, failures=(Exception,))


if __name__ == "__main__":
    main()
