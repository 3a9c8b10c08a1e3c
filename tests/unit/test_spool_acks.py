"""The spool's sent state: a PUBACK only marks a batch sent, the cloud's acknowledgement
deletes it, a sent batch goes again after the ack timeout with backoff, and all of it
survives a restart; a format 1 file is upgraded in place."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from edge.spool import SealedBatch, Spool, SpoolError
from schemas import SCHEMA_VERSION
from schemas.topics import Channel
from schemas.vocabulary import EventType
from schemas.wire import EventBatch, TelemetryBatch, decode, encode
from tests.unit.test_spool import BUDGET, COMMUNITY, GATEWAY, Clock, alarm, drain, reading

TIMEOUT_S, CAP_S = 30.0, 100.0


def open_spool(path: Path, wall: Clock, **options: object) -> Spool:
    return Spool(
        path,
        GATEWAY,
        COMMUNITY,
        budget_bytes=BUDGET,
        ack_timeout_s=TIMEOUT_S,
        ack_timeout_cap_s=CAP_S,
        wall_clock=wall,
        **options,  # type: ignore[arg-type]
    )


def take(spool: Spool) -> SealedBatch:
    batch = spool.take_nowait()
    assert batch is not None
    return batch


def test_a_puback_keeps_the_batch_until_the_cloud_acknowledges_it(tmp_path: Path) -> None:
    wall = Clock()
    with open_spool(tmp_path / "spool.db", wall) as spool:
        spool.add_events([alarm(1)])
        batch = take(spool)
        spool.sent(batch)
        assert spool.depth[Channel.EVENTS] == 1
        assert spool.sent_unacked == {Channel.EVENTS: 1, Channel.TELEMETRY: 0}
        assert not spool.empty
        assert spool.oldest_unsent_age_s is not None
        # A reconnect does not resend it: the cloud may be committing it right now.
        spool.rewind()
        assert spool.take_nowait() is None
        assert spool.acknowledge(spool.spool_epoch, [batch.batch_seq]) == [batch.batch_seq]
        assert spool.empty
        assert spool.sent_unacked == {Channel.EVENTS: 0, Channel.TELEMETRY: 0}
        # The cloud acknowledges a deduplicated resend again: nothing left to delete.
        assert spool.acknowledge(spool.spool_epoch, [batch.batch_seq]) == []


def test_an_acknowledgement_of_another_epoch_deletes_nothing(tmp_path: Path) -> None:
    with open_spool(tmp_path / "spool.db", Clock()) as spool:
        spool.add_events([alarm(1)])
        batch = take(spool)
        spool.sent(batch)
        assert spool.acknowledge("0" * 16, [batch.batch_seq]) == []
        assert spool.depth[Channel.EVENTS] == 1


def test_a_sent_batch_goes_again_byte_for_byte_with_backoff_to_the_cap(tmp_path: Path) -> None:
    wall = Clock()
    with open_spool(tmp_path / "spool.db", wall) as spool:
        spool.add_events([alarm(1)])
        first = take(spool)
        assert first.attempts == 0
        waits = []
        batch = first
        for _ in range(5):
            spool.sent(batch)
            sent_at = wall.now
            while (again := spool.take_nowait()) is None:
                wall.now += 1
            waits.append(wall.now - sent_at)
            assert (again.payload, again.batch_seq, again.channel) == (
                first.payload,
                first.batch_seq,
                first.channel,
            )
            assert again.attempts == batch.attempts + 1
            # Handed out once: not again while it is in flight, even though it is due.
            assert spool.take_nowait() is None
            batch = again
    assert waits == [30, 60, 100, 100, 100]


def test_due_resends_go_before_unsent_batches_and_events_before_telemetry(
    tmp_path: Path,
) -> None:
    wall = Clock()
    with open_spool(tmp_path / "spool.db", wall, max_batch_items=1) as spool:
        spool.add_readings([reading(1)])
        spool.add_events([alarm(2)])
        old_event, old_reading = take(spool), take(spool)
        assert (old_event.channel, old_reading.channel) == (Channel.EVENTS, Channel.TELEMETRY)
        spool.sent(old_reading)
        spool.sent(old_event)
        wall.now += TIMEOUT_S
        spool.add_readings([reading(3)])
        spool.add_events([alarm(4)])
        order = [take(spool) for _ in range(4)]
        assert spool.take_nowait() is None
    assert [(b.channel, b.attempts) for b in order] == [
        (Channel.EVENTS, 1),
        (Channel.EVENTS, 0),
        (Channel.TELEMETRY, 1),
        (Channel.TELEMETRY, 0),
    ]
    assert [order[0].payload, order[2].payload] == [old_event.payload, old_reading.payload]


async def test_take_wakes_when_a_sent_batch_falls_due(tmp_path: Path) -> None:
    with Spool(
        tmp_path / "spool.db",
        GATEWAY,
        COMMUNITY,
        budget_bytes=BUDGET,
        ack_timeout_s=0.2,
        ack_timeout_cap_s=0.2,
    ) as spool:
        spool.add_events([alarm(1)])
        batch = take(spool)
        spool.sent(batch)
        loop = asyncio.get_running_loop()
        started = loop.time()
        again = await asyncio.wait_for(spool.take(max_wait_s=5), timeout=2)
        assert 0.15 <= loop.time() - started < 1.0
        assert again.payload == batch.payload


def test_a_restart_keeps_the_sent_state_and_unsent_batches_go_at_once(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    wall = Clock()
    with open_spool(path, wall) as spool:
        for seq in range(1, 4):
            spool.add_events([alarm(seq)])
        sent, resent, in_flight = take(spool), take(spool), take(spool)
        spool.sent(sent)
        spool.sent(resent)
        wall.now += TIMEOUT_S
        assert take(spool).batch_seq == sent.batch_seq  # due: handed out again
        spool.sent(sent)  # its second PUBACK: due again in 60 s
        acked = resent.batch_seq  # due too, but the cloud's acknowledgement came first
        assert spool.acknowledge(spool.spool_epoch, [acked]) == [acked]
    with open_spool(path, wall) as spool:
        assert spool.depth[Channel.EVENTS] == 2
        assert spool.sent_unacked[Channel.EVENTS] == 1
        # Handed out but never PUBACKed before the restart: at once.
        assert take(spool).batch_seq == in_flight.batch_seq
        assert spool.take_nowait() is None
        wall.now += 2 * TIMEOUT_S - 1
        assert spool.take_nowait() is None
        wall.now += 1
        again = take(spool)
        assert (again.batch_seq, again.attempts, again.payload) == (
            sent.batch_seq,
            2,
            sent.payload,
        )


def test_the_budget_counts_sent_batches_and_never_drops_them(tmp_path: Path) -> None:
    """A sent batch was most likely stored (its acknowledgement lost in an outage):
    dropping it would report a gap that is not one. Unsent telemetry goes instead."""
    wall = Clock()
    with open_spool(tmp_path / "spool.db", wall, max_batch_items=100) as spool:
        spool.add_events([alarm(0, "sd-9")])
        for start in range(1, 5_001, 100):
            spool.add_readings([reading(seq) for seq in range(start, start + 100)])
        handed = [take(spool) for _ in range(21)]  # the alarm and 20 telemetry batches
        for batch in handed[:-1]:
            spool.sent(batch)
        in_flight = handed[-1]  # handed out, not PUBACKed yet
        assert spool.sent_unacked == {Channel.EVENTS: 1, Channel.TELEMETRY: 19}
        spool.budget_bytes = spool.size_bytes() // 2
        spool.add_readings([reading(5_001)])
        dropped = spool.dropped_readings
        assert dropped > 0
        assert spool.sent_unacked == {Channel.EVENTS: 1, Channel.TELEMETRY: 19}
        # Past the budget with only sent and in-flight batches left: nothing can go.
        spool.budget_bytes = 1
        spool.add_readings([reading(5_002)])
        assert spool.depth[Channel.TELEMETRY] == 20
        spool.budget_bytes = BUDGET
        spool.add_readings([reading(5_003)])  # the budget is met: the gap is reported
        spool.sent(in_flight)
        spool.rewind()
        wall.now += CAP_S
        kept = drain(spool)
    telemetry = {b.payload for b in kept if b.channel is Channel.TELEMETRY}
    assert {b.payload for b in handed[1:]} <= telemetry, "sent and in flight: all kept"
    readings = sorted(
        r.seq
        for b in kept
        if b.channel is Channel.TELEMETRY
        for r in decode(b.payload, TelemetryBatch).items
    )
    assert readings[:2_000] == list(range(1, 2_001)), "the sent ones, oldest, kept"
    assert len(readings) + spool.dropped_readings == 5_003
    gaps = [
        event
        for b in kept
        if b.channel is Channel.EVENTS
        for event in decode(b.payload, EventBatch).items
        if event.type is EventType.TELEMETRY_GAP
    ]
    assert sum(gap.data.count or 0 for gap in gaps) == spool.dropped_readings


_FORMAT_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE device_seq (device TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE pending (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, appended REAL NOT NULL, body BLOB NOT NULL
);
CREATE TABLE sealed (
    batch_seq INTEGER PRIMARY KEY,
    lane TEXT NOT NULL,
    items INTEGER NOT NULL,
    appended REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX sealed_lane ON sealed (lane, batch_seq);
"""
"""The layout of a spool written by an agent before format 2 (no gap table: older still)."""


