"""The config pusher's pure parts: command ids, the command, and what answers mean.

(Proposed as tests/unit/test_config_commands.py; Part E owns no unit test file.)
"""

from datetime import UTC, datetime, timedelta

import pytest

from cloud.configs.commands import (
    ConfigPush,
    Verdict,
    apply_config,
    command_id,
    document_problem,
    read_answer,
    requested_version,
)
from schemas.errors import WireError
from schemas.wire import (
    Command,
    CommandName,
    CommandResult,
    GatewayConfigDocument,
    PushedDevice,
    decode,
    encode,
)

AT = datetime(2026, 12, 3, 22, 0, 0, 123456, tzinfo=UTC)
GATEWAY, COMMUNITY = "gw-01", "xijin/fenghuang"


def _push(version: int = 4, document: GatewayConfigDocument | None = None) -> ConfigPush:
    doc = document or GatewayConfigDocument(
        gateway=GATEWAY,
        version=version,
        devices=[PushedDevice(id="d1", profile="anju-smoke-mb", address="modbus-tcp://h?unit=1")],
    )
    return ConfigPush(GATEWAY, COMMUNITY, version, encode(doc).decode(), AT)


def _result(ok: bool, **data: str | int | bool) -> bytes:
    ident = command_id(4, AT)
    return encode(
        CommandResult(id=ident, gateway=GATEWAY, ok=ok, detail="x", data=data, finished_at=AT)
    )


def test_an_id_carries_its_version_and_the_push_time() -> None:
    assert command_id(4, AT) == "cfg-4-1796335200123"
    assert requested_version(command_id(4, AT)) == 4
    for other in ("unlock-1", "cfg-0-1", "cfg-4", "cfg-x-1", "cfg-4-1-2"):
        assert requested_version(other) is None


def test_the_command_is_apply_config_on_the_gateways_cmd_topic() -> None:
    topic, payload = apply_config(_push(), lifetime_s=300)
    command = decode(payload, Command)
    assert topic == f"anju/v1/{COMMUNITY}/{GATEWAY}/cmd/{command.id}"
    assert command.name is CommandName.APPLY_CONFIG
    assert command.args["version"] == 4
    assert decode(str(command.args["document"]).encode(), GatewayConfigDocument).version == 4
    assert command.expires_at - command.issued_at == timedelta(seconds=300)


def test_a_stored_document_that_is_not_the_version_it_claims_is_not_sent() -> None:
    assert document_problem(_push()) is None
    other = GatewayConfigDocument(gateway="gw-02", version=4)
    assert "gw-02" in (document_problem(_push(document=other)) or "")
    assert "not a valid document" in (
        document_problem(ConfigPush(GATEWAY, COMMUNITY, 4, "{}", AT)) or ""
    )


@pytest.mark.parametrize(
    ("ok", "data", "verdict", "running"),
    [
        (True, {"version": 4, "requested": 4, "applied": True}, Verdict.APPLIED, 4),
        (True, {"version": 6, "requested": 4, "applied": False}, Verdict.APPLIED, 6),
        (False, {"version": 3, "requested": 4, "invalid": True}, Verdict.REFUSED, 3),
        (False, {}, Verdict.FAILED, 4),
    ],
)
def test_only_an_invalid_refusal_stops_the_version(
    ok: bool, data: dict[str, int | bool], verdict: Verdict, running: int
) -> None:
    ident = command_id(4, AT)
    answer = read_answer(COMMUNITY, GATEWAY, ident, _result(ok, **data), topic="t")
    assert answer is not None
    assert (answer.verdict, answer.requested, answer.running) == (verdict, 4, running)


def test_other_commands_results_are_not_ours_and_lies_are_refused() -> None:
    assert read_answer(COMMUNITY, GATEWAY, "unlock-7", b"not json", topic="t") is None
    with pytest.raises(WireError):
        read_answer(COMMUNITY, "gw-02", command_id(4, AT), _result(True), topic="t")
