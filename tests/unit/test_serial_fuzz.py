"""Frame readers fed random bytes: nothing escapes, noise is not taken for records.

Four properties, for every framing a profile can declare:

- any byte stream, cut into any chunks, gives the same records and faults as fed at
  once, and ``feed`` and ``reset`` never raise;
- valid frames with noise between them are all recovered when the noise holds no
  start byte (for line framings: garbage lines between them);
- for binary framings, after any stream and ``expire`` (the line went quiet) the next
  valid frame is read at once: no false start holds it back;
- uniform random bytes pass a checksum no more often than its width allows.

Hypothesis runs derandomised, so every run tries the same examples.
"""

import json
import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.drivers.serial.checksums import crc16_modbus, xor8
from edge.drivers.serial.framing import FrameFault, Record, reader_for
from schemas.protocols.serial import BinaryFraming, FieldsFraming, SerialSettings

STREAMS = 300
RECOVERIES = 80
"""Examples per framing: 300 drawn streams (each with 4 more made from it, so 1,500
streams per reader) and 80 runs of valid frames between noise. Hypothesis's own work
is most of the time: the file runs in about 15 s on a busy 2-core machine."""

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def serial(framing: dict[str, Any], records: dict[str, Any], **more: Any) -> SerialSettings:
    return SerialSettings.model_validate({"framing": framing, "records": records, **more})


NMEA = serial({"max_frame_bytes": 64}, {"PCNT": ["channel", "zone", "count"]})
REGEX = serial(
    {
        "mode": "regex",
        "pattern": r"(?P<type>ZONE) (?P<zone>\d+) (?P<state>\w+)",
        "max_frame_bytes": 32,
    },
    {"ZONE": ["zone", "state"]},
)
KEYVALUE = serial(
    {"mode": "keyvalue", "type_key": "ev", "terminator": "\r\n", "max_frame_bytes": 48},
    {"ALARM": ["zone", "state"]},
    text_fields=["zone"],
)
JSON = serial(
    {"mode": "json", "type_key": "type", "max_frame_bytes": 96},
    {"alarm": ["zone", "open", "level"]},
)
LENGTH_CRC = serial(
    {
        "mode": "binary",
        "start": "AA 55",
        "length": {"offset": 2, "counts": "payload"},
        "type_code": {"offset": 3},
        "checksum": "crc16-modbus",
        "max_frame_bytes": 64,
    },
    {
        "STATUS": {
            "code": 1,
            "fields": {
                "zone": {"offset": 4, "type": "u16be"},
                "temp": {"offset": 6, "type": "s16le"},
            },
        }
    },
)
STX_ETX = serial(
    {"mode": "binary", "start": "02", "end": "03", "checksum": "xor8", "max_frame_bytes": 16},
    {
        "DOOR": {
            "fields": {"zone": {"offset": 1, "type": "u8"}, "open": {"offset": 2, "type": "bool"}}
        }
    },
)
LENGTH_END_SUM = serial(
    {
        "mode": "binary",
        "start": "68",
        "end": "16",
        "length": {"offset": 1, "type": "u16le", "counts": "rest"},
        "checksum": "sum8",
        "checksum_from": 0,
        "max_frame_bytes": 40,
    },
    {"METER": {"fields": {"kwh": {"offset": 3, "type": "f32be"}}}},
)


Frame = tuple[bytes, dict[str, Any]]
"""A valid frame's bytes and the fields its record must carry."""


def nmea(draw: random.Random) -> Frame:
    channel, zone, count = draw.randint(1, 4), draw.choice(["Z1", "Q", "ZQ7"]), draw.randint(0, 99)
    body = f"PCNT,{channel},{zone},{count}".encode()
    frame = b"$" + body + f"*{xor8(body):02X}\r\n".encode()
    return frame, {"channel": channel, "zone": zone, "count": count}


def zone_line(draw: random.Random) -> Frame:
    zone, state = draw.randint(0, 999), draw.choice(["open", "shut", "x"])
    return f"ZONE {zone} {state}\n".encode(), {"zone": zone, "state": state}


def alarm_pairs(draw: random.Random) -> Frame:
    zone, state = f"{draw.randint(0, 999):03d}", draw.choice(["open", "shut", "x"])
    return f"ev=ALARM zone={zone} state={state}\r\n".encode(), {"zone": zone, "state": state}


def alarm_json(draw: random.Random) -> Frame:
    zone, is_open, level = draw.randint(0, 999), draw.random() < 0.5, draw.randint(-5, 5)
    document = {"type": "alarm", "zone": str(zone), "open": is_open, "level": level}
    return json.dumps(document).encode() + b"\n", {"zone": zone, "open": is_open, "level": level}


