"""A failing spool must not take the agent down: events are held, readings counted.

A real Agent on a simulated smoke detector, not run: its ``_accept`` and
``_emit_local`` (what the pollers and the fire linkage call) are driven directly, and
the spool is broken for real by closing its SQLite connection.
"""

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import edge.app
from edge.app import Agent
from edge.config import parse_config
from edge.spool import Spool
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.profile import load_profiles
from schemas.topics import Channel
from schemas.vocabulary import EventType, Metric, Severity
from schemas.wire import Event, EventBatch, Reading, TelemetryBatch, decode

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
DEVICE = "b3-smoke"
NOW = datetime(2026, 11, 28, tzinfo=UTC)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with ModbusSimServer({1: SmokeDetector()}) as sim:
        config = {
            "gateway": "gw-spool-errors",
            "community": "xijin/fenghuang",
            "broker": "mqtt://127.0.0.1:1",
            "state_dir": str(tmp_path / "state"),
            "devices": [{"id": DEVICE, "profile": "anju-smoke-mb", "address": sim.url_for(1)}],
        }
        agent = Agent(parse_config(config, "test"), PROFILES)
        try:
            yield agent
        finally:
            agent.spool.close()


def alarm(seq: int, device: str = DEVICE) -> Event:
    return Event(
        device=device, ts=NOW, seq=seq, type=EventType.SMOKE_ALARM, severity=Severity.CRITICAL
    )


def reading(seq: int, device: str = DEVICE) -> Reading:
    return Reading(device=device, ts=NOW, seq=seq, metric=Metric.TEMPERATURE, value=21.0)


def spooled(spool: Spool) -> tuple[list[Event], list[Reading]]:
    spool.flush()
    events: list[Event] = []
    readings: list[Reading] = []
    while (batch := spool.take_nowait()) is not None:
        if batch.channel is Channel.EVENTS:
            events.extend(decode(batch.payload, EventBatch).items)
        else:
            readings.extend(decode(batch.payload, TelemetryBatch).items)
    return events, readings


def reopen(agent: Agent, path: Path) -> Spool:
    """The disk works again: a working spool in place of the broken one."""
    spool = Spool(path, agent.config.gateway, agent.config.community, budget_bytes=2**26)
    agent.spool = spool
    return spool


async def test_a_broken_spool_holds_events_drops_readings_and_recovers(
    agent: Agent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent.spool.close()
    with caplog.at_level(logging.ERROR, logger="edge.app"):
        agent._accept([reading(1), reading(2)], [alarm(3)])
        agent._emit_local([alarm(4, "b3-exit")])
        agent._accept([reading(5)], [])
    assert agent.spool_failures == 5  # the last poll retried the held events too
    assert agent.held_events == 2
    assert agent.readings_dropped_unspooled == 3
    errors = [r for r in caplog.records if r.name == "edge.app" and r.levelno >= logging.ERROR]
    assert len(errors) == 1  # once per episode, naming the file and what failed
    assert str(agent.config.state_dir) in errors[0].getMessage()
    assert "events" in errors[0].getMessage()

    spool = reopen(agent, tmp_path / "again" / "spool.sqlite3")
    agent._accept([reading(6)], [alarm(7)])
    assert agent.held_events == 0
    events, readings = spooled(spool)
    assert [(e.device, e.seq) for e in events] == [(DEVICE, 3), ("b3-exit", 4), (DEVICE, 7)]
    assert [r.seq for r in readings] == [6]
    agent._emit_local([alarm(8)])
    assert agent.spool_failures == 5  # the last poll retried the held events too


async def test_held_events_past_the_bound_are_dropped_loudly(
    agent: Agent, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge.app, "HELD_EVENTS_MAX", 3)
    agent.spool.close()
    with caplog.at_level(logging.ERROR, logger="edge.app"):
        for seq in range(1, 6):
            agent._emit_local([alarm(seq)])
    assert agent.held_events == 3
    assert agent.events_dropped_unspooled == 2
    assert any("dropped the 1 oldest events" in r.getMessage() for r in caplog.records)
    spool = reopen(agent, tmp_path / "again" / "spool.sqlite3")
    agent._accept([], [])  # every poll retries the held events, even an empty one
    events, _ = spooled(spool)
    assert [e.seq for e in events] == [3, 4, 5]


async def test_a_gap_for_a_device_no_longer_configured_does_not_raise(agent: Agent) -> None:
    agent.spool.add_readings([reading(seq, "removed-dev") for seq in range(1, 2001)])
    agent.spool.budget_bytes = 64 * 1024
    for start in range(1, 2001, 100):
        agent._accept([reading(seq) for seq in range(start, start + 100)], [])
    assert agent.spool_failures == 0
    assert agent.spool.dropped_readings > 0
    events, _ = spooled(agent.spool)
    gaps = {e.device: e.seq for e in events if e.type is EventType.TELEMETRY_GAP}
    assert gaps["removed-dev"] > 2000
