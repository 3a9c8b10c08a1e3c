"""The committed JSON Schema files: current with the types, and agreeing with them.

Outside tools read schemas/json/ instead of the Python types, so a stale file or one
that accepts what the types refuse would mislead them.
"""

import inspect
import json
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml
from pydantic import BaseModel

import schemas.profile
import schemas.wire
from schemas.addressing import families
from schemas.generate import (
    JSON_DIR,
    SUFFIX,
    main,
    reflow,
    render_schemas,
    stale_files,
    write_schemas,
)
from schemas.vocabulary import EventType, Metric, Severity
from schemas.wire import Event, EventBatch, EventData, Reading, TelemetryBatch, encode

PROFILE_ROOT = Path(__file__).resolve().parents[2] / "device_profiles"
SHIPPED = sorted(PROFILE_ROOT.glob("*/*.yaml"))
T0 = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)


def _schema(stem: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((JSON_DIR / f"{stem}{SUFFIX}").read_text("utf-8"))
    return schema


def _as_json(path: Path) -> Any:
    """A profile as a JSON tool sees it: YAML's integer keys (labels) become strings."""
    return json.loads(json.dumps(yaml.safe_load(path.read_text(encoding="utf-8"))))


def _validator(stem: str) -> jsonschema.protocols.Validator:
    schema = _schema(stem)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def test_committed_files_match_the_types() -> None:
    rendered = render_schemas()
    committed = {p.name: p.read_text(encoding="utf-8") for p in JSON_DIR.glob(f"*{SUFFIX}")}
    stale = sorted(
        name
        for name in rendered.keys() | committed.keys()
        if rendered.get(name) != committed.get(name)
    )
    assert not stale, (
        f"schemas/json is out of date ({', '.join(stale)}): "
        "run `python -m schemas.generate` and commit the result"
    )


def test_rendering_is_deterministic_and_tidy() -> None:
    first, second = render_schemas(), render_schemas()
    assert first == second
    for name, text in first.items():
        document = json.loads(text)
        assert text == json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert document["$id"] == f"urn:anju:schemas:{name.removesuffix(SUFFIX)}"
        assert document["title"].startswith("Anju ")


def _documented_types() -> list[type]:
    """Every struct and model whose docstring becomes a description in a schema file."""
    addressing = {sys.modules[family.point.__module__] for family in families()}
    return [
        value
        for module in (schemas.wire, schemas.profile, *addressing)
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct | BaseModel)
        and value.__module__ == module.__name__
        and value.__doc__
    ]


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda doc: inspect.cleandoc(doc), id="indentation removed"),
        pytest.param(
            lambda doc: textwrap.indent(inspect.cleandoc(doc), " " * 8).lstrip(),
            id="indented deeper",
        ),
        pytest.param(
            lambda doc: "\n\n    ".join(
                textwrap.fill(part, 30, break_long_words=False, break_on_hyphens=False)
                for part in inspect.cleandoc(doc).split("\n\n")
            ),
            id="wrapped narrow and indented",
        ),
    ],
)
def test_rendering_ignores_docstring_whitespace(
    monkeypatch: pytest.MonkeyPatch, rewrite: Any
) -> None:
    """Libraries tidy docstrings differently (msgspec 0.23 dedents them, 0.22 did not)."""
    before = render_schemas()
    documented = _documented_types()
    assert len(documented) > 10
    for cls in documented:
        monkeypatch.setattr(cls, "__doc__", rewrite(cls.__doc__))
    assert render_schemas() == before


def test_reflow_keeps_paragraphs_and_words() -> None:
    text = "First line\n    goes on.\n  \n\tSecond   paragraph\n\n\n"
    assert reflow(text) == "First line goes on.\n\nSecond paragraph"


def test_check_reports_stale_and_leftover_files(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    assert sorted(written) == sorted(render_schemas())
    assert stale_files(tmp_path) == []

    (tmp_path / "status.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "retired.schema.json").write_text("{}\n", encoding="utf-8")
    assert stale_files(tmp_path) == ["retired.schema.json", "status.schema.json"]

    assert write_schemas(tmp_path) == ["retired.schema.json", "status.schema.json"]
    assert not (tmp_path / "retired.schema.json").exists()
    assert stale_files(tmp_path) == []


def test_check_command_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_profiles_validate_against_the_json_schema(path: Path) -> None:
    _validator("device_profile").validate(_as_json(path))


def test_broken_profile_fails_the_json_schema() -> None:
    document = _as_json(PROFILE_ROOT / "door" / "anju-door-mb.yaml")
    document["points"][0]["modbus"]["table"] = "register"
    document["events"][0]["type"] = "door.opened"
    document["colour"] = "red"

    errors = list(_validator("device_profile").iter_errors(document))

    messages = " | ".join(error.message for error in errors)
    assert "'colour' was unexpected" in messages
    assert any("points" in error.absolute_path for error in errors)
    assert any("events" in error.absolute_path for error in errors)


def test_encoded_telemetry_batch_validates() -> None:
    batch = TelemetryBatch(
        gateway="gw-01",
        community="xijin/fenghuang",
        spool_epoch="0123456789abcdef",
        batch_seq=0,
        sent_at=T0,
        items=[
            Reading(device=f"smoke-{n}", ts=T0, seq=n, metric=Metric.CO, value=n / 2)
            for n in range(3)
        ],
    )
    _validator("telemetry_batch").validate(json.loads(encode(batch)))


def test_encoded_event_batch_validates() -> None:
    batch = EventBatch(
        gateway="gw-01",
        community="xijin/fenghuang",
        spool_epoch="0123456789abcdef",
        batch_seq=5,
        sent_at=T0,
        items=[
            Event(
                device="cam-gate",
                ts=T0,
                seq=1,
                type=EventType.CAMERA_INTRUSION,
                severity=Severity.WARNING,
                data=EventData(zone="Z1", channel=1),
            ),
            Event(
                device="band-0042",
                ts=T0,
                seq=2,
                type=EventType.WEARABLE_FALL,
                severity=Severity.CRITICAL,
            ),
        ],
    )
    _validator("event_batch").validate(json.loads(encode(batch)))


def test_wire_schema_rejects_what_decode_rejects() -> None:
    validator = _validator("telemetry_batch")
    payload = {
        "schema_version": 1,
        "gateway": "GW",
        "community": "xijin/fenghuang",
        "spool_epoch": "0123456789abcdef",
        "batch_seq": -1,
        "sent_at": "2024-05-01T08:30:00Z",
        "items": [],
    }
    failing = {error.absolute_path[0] for error in validator.iter_errors(payload)}
    assert failing == {"schema_version", "gateway", "batch_seq", "items"}
