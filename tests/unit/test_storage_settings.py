"""``ANJU_STORAGE_*``: read like the other settings, and refused with the variable named."""

from __future__ import annotations

import pytest

from cloud.errors import SettingsError
from cloud.settings import StorageSettings, load_settings

BASE_ENV = {"ANJU_DATABASE_URL": "postgresql://a@h/db"}


def test_storage_settings_come_from_the_environment() -> None:
    settings = load_settings(
        {
            **BASE_ENV,
            "ANJU_STORAGE_BACKEND": "partitions",
            "ANJU_STORAGE_RETENTION_DAYS": "30",
            "ANJU_STORAGE_LATE_WINDOW_H": "12",
            "ANJU_STORAGE_CHUNK_INTERVAL_H": "6",
        },
        require_mqtt=False,
    )
    storage = settings.storage
    assert (storage.backend, storage.retention_days, storage.late_window_h) == (
        "partitions",
        30,
        12,
    )
    assert storage.chunk_interval_h == 6
    assert storage.rollup_retention_days == StorageSettings().rollup_retention_days


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("ANJU_STORAGE_BACKEND", "influx", "is not valid"),
        ("ANJU_STORAGE_RETENTION_DAYS", "0", "is not valid"),
        ("ANJU_STORAGE_MAINTENANCE_INTERVAL_S", "1", "is not valid"),
        ("ANJU_STORAGE_CHUNK_INTERVAL_H", "soon", "is not valid"),
        ("ANJU_STORAGE_ROLLUP_RETENTION_DAYS", "30", "shorter than ANJU_STORAGE_RETENTION_DAYS"),
        ("ANJU_STORAGE_LATE_WINDOW_H", "1200", "more than half of ANJU_STORAGE_RETENTION_DAYS"),
    ],
)
def test_bad_storage_settings_name_the_variable(variable: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE_ENV, variable: value}, require_mqtt=False)
    assert caught.value.variable == variable
    assert problem in caught.value.problem
    assert caught.value.expected
    assert len(caught.value.problems) == 1, "only the mistake made is reported"
