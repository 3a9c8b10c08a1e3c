"""Named benchmarks for ``scripts/bench.py``, one module each.

A module is imported only when its benchmark is chosen, so a benchmark needing
services or heavy packages costs nothing to the others. Each module has
``run(argv: list[str]) -> dict[str, object]``: it parses its own options from
``argv`` and returns one JSON-ready object whose ``benchmark`` key is its name
(nested objects are shown with dotted keys in the table).
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass

Result = dict[str, object]


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    module: str
    summary: str

    def load(self) -> Callable[[list[str]], Result]:
        """The benchmark's ``run`` function, importing its module now."""
        run: Callable[[list[str]], Result] = importlib.import_module(self.module).run
        return run


REGISTRY: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for benchmark in (
        Benchmark(
            "schema-decode",
            "benchmarks.schema_decode",
            "decode and validate 100-item wire batches: msgspec against pydantic v2",
        ),
        Benchmark(
            "edge-modbus",
            "benchmarks.edge_modbus",
            "agent polling 500 Modbus TCP devices x 30 tags/s (Neuron's test) and 4 RTU lines",
        ),
        Benchmark(
            "edge-spool",
            "benchmarks.edge_spool",
            "durable spool appends (both fsync policies) and drain of a 200-device outage",
        ),
        Benchmark(
            "edge-ble",
            "benchmarks.edge_ble",
            "agent hearing 300 beacon bands and holding 20 connected ones; SOS to the spool",
        ),
        Benchmark(
            "edge-serial",
            "benchmarks.edge_serial",
            "16 OSDP readers on one 9600 baud line against the wire's limit; 4 camera boxes",
        ),
        Benchmark(
            "ingest",
            "benchmarks.ingest",
            "2 million readings: gateways -> Mosquitto -> anju cloud ingest -> PostgreSQL, vs COPY",
        ),
        Benchmark(
            "alarm-latency",
            "benchmarks.alarm_latency",
            "1,000 SOS alarms to the emergency queue (via the API) under 20,000 readings/s",
        ),
        Benchmark(
            "queue",
            "benchmarks.queue",
            "dispatcher's queue request and live push of a new incident, 10,000 open incidents",
        ),
    )
}
"""Every benchmark by name; add one here when its module exists."""
