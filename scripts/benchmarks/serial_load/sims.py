"""The simulators of ``edge-serial``: OSDP readers on one line and camera boxes, in
their own process so that their CPU time is not the agent's.

Spec (JSON line on stdin): ``{"osdp": {"path", "baud", "turnaround_s", "readers":
[{"address", "scbk"}]}, "cameras": [{"path", "baud", "rate"}]}``. Reports ``{"ready":
true}`` once everything serves, then, when stdin closes, ``{"records_sent": N,
"osdp": {...}}`` with the reader line's own statistics.
"""

import asyncio
import threading
from typing import Any

from benchmarks.child import read_spec, report, stop_when_parent_leaves
from firmware_sim.camera_box import CameraBox
from firmware_sim.osdp_readers import ReaderLine, SimReader
from firmware_sim.serial_line import SerialLine


async def _serve(spec: dict[str, Any]) -> None:
    osdp = spec["osdp"]
    readers = [
        SimReader(address=int(reader["address"]), scbk=bytes.fromhex(reader["scbk"]))
        for reader in osdp["readers"]
    ]
    line = ReaderLine(
        osdp["path"], int(osdp["baud"]), readers, turnaround_s=float(osdp["turnaround_s"])
    )
    boxes = [
        CameraBox(SerialLine(camera["path"], int(camera["baud"])), seed=number)
        for number, camera in enumerate(spec["cameras"])
    ]
    sent = [0] * len(boxes)

    def pump(number: int, rate: float) -> None:
        sent[number] = boxes[number].run_rate(rate)

    stop = asyncio.Event()
    stop_when_parent_leaves(stop)
    with line:
        threads = [
            threading.Thread(target=pump, args=(number, float(camera["rate"])), daemon=True)
            for number, camera in enumerate(spec["cameras"])
        ]
        for box, thread in zip(boxes, threads, strict=True):
            box.start()
            thread.start()
        report({"ready": True})
        await stop.wait()
        for box in boxes:
            box.close()
        for thread in threads:
            thread.join(timeout=5)
        stats = line.stats
    report(
        {
            "records_sent": sum(sent),
            "osdp": {
                "bytes_in": stats.bytes_in,
                "bytes_out": stats.bytes_out,
                "char_s": stats.char_s,
                "turnaround_s": dict(stats.turnaround_s),
            },
        }
    )


def main() -> None:
    spec = read_spec()
    asyncio.run(_serve(spec))


if __name__ == "__main__":
    main()
