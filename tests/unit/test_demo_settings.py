"""The demo reads the cloud's ANJU_* environment as ``anju cloud run`` does, on its own
database and broker, so a property manager can point its webhooks at a receiver."""

from __future__ import annotations

import pytest

from anju.demo_settings import DEMO_QUEUE_LIMITS, demo_settings
from cloud.errors import SettingsError
from schemas.broker import parse_broker_url

DATABASE = "postgresql://anju@127.0.0.1:5999/demo"
BROKER = "mqtt://127.0.0.1:1999"


def test_webhook_and_api_variables_are_honoured_and_the_services_are_the_demos() -> None:
    settings, shortened = demo_settings(
        DATABASE,
        BROKER,
        {
            "ANJU_DATABASE_URL": "postgresql://someone@db.example/elsewhere",
            "ANJU_MQTT_URL": "mqtt://broker.example:1883",
            "ANJU_API_PORT": "8080",
            "ANJU_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
            "ANJU_WEBHOOK_TIMEOUT_S": "3",
        },
    )
    assert settings.database_url == DATABASE
    assert settings.mqtt == parse_broker_url(BROKER)
    assert settings.api.port == 8080
    assert [str(n) for n in settings.webhooks.allowed_networks] == ["127.0.0.1/32"]
    assert settings.webhooks.timeout_s == 3.0
    assert shortened


def test_without_queue_variables_escalation_is_six_times_faster() -> None:
    settings, shortened = demo_settings(DATABASE, BROKER, {})
    assert shortened
    assert settings.queue.p1_unclaimed_s == float(DEMO_QUEUE_LIMITS["ANJU_QUEUE_P1_UNCLAIMED_S"])
    assert settings.queue.p1_unclaimed_s * 6 == 60.0
    assert settings.queue.repeat_s * 6 == 60.0
    assert settings.api.port != 8080, "a free port, so the demo starts beside a running cloud"


def test_any_queue_variable_hands_every_limit_back_to_the_environment() -> None:
    settings, shortened = demo_settings(DATABASE, BROKER, {"ANJU_QUEUE_REPEAT_S": "5"})
    assert not shortened
    assert settings.queue.repeat_s == 5.0
    assert settings.queue.p1_unclaimed_s == 60.0


def test_a_bad_variable_is_named_as_anju_cloud_run_names_it() -> None:
    with pytest.raises(SettingsError, match="ANJU_WEBHOOK_TIMEOUT_S"):
        demo_settings(DATABASE, BROKER, {"ANJU_WEBHOOK_TIMEOUT_S": "soon"})
