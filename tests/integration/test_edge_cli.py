"""``anju edge run`` as an installer starts it: a separate process, a config file, signals."""

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import EventType
from schemas.wire import EventBatch, GatewayState, Status, decode

ANJU = [sys.executable, "-m", "anju.cli"]


async def test_agent_process_reports_alarm_and_says_offline_on_sigterm(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    community = "xijin/fenghuang"
    broker = parse_broker_url(mqtt_url)
    detector = SmokeDetector()
    async with ModbusSimServer({1: detector}) as sim:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            f"gateway: {gateway}\ncommunity: {community}\nbroker: {mqtt_url}\n"
            f"state_dir: {tmp_path / 'state'}\n"
            f"devices:\n  - id: fh-b3-smoke-01\n    profile: anju-smoke-mb\n"
            f"    address: {sim.url_for(1)}\n"
        )
        async with aiomqtt.Client(broker.host, broker.port) as observer:
            await observer.subscribe(topic_for(community, gateway, Channel.EVENTS), qos=1)
            await observer.subscribe(topic_for(community, gateway, Channel.STATUS), qos=1)
            agent = await asyncio.create_subprocess_exec(
                *ANJU, "edge", "run", "--config", str(config),
                env={**os.environ, "COLUMNS": "200"},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            try:
                states: list[GatewayState] = []
                alarms = 0
                async with asyncio.timeout(30):
                    async for message in observer.messages:
                        assert isinstance(message.payload, bytes)
                        payload = message.payload
                        if message.topic.matches(topic_for(community, gateway, Channel.STATUS)):
                            states.append(decode(payload, Status).state)
                            if states == [GatewayState.ONLINE]:
                                detector.trigger_alarm()
                            if GatewayState.OFFLINE in states:
                                break
                            continue
                        batch = decode(payload, EventBatch)
                        alarms += sum(e.type is EventType.SMOKE_ALARM for e in batch.items)
                        agent.send_signal(signal.SIGTERM)
                exit_code = await asyncio.wait_for(agent.wait(), timeout=15)
            finally:
                if agent.returncode is None:
                    agent.kill()
                    await agent.wait()
    output = (await agent.stdout.read()).decode() if agent.stdout else ""
    assert (alarms, states, exit_code) == (1, [GatewayState.ONLINE, GatewayState.OFFLINE], 0), (
        output
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("gateway: gw-1\ncommunity: fenghuang\n", "community"),
        (
            "gateway: gw-1\ncommunity: a/b\ndevices:\n  - id: d1\n    profile: nope\n"
            "    address: modbus-tcp://127.0.0.1:1502\n",
            "no profile 'nope'",
        ),
    ],
)
async def test_bad_config_is_refused_with_file_and_key(
    tmp_path: Path, config: str, message: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config)
    process = await asyncio.create_subprocess_exec(
        *ANJU, "edge", "run", "--config", str(path),
        env={**os.environ, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert str(path) in stderr.decode()
    assert message in stderr.decode()