def status(draw: random.Random) -> Frame:
    zone, temp = draw.randint(0, 0xFFFF), draw.randint(-0x8000, 0x7FFF)
    body = bytes([5, 1]) + zone.to_bytes(2, "big") + temp.to_bytes(2, "little", signed=True)
    frame = b"\xaa\x55" + body + crc16_modbus(body).to_bytes(2, "little")
    return frame, {"zone": zone, "temp": temp}


def door(draw: random.Random) -> Frame:
    zone, is_open = draw.choice([z for z in range(256) if z not in (2, 3)]), draw.random() < 0.5
    body = bytes([zone, int(is_open)])  # neither it nor its checksum holds the end byte
    return b"\x02" + body + bytes([xor8(body), 0x03]), {"zone": zone, "open": is_open}


def meter(draw: random.Random) -> Frame:
    kwh = draw.randint(0, 2**24)  # exact as an f32
    head = b"\x68\x06\x00" + struct.pack(">f", kwh)
    return head + bytes([sum(head) & 0xFF, 0x16]), {"kwh": float(kwh)}


@dataclass(frozen=True)
class Case:
    """A framing, a maker of its valid frames, and the tokens that make streams
    interesting for it (its delimiters, partial frames)."""

    settings: SerialSettings
    frame: Callable[[random.Random], Frame]
    tokens: list[bytes]

    def frames(self) -> st.SearchStrategy[Frame]:
        """Valid frames, one integer drawn each: cheaper for hypothesis than building them."""
        return st.integers(0, 2**32).map(lambda seed: self.frame(random.Random(seed)))


CASES = {
    "fields": Case(NMEA, nmea, [b"$", b"*", b",", b"\r\n", b"$PCNT,", b"*00\r\n"]),
    "regex": Case(REGEX, zone_line, [b"\n", b"\r", b"ZONE ", b" 1 ", b"\xff"]),
    "keyvalue": Case(KEYVALUE, alarm_pairs, [b"\r\n", b"=", b" ", b"ev=ALARM", b"zone=1"]),
    "json": Case(JSON, alarm_json, [b"\n", b"{", b"}", b'"type": "alarm"', b"NaN", b"[" * 20]),
    "binary-length-crc16": Case(
        LENGTH_CRC, status, [b"\xaa\x55", b"\xaa", b"\x55", b"\x05\x01", b"\xff"]
    ),
    "binary-start-end-xor8": Case(STX_ETX, door, [b"\x02", b"\x03", b"\x00"]),
    "binary-length-end-sum8": Case(LENGTH_END_SUM, meter, [b"\x68", b"\x16", b"\x06\x00"]),
}


def streams(case: Case) -> st.SearchStrategy[bytes]:
    """Random bytes mixed with the framing's own tokens and valid frames."""
    piece = st.one_of(
        st.binary(max_size=32),
        st.sampled_from(case.tokens),
        case.frames().map(lambda frame: frame[0]),
    )
    return st.lists(piece, max_size=10).map(b"".join)


def more_streams(case: Case, seed: bytes) -> list[bytes]:
    """Streams made like ``streams`` from a seed, without hypothesis: 4 more per example
    at a fraction of the cost of drawing them."""
    draw = random.Random(seed)
    makers: list[Callable[[], bytes]] = [
        lambda: draw.randbytes(draw.randint(0, 48)),
        lambda: draw.choice(case.tokens),
        lambda: case.frame(draw)[0],
    ]
    return [b"".join(draw.choice(makers)() for _ in range(draw.randint(0, 16))) for _ in range(4)]


def chunked(data: bytes) -> list[bytes]:
    """``data`` in chunks of random sizes, the same for the same data on every run."""
    draw = random.Random(data)
    chunks, at = [], 0
    while at < len(data):
        size = draw.choice([1, 1, 2, 3, 7, 64])
        chunks.append(data[at : at + size])
        at += size
    return chunks


@pytest.mark.parametrize("name", sorted(CASES))
def test_any_stream_in_any_chunks_reads_the_same_and_never_raises(name: str) -> None:
    case = CASES[name]

    @settings(FUZZ, max_examples=STREAMS)
    @given(streams(case))
    def run(data: bytes) -> None:
        for stream in (data, *more_streams(case, data)):
            whole = reader_for(case.settings).feed(stream)
            reader = reader_for(case.settings)
            assert [item for chunk in chunked(stream) for item in reader.feed(chunk)] == whole
            for item in whole:
                assert isinstance(item, Record | FrameFault)
                if isinstance(item, FrameFault):
                    assert len(item.raw) <= 64
            assert all(isinstance(fault, FrameFault) for fault in reader.reset())
            assert reader.feed(stream) == whole  # after a reset, as good as new

    run()


