"""The cloud's ``ANJU_*`` settings: every mistake reported at once, typos caught, keys
parsed without ever showing them, and the environment given is the only one read."""

from __future__ import annotations

import base64
import os

import pytest

from cloud.errors import SettingsError
from cloud.settings import (
    STANDARD_WEBHOOKS_RETRY_SCHEDULE_S,
    ApiSettings,
    CloudSettings,
    IngestSettings,
    QueueSettings,
    ResidentSettings,
    StorageSettings,
    WebhookSettings,
    load_settings,
)

DB = {"ANJU_DATABASE_URL": "postgresql://anju@127.0.0.1/anju"}
KEY_A = os.urandom(32)
KEY_B = os.urandom(32)


def _error(env: dict[str, str], *, require_mqtt: bool = False) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        load_settings(env, require_mqtt=require_mqtt)
    return caught.value


def test_every_mistake_in_one_environment_is_reported_at_once() -> None:
    error = _error(
        {
            **DB,
            "ANJU_API_PORT": "eighty",
            "ANJU_API_AUTH_FAILURE_LIMIT": "0",
            "ANJU_INGEST_GROUP": "no spaces",
            "ANJU_STORAGE_ROLLUP_RETENTION_DAYS": "30",
            "ANJU_WEBHOOK_RETRY_SCHEDULE_S": "5,soon",
            "ANJU_QUEUE_POLL_INTERVAL_S": "120",
            "ANJU_RESIDENT_KEYS": "k1:short",
        },
        require_mqtt=True,
    )

    variables = [problem.variable for problem in error.problems]
    expected = [
        "ANJU_MQTT_URL",
        "ANJU_API_PORT",
        "ANJU_API_AUTH_FAILURE_LIMIT",
        "ANJU_INGEST_GROUP",
        "ANJU_STORAGE_ROLLUP_RETENTION_DAYS",
        "ANJU_WEBHOOK_RETRY_SCHEDULE_S",
        "ANJU_QUEUE_POLL_INTERVAL_S",
        "ANJU_RESIDENT_KEYS",
    ]
    assert sorted(variables) == sorted(expected)
    lines = str(error).splitlines()
    assert len(lines) == len(expected)
    for variable in expected:
        (line,) = [line for line in lines if line.startswith(f"{variable}: ")]
        assert "; expected " in line
    assert "'eighty' is not valid" in str(error)
    assert "'5,soon' is not valid (item 2:" in str(error)


def test_contradictions_within_a_subsystem_are_all_reported() -> None:
    error = _error(
        {
            **DB,
            "ANJU_QUEUE_P1_UNACKNOWLEDGED_S": "30",
            "ANJU_QUEUE_P2_UNCLAIMED_S": "10",
            "ANJU_STORAGE_RETENTION_DAYS": "1",
            "ANJU_STORAGE_LATE_WINDOW_H": "13",
            "ANJU_STORAGE_ROLLUP_RETENTION_DAYS": "1",
        }
    )
    assert {problem.variable for problem in error.problems} == {
        "ANJU_QUEUE_P1_UNACKNOWLEDGED_S",
        "ANJU_QUEUE_P2_UNCLAIMED_S",
        "ANJU_STORAGE_LATE_WINDOW_H",
    }


def test_a_misspelt_variable_is_reported_with_the_setting_it_resembles() -> None:
    error = _error({**DB, "ANJU_QUEUE_P1_UNCLAIMD_S": "30", "ANJU_RESIDENT_KEY": "x"})

    assert [problem.variable for problem in error.problems] == [
        "ANJU_QUEUE_P1_UNCLAIMD_S",
        "ANJU_RESIDENT_KEY",
    ]
    assert "ANJU_QUEUE_P1_UNCLAIMED_S" in error.problems[0].problem
    assert "ANJU_RESIDENT_KEYS" in error.problems[1].problem


def test_variables_that_resemble_no_setting_are_left_alone() -> None:
    settings = load_settings(
        {
            **DB,
            "ANJU_PROFILE_DIR": "/srv/profiles",
            "ANJU_RULES_FILE": "/etc/anju/rules.yaml",
            "ANJU_API_KEY": "anju_k7xkqfz1_read-by-examples/webhook_receiver.py",
            "ANJU_QUEUE_P1_UNCLAIMD_S": "",
        },
        require_mqtt=False,
    )
    assert settings.queue.p1_unclaimed_s == 60


def test_defaults_are_unchanged() -> None:
    settings = load_settings(DB, require_mqtt=False)

    assert settings.mqtt is None
    assert settings.api == ApiSettings(
        host="127.0.0.1", port=8080, auth_failure_limit=20, auth_failure_window_s=60
    )
    assert (settings.ingest.group, settings.ingest.session_expiry_s) == ("anju-ingest", 604800)
    assert settings.ingest.client_id.startswith("anju-ingest-")
    assert (settings.ingest.receive_maximum, settings.ingest.group_max_readings) == (2000, 100_000)
    storage = settings.storage
    assert (storage.backend, storage.retention_days, storage.rollup_retention_days) == (
        "auto",
        90,
        730,
    )
    assert (storage.late_window_h, storage.chunk_interval_h) == (48, None)
    webhooks = settings.webhooks
    assert webhooks.retry_schedule_s == STANDARD_WEBHOOKS_RETRY_SCHEDULE_S
    assert (webhooks.timeout_s, webhooks.allow_private, webhooks.allowed_networks) == (
        15,
        False,
        (),
    )
    assert (webhooks.jitter, webhooks.batch_size, webhooks.max_attempts) == (0.1, 20, 10)
    queue = settings.queue
    assert [(queue.unclaimed_s(p), queue.unacknowledged_s(p)) for p in (1, 2, 3)] == [
        (60, 180),
        (120, 300),
        (300, 900),
    ]
    assert (queue.repeat_s, queue.poll_interval_s, queue.batch_size) == (60, 1, 100)
    assert settings.residents.keys == ()
    assert settings.residents.current is None