def test_a_format_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    # A format 2 spool's batches, written back into a format 1 file as that agent
    # sealed them: schema_version 1.
    source = tmp_path / "source.db"
    with open_spool(source, Clock(), max_batch_items=2) as spool:
        epoch = spool.spool_epoch
        spool.add_readings([reading(1), reading(2), reading(3)])
        spool.add_events([alarm(4)])
        originals = [take(spool), take(spool)]
    current = f'{{"schema_version":{SCHEMA_VERSION},'.encode()
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)
    db.executescript(_FORMAT_1)
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [
            ("format", "1"),
            ("gateway", GATEWAY),
            ("spool_epoch", epoch),
            ("next_batch_seq", "2"),
            ("dropped_readings", "0"),
        ],
    )
    db.executemany(
        "INSERT INTO sealed VALUES (?, ?, ?, ?, ?)",
        [
            (
                batch.batch_seq,
                str(batch.channel),
                batch.items,
                1.0,
                b'{"schema_version":1,' + batch.payload.removeprefix(current),
            )
            for batch in originals
        ],
    )
    db.execute("INSERT INTO pending VALUES (1, 'sd-1', 1.0, ?)", (encode(reading(3)),))
    db.execute("INSERT INTO device_seq VALUES ('sd-1', 4)")
    db.commit()
    db.close()
    wall = Clock()
    with open_spool(path, wall) as spool:
        assert spool.spool_epoch == epoch
        assert spool.depth == {Channel.EVENTS: 1, Channel.TELEMETRY: 1}
        assert spool.sent_unacked == {Channel.EVENTS: 0, Channel.TELEMETRY: 0}
        upgraded = [take(spool), take(spool)]
        # Restamped as this version, and otherwise the bytes the old agent sealed.
        assert sorted(b.payload for b in upgraded) == sorted(b.payload for b in originals)
        assert all(isinstance(b.payload, bytes) for b in upgraded)
        assert decode(upgraded[0].payload, EventBatch).items == [alarm(4)]
        for batch in upgraded:
            spool.sent(batch)
        assert spool.sent_unacked == {Channel.EVENTS: 1, Channel.TELEMETRY: 1}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() == ("2",)
    db.close()
    with open_spool(path, wall) as spool:  # opened again: format 2, state kept
        assert spool.sent_unacked == {Channel.EVENTS: 1, Channel.TELEMETRY: 1}
        wall.now += TIMEOUT_S
        rest = drain(spool)
    assert [r.seq for r in decode(rest[-1].payload, TelemetryBatch).items] == [3]


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    open_spool(path, Clock()).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '3' WHERE key = 'format'")
    db.close()
    with pytest.raises(SpoolError, match="spool format '3', this agent reads 1 and 2"):
        open_spool(path, Clock())


def test_the_ack_timeout_must_be_positive_and_within_its_cap(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ack_timeout_s"):
        Spool(tmp_path / "s.db", GATEWAY, COMMUNITY, budget_bytes=BUDGET, ack_timeout_s=0)
    with pytest.raises(ValueError, match="ack_timeout_s"):
        Spool(
            tmp_path / "s.db",
            GATEWAY,
            COMMUNITY,
            budget_bytes=BUDGET,
            ack_timeout_s=60,
            ack_timeout_cap_s=30,
        )
