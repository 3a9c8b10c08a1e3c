"""Which ingest workers join the shared subscription, and which combinations are
refused because each worker would get every message."""

from __future__ import annotations

import pytest

from cloud.app import ingest_sharing
from cloud.errors import SettingsError
from cloud.settings import CloudSettings
from schemas.broker import parse_broker_url


@pytest.mark.parametrize(
    ("url", "processes", "workers", "shared", "sharing"),
    [
        ("mqtt://h:1883", 1, 1, None, False),
        ("mqtt://h:1883", 1, 2, None, True),
        ("mqtt://h:1883", 2, 1, None, True),
        ("mqtt://h:1883", 1, 1, True, True),
        ("mqtt://h:1883?version=3.1.1", 1, 1, None, False),
    ],
)
def test_ingest_workers_share_by_default_when_there_is_more_than_one(
    url: str, processes: int, workers: int, shared: bool | None, sharing: bool
) -> None:
    settings = CloudSettings(database_url="postgresql://a@h/db", mqtt=parse_broker_url(url))
    assert ingest_sharing(settings, workers=workers, shared=shared, processes=processes) is sharing


@pytest.mark.parametrize(
    ("url", "processes", "shared", "variable"),
    [
        ("mqtt://h:1883", 2, False, "--no-shared"),
        ("mqtt://h:1883?version=3.1.1", 2, None, "ANJU_MQTT_URL"),
        ("mqtt://h:1883?version=3.1.1", 1, True, "ANJU_MQTT_URL"),
        ("mqtt://h:1883", 0, None, "--processes"),
    ],
)
def test_ingest_processes_that_would_each_get_every_message_are_refused(
    url: str, processes: int, shared: bool | None, variable: str
) -> None:
    settings = CloudSettings(database_url="postgresql://a@h/db", mqtt=parse_broker_url(url))
    with pytest.raises(SettingsError) as raised:
        ingest_sharing(settings, workers=1, shared=shared, processes=processes)
    assert raised.value.variable == variable