def test_api_settings_come_from_their_variables() -> None:
    env = {
        **DB,
        "ANJU_API_HOST": "0.0.0.0",
        "ANJU_API_PORT": "9090",
        "ANJU_API_AUTH_FAILURE_LIMIT": "5",
        "ANJU_API_AUTH_FAILURE_WINDOW_S": "0.5",
    }
    assert load_settings(env, require_mqtt=False).api == ApiSettings(
        host="0.0.0.0", port=9090, auth_failure_limit=5, auth_failure_window_s=0.5
    )
    error = _error({**DB, "ANJU_API_AUTH_FAILURE_WINDOW_S": "0"})
    assert error.variable == "ANJU_API_AUTH_FAILURE_WINDOW_S"


def test_a_given_environment_is_the_only_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANJU_API_PORT", "1234")
    monkeypatch.setenv("ANJU_QUEUE_REPEAT_S", "soon")
    monkeypatch.setenv("ANJU_WEBHOOK_RETRY_SCHEDULE_S", "1, 2")

    assert load_settings(DB, require_mqtt=False).api.port == 8080
    assert CloudSettings(database_url=DB["ANJU_DATABASE_URL"]).api.port == 8080
    monkeypatch.delenv("ANJU_QUEUE_REPEAT_S")
    monkeypatch.setenv("ANJU_DATABASE_URL", DB["ANJU_DATABASE_URL"])
    from_process = load_settings(require_mqtt=False)
    assert (from_process.api.port, from_process.webhooks.retry_schedule_s) == (1234, (1, 2))
    # Each model is a pydantic-settings model of its own prefix, lists included.
    assert ApiSettings().port == 1234
    assert WebhookSettings().retry_schedule_s == (1, 2)


def _entry(key_id: str, secret: bytes, *, url_safe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if url_safe else base64.b64encode
    text = encode(secret).decode("ascii")
    return f"{key_id}:{text.rstrip('=') if url_safe else text}"


def test_resident_keys_are_read_current_first() -> None:
    keys = f"{_entry('k2026', KEY_A)}, {_entry('k2025.old', KEY_B, url_safe=True)}"
    residents = load_settings({**DB, "ANJU_RESIDENT_KEYS": keys}, require_mqtt=False).residents

    assert [key.id for key in residents.keys] == ["k2026", "k2025.old"]
    assert [key.secret.get_secret_value() for key in residents.keys] == [KEY_A, KEY_B]
    assert residents.current is not None
    assert residents.current.id == "k2026"
    shown = repr(residents) + str(residents)
    assert all(part not in shown for part in (keys, str(KEY_A), keys.split(":")[1][:16]))


@pytest.mark.parametrize("value", ["", " ", ","])
def test_no_resident_keys_is_allowed(value: str) -> None:
    residents = load_settings({**DB, "ANJU_RESIDENT_KEYS": value}, require_mqtt=False).residents
    assert (residents.keys, residents.current) == ((), None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (f"{_entry('k1', KEY_A)},{_entry('k1', KEY_B)}", "key id 'k1' is given twice"),
        (_entry("k1", KEY_A[:16]), "key 'k1' is 16 bytes, not 32"),
        (_entry("k1", KEY_A + b"x"), "key 'k1' is 33 bytes, not 32"),
        ("k1:" + "*" * 43, "key 'k1' is not base64"),
        (base64.b64encode(KEY_A).decode(), "entry 1 does not start with a valid key id"),
        (f"{_entry('ok', KEY_B)},{_entry('-x', KEY_A)}", "entry 2 does not start"),
        (_entry("a" * 33, KEY_A), "entry 1 does not start"),
    ],
)
def test_bad_resident_keys_are_refused_without_showing_them(value: str, problem: str) -> None:
    error = _error({**DB, "ANJU_RESIDENT_KEYS": value})

    assert error.variable == "ANJU_RESIDENT_KEYS"
    assert problem in error.problem
    assert "ID:BASE64" in error.expected
    shown = str(error) + repr(error)
    for part in value.split(","):
        material = part.partition(":")[2] or part
        assert material[:12] not in shown


def test_passwords_in_urls_are_not_shown() -> None:
    error = _error(
        {
            "ANJU_DATABASE_URL": "postgresql://anju:hunter2@db/anju/extra",
            "ANJU_MQTT_URL": "mqtt://gw:s3cret@broker:port",
        }
    )
    assert [problem.variable for problem in error.problems] == [
        "ANJU_DATABASE_URL",
        "ANJU_MQTT_URL",
    ]
    assert "postgresql://anju:***@db/anju/extra" in str(error)
    assert "mqtt://gw:***@broker:port" in str(error)
    assert "hunter2" not in str(error)
    assert "s3cret" not in str(error)


def test_every_setting_says_what_form_it_expects() -> None:
    models = [
        ApiSettings,
        IngestSettings,
        StorageSettings,
        WebhookSettings,
        QueueSettings,
        ResidentSettings,
    ]
    for model in models:
        for name in model.model_fields:
            assert model.form(name).text != "a valid value", model.variable(name)


def test_a_settings_error_of_one_problem_reads_as_before() -> None:
    error = SettingsError("--workers", "0 workers", "at least 1")

    assert str(error) == "--workers: 0 workers; expected at least 1"
    assert (error.variable, error.problem, error.expected) == (
        "--workers",
        "0 workers",
        "at least 1",
    )
    assert error.problems == [("--workers", "0 workers", "at least 1")]