def _without(delimiters: bytes) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=40).map(lambda b: bytes(x for x in b if x not in delimiters))


@pytest.mark.parametrize("name", sorted(CASES))
def test_frames_between_noise_without_a_start_are_all_recovered(name: str) -> None:
    case = CASES[name]
    framing = case.settings.framing
    if isinstance(framing, BinaryFraming):
        noise, exact = _without(framing.start_bytes[:1]), True
    elif isinstance(framing, FieldsFraming):
        noise, exact = _without(b"$"), True
    else:
        # Garbage lines: whatever they hold ends where the next line begins, but one
        # may happen to parse, so the valid lines need only all be there, in order.
        noise = _without(b"\r\n").map(lambda b: b + b"\r\n" if b else b"")
        exact = False

    @settings(FUZZ, max_examples=RECOVERIES)
    @given(st.lists(st.tuples(noise, case.frames()), max_size=6), noise)
    def run(pairs: list[tuple[bytes, Frame]], tail: bytes) -> None:
        data = b"".join(gap + frame for gap, (frame, _) in pairs) + tail
        got = [
            dict(i.fields) for i in reader_for(case.settings).feed(data) if isinstance(i, Record)
        ]
        want = [fields for _, (_, fields) in pairs]
        if exact:
            assert got == want
        else:
            remaining = iter(got)
            assert all(any(fields == other for other in remaining) for fields in want)

    run()


@pytest.mark.parametrize("name", [name for name in sorted(CASES) if name.startswith("binary")])
def test_after_the_line_goes_quiet_nothing_holds_the_next_frame_back(name: str) -> None:
    """Whatever came before (false starts whose length promises more than comes), once
    ``expire`` has run nothing is pending and the next valid frame is read at once."""
    case = CASES[name]

    @settings(FUZZ, max_examples=RECOVERIES)
    @given(streams(case), case.frames())
    def run(data: bytes, frame: Frame) -> None:
        reader = reader_for(case.settings)
        reader.feed(data)
        expired = reader.expire()
        assert all(isinstance(item, Record | FrameFault) for item in expired)
        (record,) = reader.feed(frame[0])
        assert isinstance(record, Record)
        assert dict(record.fields) == frame[1]

    run()


# --- noise against checksums ------------------------------------------------------

NOISE_BYTES = 1 << 20


def _rate_case(checksum: str) -> SerialSettings:
    """One-byte start, a length that counts the whole frame, one record: every start
    byte in noise is a candidate, and nearly all reach the checksum (a length byte
    below the minimum frame is the only other way out)."""
    return serial(
        {
            "mode": "binary",
            "start": "7E",
            "length": {"offset": 1, "counts": "frame"},
            "checksum": checksum,
        },
        {"TICK": {"fields": {"n": {"offset": 2, "type": "u8"}}}},
    )


@pytest.mark.parametrize(
    ("framing", "bits", "start"),
    [
        (_rate_case("xor8"), 8, b"\x7e"),
        (_rate_case("sum8"), 8, b"\x7e"),
        (_rate_case("crc16-modbus"), 16, b"\x7e"),
        (_rate_case("crc16-ccitt"), 16, b"\x7e"),
    ],
    ids=["xor8", "sum8", "crc16-modbus", "crc16-ccitt"],
)
def test_noise_passes_a_checksum_no_more_often_than_its_width_allows(
    framing: SerialSettings, bits: int, start: bytes
) -> None:
    """A checksum of b bits matches random bytes with probability 2**-b, so of the n
    candidate frames in uniform noise (at most one per start byte) about n / 2**b pass.
    The count of false records is then close to Poisson with that mean; the bound of
    mean + 6 standard deviations + 3 is never crossed by chance (p < 1e-6) yet sits far
    below what a checksum that was not checked would let through (every candidate)."""
    noise = random.Random(20240501).randbytes(NOISE_BYTES)
    reader = reader_for(framing)
    items = [item for i in range(0, NOISE_BYTES, 4096) for item in reader.feed(noise[i : i + 4096])]
    accepted = sum(isinstance(item, Record) for item in items)
    candidates = noise.count(start)
    expected = candidates / 2**bits
    assert accepted <= expected + 6 * math.sqrt(expected) + 3, (accepted, candidates)
    if bits == 8:  # about 16 expected: none at all would mean no candidate was checked
        assert accepted > 0
    assert any(isinstance(item, FrameFault) and item.kind == "checksum" for item in items)
