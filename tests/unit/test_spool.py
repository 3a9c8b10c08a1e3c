"""The durable spool: sealing, lane order, restarts, the disk budget and kill -9.

The sent state (PUBACKed, waiting for the cloud's acknowledgement) and the format 1
upgrade are in test_spool_acks.py."""

import asyncio
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.spool import SealedBatch, Spool, SpoolError
from schemas.topics import Channel
from schemas.vocabulary import EventType, Metric, Severity
from schemas.wire import Event, EventBatch, Reading, TelemetryBatch, decode, encode

NOW = datetime(2026, 11, 28, tzinfo=UTC)
GATEWAY, COMMUNITY = "gw-1", "xijin/fenghuang"
BUDGET = 64 * 1024 * 1024


def reading(seq: int, device: str = "sd-1") -> Reading:
    return Reading(
        device=device,
        ts=NOW + timedelta(seconds=seq),
        seq=seq,
        metric=Metric.TEMPERATURE,
        value=21.0 + seq / 100,
    )


def alarm(seq: int, device: str = "sd-1") -> Event:
    return Event(
        device=device, ts=NOW, seq=seq, type=EventType.SMOKE_ALARM, severity=Severity.CRITICAL
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def open_spool(path: Path, **options: object) -> Spool:
    return Spool(path, GATEWAY, COMMUNITY, budget_bytes=BUDGET, **options)  # type: ignore[arg-type]


def settle(spool: Spool, batch: SealedBatch) -> None:
    """What the uplink does for a batch the broker and then the cloud acknowledged."""
    spool.sent(batch)
    assert spool.acknowledge(spool.spool_epoch, [batch.batch_seq]) == [batch.batch_seq]


def drain(spool: Spool) -> list[SealedBatch]:
    """Flush, then take and acknowledge everything, in hand-out order."""
    spool.flush()
    taken = []
    while (batch := spool.take_nowait()) is not None:
        taken.append(batch)
        settle(spool, batch)
    assert spool.empty
    return taken


def readings_in(batches: list[SealedBatch]) -> list[Reading]:
    return [
        item
        for batch in batches
        if batch.channel is Channel.TELEMETRY
        for item in decode(batch.payload, TelemetryBatch).items
    ]


async def test_events_jump_ahead_of_sealed_telemetry(tmp_path: Path) -> None:
    with open_spool(tmp_path / "spool.db", max_batch_items=2) as spool:
        spool.add_readings([reading(1), reading(2)])
        spool.add_events([alarm(3)])
        first = await asyncio.wait_for(spool.take(), timeout=1)
        assert first.channel is Channel.EVENTS
        batch = decode(first.payload, EventBatch)
        assert (batch.gateway, batch.spool_epoch, batch.items[0].seq) == (
            GATEWAY,
            spool.spool_epoch,
            3,
        )
        spool.sent(first)
        second = await asyncio.wait_for(spool.take(), timeout=1)
        assert second.channel is Channel.TELEMETRY
        assert decode(second.payload, TelemetryBatch).batch_seq < batch.batch_seq


def test_a_batch_is_handed_out_once_per_connection_then_again_byte_for_byte(
    tmp_path: Path,
) -> None:
    with open_spool(tmp_path / "spool.db") as spool:
        spool.add_events([alarm(1)])
        first = spool.take_nowait()
        assert first is not None
        assert spool.take_nowait() is None
        spool.rewind()
        again = spool.take_nowait()
        assert again == first
        settle(spool, again)
        assert spool.empty


def test_sent_and_acknowledge_work_for_any_batch_in_flight(tmp_path: Path) -> None:
    with open_spool(tmp_path / "spool.db") as spool:
        for seq in range(1, 5):
            spool.add_events([alarm(seq)])
        a, b, c, d = (spool.take_nowait() for _ in range(4))
        assert a is not None
        assert b is not None
        assert c is not None
        assert d is not None
        spool.sent(b)
        spool.sent(c)
        assert spool.acknowledge(spool.spool_epoch, [d.batch_seq, c.batch_seq]) == [
            d.batch_seq,
            c.batch_seq,
        ]
        assert spool.depth[Channel.EVENTS] == 2
        spool.rewind()
        # b is sent and not due: only a, never PUBACKed, goes again at once.
        assert spool.take_nowait() == a
        assert spool.take_nowait() is None


async def test_readings_linger_then_seal_into_one_batch(tmp_path: Path) -> None:
    clock = Clock()
    with open_spool(tmp_path / "spool.db", linger_s=0.5, clock=clock) as spool:
        spool.add_readings([reading(1)])
        spool.add_readings([reading(2)])
        assert spool.depth[Channel.TELEMETRY] == 0
        assert spool.take_nowait() is None
        clock.now += 0.5
        batch = await asyncio.wait_for(spool.take(), timeout=1)
        assert [r.seq for r in decode(batch.payload, TelemetryBatch).items] == [1, 2]


def test_full_batch_seals_without_waiting(tmp_path: Path) -> None:
    with open_spool(tmp_path / "spool.db", linger_s=60, max_batch_items=3) as spool:
        spool.add_readings([reading(i) for i in range(1, 8)])
        assert spool.depth[Channel.TELEMETRY] == 2
        assert [batch.items for batch in drain(spool)] == [3, 3, 1]


def test_sealed_bytes_are_exactly_the_encoded_batch(tmp_path: Path) -> None:
    with open_spool(tmp_path / "spool.db", max_batch_items=5) as spool:
        spool.add_readings([reading(i, f"sd-{i % 2}") for i in range(1, 6)])
        (batch,) = drain(spool)
        assert encode(decode(batch.payload, TelemetryBatch)) == batch.payload


def test_restart_resends_unacked_batches_byte_for_byte_and_continues_sequences(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    with open_spool(path, max_batch_items=2, linger_s=60) as spool:
        epoch = spool.spool_epoch
        spool.add_readings([reading(1, "sd-1"), reading(2, "sd-1")])
        spool.add_events([alarm(7, "sd-2")])
        spool.add_readings([reading(3, "sd-1")])
        sent = [spool.take_nowait(), spool.take_nowait()]
        highest = max(batch.batch_seq for batch in sent if batch is not None)
    with open_spool(path, max_batch_items=2, linger_s=60) as spool:
        assert spool.spool_epoch == epoch
        assert (spool.last_seq("sd-1"), spool.last_seq("sd-2"), spool.last_seq("x")) == (3, 7, 0)
        assert spool.pending_readings == 1
        again = [spool.take_nowait(), spool.take_nowait()]
        assert again == sent
        assert [b.channel for b in again if b is not None] == [Channel.EVENTS, Channel.TELEMETRY]
        rest = spool.take_nowait()
        assert rest is not None
        assert rest.batch_seq > highest
        assert [r.seq for r in decode(rest.payload, TelemetryBatch).items] == [3]


def test_events_go_before_older_telemetry_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with open_spool(path, max_batch_items=10) as spool:
        for start in range(0, 50, 10):
            spool.add_readings([reading(seq) for seq in range(start + 1, start + 11)])
        spool.add_events([alarm(51)])
    with open_spool(path) as spool:
        channels = [batch.channel for batch in drain(spool)]
    assert channels == [Channel.EVENTS] + [Channel.TELEMETRY] * 5


def test_budget_drops_oldest_telemetry_never_events_and_reports_gaps(tmp_path: Path) -> None:
    claimed: list[str] = []
    seqs = {"sd-1": 10_000, "sd-2": 20_000}

    def seq_source(device: str) -> int:
        claimed.append(device)
        seqs[device] += 1
        return seqs[device]

    budget = 512 * 1024
    with Spool(
        tmp_path / "spool.db",
        GATEWAY,
        COMMUNITY,
        budget_bytes=budget,
        max_batch_items=100,
        seq_source=seq_source,
    ) as spool:
        spool.add_events([alarm(0, "sd-9")])
        total = 0
        for start in range(1, 20_001, 100):
            spool.add_readings(
                [reading(seq, f"sd-{1 + seq % 2}") for seq in range(start, start + 100)]
            )
            total += 100
            if start % 2_000 == 1:
                spool.add_events([alarm(start, "sd-9")])
        assert spool.size_bytes() <= budget
        dropped = spool.dropped_readings
        assert 0 < dropped < total
        batches = drain(spool)
    events = [
        item
        for batch in batches
        if batch.channel is Channel.EVENTS
        for item in decode(batch.payload, EventBatch).items
    ]
    alarms = [event for event in events if event.type is EventType.SMOKE_ALARM]
    gaps = [event for event in events if event.type is EventType.TELEMETRY_GAP]
    assert len(alarms) == 11
    assert sum(gap.data.count or 0 for gap in gaps) == dropped
    assert {gap.device for gap in gaps} == {"sd-1", "sd-2"}
    assert all(
        gap.severity is Severity.WARNING and "dropped readings" in (gap.data.reason or "")
        for gap in gaps
    )
    assert sorted(gap.seq for gap in gaps if gap.device == "sd-1") == list(
        range(10_001, 10_001 + claimed.count("sd-1"))
    )
    kept = sorted(r.seq for r in readings_in(batches))
    assert kept == list(range(dropped + 1, total + 1))


def test_gap_events_follow_the_stored_sequence_without_a_source(tmp_path: Path) -> None:
    with Spool(
        tmp_path / "spool.db", GATEWAY, COMMUNITY, budget_bytes=256 * 1024, max_batch_items=100
    ) as spool:
        for start in range(1, 10_001, 100):
            spool.add_readings([reading(seq) for seq in range(start, start + 100)])
        gaps = [
            item
            for batch in drain(spool)
            if batch.channel is Channel.EVENTS
            for item in decode(batch.payload, EventBatch).items
        ]
    assert gaps
    # The first drop took readings 1..count; the gap event follows the last stored seq.
    assert gaps[0].seq > (gaps[0].data.count or 0)
    assert all(a.seq < b.seq for a, b in itertools.pairwise(gaps))


def test_oldest_unsent_age(tmp_path: Path) -> None:
    with open_spool(tmp_path / "spool.db") as spool:
        assert spool.oldest_unsent_age_s is None
        spool.add_readings([reading(1)])
        age = spool.oldest_unsent_age_s
        assert age is not None
        assert 0 <= age < 5
        drain(spool)
        assert spool.oldest_unsent_age_s is None


_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path

    from edge.spool import Spool
    from schemas.vocabulary import Metric
    from schemas.wire import Reading

    spool = Spool(Path(sys.argv[1]), "gw-1", "xijin/fenghuang", budget_bytes=2**30,
                  max_batch_items=250, linger_s=3600)
    seq = 0
    while True:
        batch = []
        for _ in range(30):
            seq += 1
            batch.append(Reading(device="sd-1", ts=datetime.now(UTC), seq=seq,
                                 metric=Metric.TEMPERATURE, value=20.0))
        spool.add_readings(batch)
        print(seq, flush=True)
    """
)


def test_every_append_reported_before_kill_9_is_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    appended = 0
    try:
        while appended < 3_000:
            line = child.stdout.readline()
            assert line, "the writer exited early"
            appended = int(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    with open_spool(path) as spool:
        seqs = [r.seq for r in readings_in(drain(spool))]
    assert seqs[:appended] == list(range(1, appended + 1))
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_corrupt_file_is_refused_naming_its_path(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not an SQLite database, just junk " * 100)
    with pytest.raises(SpoolError, match="not a usable spool file") as raised:
        open_spool(path)
    assert raised.value.path == path
    assert str(path) in str(raised.value)


def test_another_sqlite_file_or_gateway_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(SpoolError, match="not a spool"):
        open_spool(other)
    path = tmp_path / "spool.db"
    open_spool(path).close()
    with pytest.raises(SpoolError, match="belongs to gateway 'gw-1'"):
        Spool(path, "gw-2", COMMUNITY, budget_bytes=BUDGET)


def gap_events(batches: list[SealedBatch]) -> list[Event]:
    return [
        item
        for batch in batches
        if batch.channel is Channel.EVENTS
        for item in decode(batch.payload, EventBatch).items
        if item.type is EventType.TELEMETRY_GAP
    ]


def test_a_closed_or_broken_file_raises_spool_error_for_writes_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    spool.add_events([alarm(1)])
    spool.close()
    # The write fails, and so do the rollback check and the rereading after it: all of
    # it surfaces as one SpoolError naming the file, never a raw sqlite3 error.
    for call in (
        lambda: spool.add_events([alarm(2)]),
        lambda: spool.add_readings([reading(3)]),
        lambda: spool.sent(SealedBatch(Channel.EVENTS, 0, b"", 1)),
        lambda: spool.acknowledge(spool.spool_epoch, [0]),
        lambda: spool.sent_unacked,
        spool.take_nowait,
        spool.size_bytes,
        lambda: spool.oldest_unsent_age_s,
    ):
        with pytest.raises(SpoolError) as raised:
            call()
        assert raised.value.path == path
        assert str(path) in str(raised.value)


def test_a_failing_seq_source_never_escapes_and_the_gap_is_reported_later(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    broken = True

    def seq_source(device: str) -> int:
        if broken:
            raise KeyError(device)
        return 500

    with Spool(
        path, GATEWAY, COMMUNITY, budget_bytes=64 * 1024, max_batch_items=50, seq_source=seq_source
    ) as spool:
        # Past the budget, sealing the gap report claims a seq and fails: the readings
        # were committed, so the add returns; the drop is rolled back and tried again.
        for start in range(1, 3001, 50):
            spool.add_readings([reading(seq) for seq in range(start, start + 50)])
        assert spool.pending_readings + spool.depth[Channel.TELEMETRY] > 0
        with pytest.raises(SpoolError, match="KeyError") as raised:
            spool._enforce_budget()
        assert raised.value.path == path
        assert spool.dropped_readings == 0
        broken = False
        spool.add_readings([reading(3001)])
        assert spool.dropped_readings > 0
        gaps = gap_events(drain(spool))
    assert [(gap.device, gap.seq) for gap in gaps] == [("sd-1", 500)]
    assert gaps[0].data.count == spool.dropped_readings


def test_a_device_the_seq_source_does_not_know_is_numbered_by_the_spool(tmp_path: Path) -> None:
    def seq_source(device: str) -> int | None:
        return 900 if device == "sd-1" else None  # "gone" is no longer configured

    with Spool(
        tmp_path / "spool.db",
        GATEWAY,
        COMMUNITY,
        budget_bytes=BUDGET,
        max_batch_items=50,
        seq_source=seq_source,
    ) as spool:
        spool.add_readings([reading(seq, "gone") for seq in range(1, 1501)])
        spool.budget_bytes = 64 * 1024
        for start in range(1, 1501, 50):
            spool.add_readings([reading(seq, "sd-1") for seq in range(start, start + 50)])
        gaps = gap_events(drain(spool))
    gone = [gap.seq for gap in gaps if gap.device == "gone"]
    # Numbered on from the last seq stored for it: its last reading was 1500.
    assert gone == list(range(1501, 1501 + len(gone)))
    assert gone
    assert {gap.seq for gap in gaps if gap.device == "sd-1"} <= {900}


def test_events_past_the_budget_do_not_flood_it_with_gap_reports(tmp_path: Path) -> None:
    clock = Clock()
    budget = 128 * 1024
    with Spool(
        tmp_path / "spool.db",
        GATEWAY,
        COMMUNITY,
        budget_bytes=budget,
        max_batch_items=20,
        linger_s=60,
        clock=clock,
    ) as spool:
        for start in range(0, 2000, 100):
            spool.add_events([alarm(seq, "sd-9") for seq in range(start, start + 100)])
        assert spool.size_bytes() > budget  # events alone are past the budget
        alarm_batches = spool.depth[Channel.EVENTS]
        added = 0
        for start in range(1, 2001, 40):
            spool.add_readings(
                [reading(seq, f"sd-{1 + seq % 2}") for seq in range(start, start + 40)]
            )
            added += 40
        # Every reading had to go, but the gap reports did not pile up: at most the
        # first report per device, the rest accumulating in the open gap.
        assert spool.dropped_readings == added
        assert spool.depth[Channel.EVENTS] <= alarm_batches + 1
        clock.now += 60
        spool.add_readings([reading(5000, "sd-1")])
        assert spool.depth[Channel.EVENTS] <= alarm_batches + 2
        gaps = gap_events(drain(spool))
    assert {gap.device for gap in gaps} == {"sd-1", "sd-2"}
    assert len(gaps) <= 4
    assert sum(gap.data.count or 0 for gap in gaps) == spool.dropped_readings


def test_the_file_and_its_wal_are_private(tmp_path: Path) -> None:
    state = tmp_path / "state" / "gw"
    path = state / "spool.db"
    with open_spool(path) as spool:
        spool.add_events([alarm(1)])
        assert state.stat().st_mode & 0o777 == 0o700
        for suffix in ("", "-wal", "-shm"):
            name = path.with_name(path.name + suffix)
            assert name.exists()
            assert name.stat().st_mode & 0o777 == 0o600, name
    path.chmod(0o644)  # a file from an older agent is tightened at open
    open_spool(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
