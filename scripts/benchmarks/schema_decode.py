"""schema-decode: how fast the cloud can parse and validate a batch, msgspec against pydantic.

Ingest decodes every batch of every gateway, so the choice of library for the wire
types (schemas/wire.py) rests on this figure. The pydantic models below carry the
same constraints as the msgspec structs (patterns, aware datetimes, enums, bounds,
no unknown fields, strict types); before timing, both libraries must accept the
sample batches and reject the same broken ones, so neither wins by checking less.
"""

import argparse
import json
import platform
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
import pydantic
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from benchmarks import Result
from schemas.errors import WireError
from schemas.vocabulary import EVENT_SEVERITY, EventType, Metric, Severity
from schemas.wire import (
    Event,
    EventBatch,
    EventData,
    Reading,
    TelemetryBatch,
    decode,
    encode,
)

NAME = "schema-decode"

# --- the pydantic equivalents of schemas.wire ---------------------------------------

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
CommunityPath = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}/[a-z0-9][a-z0-9-]{0,31}$")]
SpoolEpoch = Annotated[str, Field(pattern=r"^[0-9a-f]{16,32}$")]
Sequence = Annotated[int, Field(ge=0, le=2**63 - 1)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PydReading(_Wire):
    device: Identifier
    ts: AwareDatetime
    seq: Sequence
    metric: Metric
    value: float


class PydEventData(_Wire):
    point: str | None = None
    value: float | None = None
    threshold: float | None = None
    zone: str | None = None
    channel: int | None = None
    count: int | None = None
    card_hash: str | None = None
    door: str | None = None
    duration_s: float | None = None
    reason: str | None = None


class PydEvent(_Wire):
    device: Identifier
    ts: AwareDatetime
    seq: Sequence
    type: EventType
    severity: Severity
    data: PydEventData = PydEventData()


class _PydHeader(_Wire):
    schema_version: Literal[1] = 1
    gateway: Identifier
    community: CommunityPath
    spool_epoch: SpoolEpoch
    batch_seq: Sequence
    sent_at: AwareDatetime


class PydTelemetryBatch(_PydHeader):
    items: Annotated[list[PydReading], Field(min_length=1, max_length=100_000)]


class PydEventBatch(_PydHeader):
    items: Annotated[list[PydEvent], Field(min_length=1, max_length=10_000)]


# --- realistic payloads -------------------------------------------------------------

_T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
_HEADER: dict[str, Any] = {
    "gateway": "gw-fenghuang-01",
    "community": "xijin/fenghuang",
    "spool_epoch": "3f9a0c1b7d2e4a65",
    "batch_seq": 18_342,
    "sent_at": _T0 + timedelta(seconds=5),
}
# What one community gateway reports: per device kind, its metrics and a typical value.
_KINDS: dict[str, list[tuple[Metric, float, float]]] = {
    "smoke": [
        (Metric.SMOKE_OBSCURATION, 0.02, 0.01),
        (Metric.TEMPERATURE, 22.0, 1.5),
        (Metric.CO, 2.0, 1.0),
        (Metric.BATTERY, 87.0, 3.0),
    ],
    "door": [(Metric.DOOR_OPEN, 0.0, 0.0), (Metric.DOOR_LOCKED, 1.0, 0.0)],
    "band": [
        (Metric.HEART_RATE, 72.0, 8.0),
        (Metric.RR_INTERVAL, 830.0, 60.0),
        (Metric.STEPS, 2_400.0, 900.0),
    ],
    "cam": [(Metric.PEOPLE_COUNT, 4.0, 3.0)],
}
_EVENTS: list[tuple[EventType, str, EventData]] = [
    (EventType.ACCESS_GRANTED, "door", EventData(card_hash="9f3a01c2", door="b3-main")),
    (EventType.ACCESS_DENIED, "door", EventData(card_hash="51be7740", door="b3-main")),
    (EventType.DOOR_HELD_OPEN, "door", EventData(duration_s=45.0, threshold=30.0)),
    (EventType.CAMERA_INTRUSION, "cam", EventData(zone="Z1", channel=1)),
    (EventType.CAMERA_LINE_CROSSING, "cam", EventData(zone="L1", channel=2)),
    (EventType.WEARABLE_HEART_RATE_ABNORMAL, "band", EventData(point="heart_rate", value=134)),
    (EventType.BATTERY_LOW, "smoke", EventData(point="battery", value=14.0, threshold=15.0)),
    (EventType.SMOKE_ALARM, "smoke", EventData(point="obscuration", value=4.2)),
]


def telemetry_payload(items: int, rng: random.Random) -> bytes:
    """A telemetry batch of ``items`` readings from a mix of devices, as JSON."""
    seqs: dict[str, int] = {}
    readings = []
    for n in range(items):
        kind = rng.choice(list(_KINDS))
        device = f"{kind}-b{rng.randint(1, 12)}-{rng.randint(1, 6)}"
        metric, typical, spread = rng.choice(_KINDS[kind])
        seqs[device] = seqs.get(device, rng.randint(0, 50_000)) + 1
        readings.append(
            Reading(
                device=device,
                ts=_T0 + timedelta(milliseconds=50 * n),
                seq=seqs[device],
                metric=metric,
                value=round(max(0.0, rng.gauss(typical, spread)), 3),
            )
        )
    return encode(TelemetryBatch(**_HEADER, items=readings))


def event_payload(items: int, rng: random.Random) -> bytes:
    """An event batch of ``items`` events of the kinds a busy evening brings, as JSON."""
    events = []
    for n in range(items):
        event_type, kind, data = rng.choice(_EVENTS)
        events.append(
            Event(
                device=f"{kind}-b{rng.randint(1, 12)}-{rng.randint(1, 6)}",
                ts=_T0 + timedelta(milliseconds=400 * n),
                seq=10_000 + n,
                type=event_type,
                severity=EVENT_SEVERITY[event_type],
                data=data,
            )
        )
    return encode(EventBatch(**_HEADER, items=events))


# --- equivalence check --------------------------------------------------------------


def _broken_variants(payload: bytes) -> dict[str, bytes]:
    """Copies of a batch each breaking one rule the wire contract enforces."""
    document = json.loads(payload)

    def variant(change: Callable[[dict[str, Any]], object]) -> bytes:
        copy = json.loads(payload)
        change(copy)
        return json.dumps(copy).encode()

    first = document["items"][0]
    return {
        "naive datetime": variant(lambda d: d["items"][0].update(ts=first["ts"].rstrip("Z"))),
        "unknown field": variant(lambda d: d["items"][0].update(extra=1)),
        "negative seq": variant(lambda d: d["items"][0].update(seq=-1)),
        "bad device id": variant(lambda d: d["items"][0].update(device="Door 1")),
        "bad community": variant(lambda d: d.update(community="fenghuang")),
        "schema version 2": variant(lambda d: d.update(schema_version=2)),
        "empty batch": variant(lambda d: d.update(items=[])),
        "seq as string": variant(lambda d: d["items"][0].update(seq="7")),
    }


def _check_equivalent(
    payload: bytes, wire_type: type[msgspec.Struct], model: type[BaseModel]
) -> None:
    """Both decoders accept ``payload`` alike and reject each broken variant of it."""
    ours, theirs = decode(payload, wire_type), model.model_validate_json(payload)
    if msgspec.convert(theirs.model_dump(), wire_type) != ours:
        raise AssertionError(f"{wire_type.__name__}: the two decoders disagree on the sample")
    for case, broken in _broken_variants(payload).items():
        rejected = []
        for label, parse in (
            ("msgspec", lambda b=broken: decode(b, wire_type)),
            ("pydantic", lambda b=broken: model.model_validate_json(b)),
        ):
            try:
                parse()
            except (WireError, pydantic.ValidationError):
                rejected.append(label)
        if rejected != ["msgspec", "pydantic"]:
            raise AssertionError(f"{wire_type.__name__} {case}: only {rejected} rejected it")


# --- timing -------------------------------------------------------------------------


def _rate(parse: Callable[[], object], *, rounds: int, round_s: float) -> float:
    """Best calls per second over ``rounds`` rounds of about ``round_s`` seconds each.

    The best round, not the mean, estimates what the code costs: slower rounds are
    the machine doing something else.
    """
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            parse()
        elapsed = time.perf_counter() - start
        if elapsed >= round_s / 4:
            break
        loops *= 2
    loops = max(1, int(loops * round_s / elapsed))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(loops):
            parse()
        best = min(best, time.perf_counter() - start)
    return loops / best


def run(argv: list[str]) -> Result:
    """Time both decoders on both batch types and return the figures as one object."""
    parser = argparse.ArgumentParser(prog=f"bench.py {NAME}", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100, help="items per batch (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case (default 5)")
    parser.add_argument(
        "--round-seconds", type=float, default=0.3, help="length of one round (default 0.3)"
    )
    parser.add_argument("--seed", type=int, default=2019, help="seed of the sample payloads")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    telemetry, events = telemetry_payload(args.items, rng), event_payload(args.items, rng)
    _check_equivalent(telemetry, TelemetryBatch, PydTelemetryBatch)
    _check_equivalent(events, EventBatch, PydEventBatch)

    timing = {"rounds": args.rounds, "round_s": args.round_seconds}
    rates = {
        "msgspec_batches_per_s": _rate(lambda: decode(telemetry, TelemetryBatch), **timing),
        "pydantic_batches_per_s": _rate(
            lambda: PydTelemetryBatch.model_validate_json(telemetry), **timing
        ),
        "events_msgspec_batches_per_s": _rate(lambda: decode(events, EventBatch), **timing),
        "events_pydantic_batches_per_s": _rate(
            lambda: PydEventBatch.model_validate_json(events), **timing
        ),
    }
    return {
        "benchmark": NAME,
        "batch_items": args.items,
        **{key: round(value, 1) for key, value in rates.items()},
        "ratio": round(rates["msgspec_batches_per_s"] / rates["pydantic_batches_per_s"], 2),
        "msgspec_items_per_s": round(rates["msgspec_batches_per_s"] * args.items),
        "pydantic_items_per_s": round(rates["pydantic_batches_per_s"] * args.items),
        "events_ratio": round(
            rates["events_msgspec_batches_per_s"] / rates["events_pydantic_batches_per_s"], 2
        ),
        "events_msgspec_items_per_s": round(rates["events_msgspec_batches_per_s"] * args.items),
        "events_pydantic_items_per_s": round(rates["events_pydantic_batches_per_s"] * args.items),
        "telemetry_payload_bytes": len(telemetry),
        "events_payload_bytes": len(events),
        "python": platform.python_version(),
        "msgspec": msgspec.__version__,
        "pydantic": pydantic.VERSION,
    }
