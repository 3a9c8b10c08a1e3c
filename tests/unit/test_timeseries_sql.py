"""The storage path's pure parts: chunk sizing, path choice, the TimescaleDB plan.

No TimescaleDB server was available to write this against, so the plan is checked
here statement by statement against what the TimescaleDB docs ask for;
tests/integration/test_timeseries.py checks the same statements on a real
PostgreSQL as far as one without TimescaleDB can.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from cloud.errors import SettingsError
from cloud.settings import StorageSettings
from cloud.storage.sql import queries
from cloud.storage.timeseries import (
    INDEX_BYTES_PER_ROW,
    Backend,
    Catalogue,
    choose_backend,
    chunk_interval,
    timescale_plan,
)

GIB = 2**30
PARTITIONED = Catalogue(True, True, "p", "r", shared_buffers=4 * GIB)
"""TimescaleDB just installed; readings and the rollup still as migration 0006 left them."""
CONVERTED = Catalogue(True, True, "r", "v", shared_buffers=4 * GIB)
"""A database a previous ``anju cloud migrate`` already brought to TimescaleDB."""

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@pytest.mark.parametrize(
    ("shared_buffers", "rows_per_s"),
    [(16 * GIB, 20_000), (4 * GIB, 2_000), (64 * GIB, 50_000), (2 * GIB, 500)],
)
def test_chunk_index_fits_in_shared_buffers(shared_buffers: int, rows_per_s: int) -> None:
    interval = chunk_interval(StorageSettings(ingest_rows_per_s=rows_per_s), shared_buffers)
    index_bytes = rows_per_s * interval.total_seconds() * INDEX_BYTES_PER_ROW
    assert index_bytes <= shared_buffers
    # Whole hours, and the largest that fits: one more hour would not.
    assert interval.total_seconds() % 3600 == 0
    one_more = rows_per_s * (interval.total_seconds() + 3600) * INDEX_BYTES_PER_ROW
    assert one_more > shared_buffers


def test_chunk_interval_is_clamped_and_can_be_set() -> None:
    busy = StorageSettings(ingest_rows_per_s=1_000_000)
    quiet = StorageSettings(ingest_rows_per_s=1)
    assert chunk_interval(busy, 128 * 2**20) == timedelta(hours=1)
    assert chunk_interval(quiet, 64 * GIB) == timedelta(days=7)
    assert chunk_interval(StorageSettings(chunk_interval_h=5), 64 * GIB) == timedelta(hours=5)


@pytest.mark.parametrize(
    ("setting", "catalogue", "expected"),
    [
        ("auto", Catalogue(False, False, "p", "r", GIB), Backend.PARTITIONS),
        ("auto", Catalogue(False, True, "p", "r", GIB), Backend.TIMESCALEDB),
        ("auto", Catalogue(True, True, "r", "v", GIB), Backend.TIMESCALEDB),
        ("partitions", Catalogue(True, True, "p", "r", GIB), Backend.PARTITIONS),
        ("timescaledb", Catalogue(False, True, "p", "r", GIB), Backend.TIMESCALEDB),
    ],
)
def test_choose_backend(setting: str, catalogue: Catalogue, expected: Backend) -> None:
    settings = StorageSettings.model_validate({"backend": setting})
    assert choose_backend(settings, catalogue) is expected


def test_a_server_offering_timescaledb_without_preloading_it_keeps_partitions() -> None:
    """Issue 17, defect 3: the old choice took TimescaleDB here, and CREATE EXTENSION
    then answered FATAL and closed migrate's connection."""
    offered = Catalogue(False, True, "p", "r", GIB, preloaded=False)
    assert choose_backend(StorageSettings(), offered) is Backend.PARTITIONS
    with pytest.raises(SettingsError, match="shared_preload_libraries"):
        choose_backend(StorageSettings(backend="timescaledb"), offered)
    # Installed in the database but not loadable: nothing of it could run, either way.
    installed = Catalogue(True, True, "r", "v", GIB, preloaded=False)
    for setting in ("auto", "timescaledb"):
        with pytest.raises(SettingsError, match="installed in this database"):
            choose_backend(StorageSettings.model_validate({"backend": setting}), installed)


def test_the_first_full_refresh_is_owed_until_it_succeeds() -> None:
    """Issue 17, defect 2: a refresh that failed after the conversion committed was
    never tried again, since later plans saw the aggregate and skipped it."""
    owed = ["timescale_refresh_rollup", "timescale_rollup_refreshed"]
    first = timescale_plan(StorageSettings(), PARTITIONED)
    assert "timescale_mark_rollup_unrefreshed" in [step.query for step in first.steps]
    assert [step.query for step in first.after_commit] == owed
    unfinished = Catalogue(True, True, "r", "v", 4 * GIB, rollup_unrefreshed=True)
    plan = timescale_plan(StorageSettings(), unfinished)
    assert [step.query for step in plan.after_commit] == owed
    assert "timescale_create_rollup" not in [step.query for step in plan.steps]


def test_choose_backend_refuses_what_the_server_cannot_do() -> None:
    with pytest.raises(SettingsError, match="not offered by this PostgreSQL") as caught:
        choose_backend(
            StorageSettings(backend="timescaledb"), Catalogue(False, False, "p", "r", GIB)
        )
    assert caught.value.variable == "ANJU_STORAGE_BACKEND"
    with pytest.raises(SettingsError, match="already a TimescaleDB hypertable"):
        choose_backend(StorageSettings(backend="partitions"), CONVERTED)


def test_first_plan_rebuilds_readings_as_a_hypertable_then_sets_policies() -> None:
    settings = StorageSettings(
        retention_days=30, rollup_retention_days=400, late_window_h=36, ingest_rows_per_s=5_000
    )
    plan = timescale_plan(settings, PARTITIONED)
    names = [step.query for step in plan.steps]

    # The partitioned table is set aside before its name is reused, rows move only
    # once the hypertable exists, and the index is built after the bulk move.
    assert names[:9] == [
        "timescale_lock_readings",
        "timescale_set_aside_partitioned",
        "timescale_create_table",
        "timescale_create_hypertable",
        "timescale_move_rows",
        "timescale_drop_partitioned",
        "timescale_create_index",
        "timescale_drop_partition_functions",
        "timescale_enable_compression",
    ]
    assert names.index("timescale_set_aside_rollup") < names.index("timescale_create_rollup")
    assert names.index("timescale_create_rollup") < names.index("timescale_add_rollup_policy")
    # Each policy is removed before it is added, so a re-run applies changed settings.
    for policy in ("compression_policy", "retention_policy", "rollup_policy", "rollup_retention"):
        assert names.index(f"timescale_remove_{policy}") + 1 == names.index(
            f"timescale_add_{policy}"
        )
    # The continuous aggregate is filled outside the transaction (TimescaleDB refuses
    # to refresh inside one), and only then marked as filled.
    assert [step.query for step in plan.after_commit] == [
        "timescale_refresh_rollup",
        "timescale_rollup_refreshed",
    ]

    params = {step.query: step.params for step in plan.steps}
    assert plan.chunk_interval == chunk_interval(settings, PARTITIONED.shared_buffers)
    assert params["timescale_create_hypertable"] == {"chunk_interval": plan.chunk_interval}
    assert params["timescale_chunk_interval"] == {"chunk_interval": plan.chunk_interval}
    assert params["timescale_add_compression_policy"] == {"compress_after": timedelta(hours=36)}
    assert params["timescale_add_retention_policy"] == {"drop_after": timedelta(days=30)}
    assert params["timescale_add_rollup_retention"] == {"drop_after": timedelta(days=400)}
    refresh = params["timescale_add_rollup_policy"]
    assert refresh["schedule"] == timedelta(seconds=settings.maintenance_interval_s)
    assert isinstance(refresh["start_offset"], timedelta)
    # The refresh window covers the late-arrival window and at least two hourly
    # buckets past its one-hour end offset, and never reaches raw data retention drops.
    assert refresh["start_offset"] >= timedelta(hours=36) + timedelta(hours=2)
    assert refresh["start_offset"] < timedelta(days=30)


def test_later_plans_only_reapply_interval_policies_and_horizon() -> None:
    plan = timescale_plan(StorageSettings(), CONVERTED)
    assert [step.query for step in plan.steps if not step.timescaledb] == [
        "timescale_rollup_horizon"
    ]
    assert {step.query for step in plan.steps} == {
        "timescale_rollup_horizon",
        "timescale_chunk_interval",
        "timescale_remove_compression_policy",
        "timescale_add_compression_policy",
        "timescale_remove_retention_policy",
        "timescale_add_retention_policy",
        "timescale_remove_rollup_policy",
        "timescale_add_rollup_policy",
        "timescale_remove_rollup_retention",
        "timescale_add_rollup_retention",
    }
    assert plan.after_commit == ()


@pytest.mark.parametrize("catalogue", [PARTITIONED, CONVERTED])
def test_plan_parameters_match_the_statements_placeholders(catalogue: Catalogue) -> None:
    plan = timescale_plan(StorageSettings(), catalogue)
    for step in (*plan.steps, *plan.after_commit):
        text = queries()[step.query]
        assert set(_PLACEHOLDER.findall(text)) == set(step.params), step.query
        assert step.timescaledb == _calls_timescaledb(text), step.query


def test_statements_say_what_the_timescaledb_docs_ask_for() -> None:
    sql = queries()
    assert "by_range('ts'," in sql["timescale_create_hypertable"]
    assert "create_default_indexes => false" in sql["timescale_create_hypertable"]
    compression = sql["timescale_enable_compression"]
    assert "timescaledb.compress," in compression
    assert "timescaledb.compress_segmentby = 'device_id, metric'" in compression
    assert "timescaledb.compress_orderby = 'ts'" in compression
    rollup = sql["timescale_create_rollup"]
    assert "timescaledb.continuous" in rollup
    assert "timescaledb.materialized_only = false" in rollup
    assert "time_bucket(INTERVAL '1 hour', ts) AS bucket" in rollup
    for column in ("device_id", "metric", "value_count", "value_sum", "value_min", "value_max"):
        assert column in rollup
    assert rollup.endswith("WITH NO DATA")
    assert "end_offset => INTERVAL '1 hour'" in sql["timescale_add_rollup_policy"]
    # The new table copies the old one's columns, defaults and NOT NULLs, and gets
    # back the one index the old one had, under the same name.
    assert "LIKE readings_partitioned INCLUDING DEFAULTS" in sql["timescale_create_table"]
    assert sql["timescale_create_index"] == (
        "CREATE INDEX readings_device_metric_ts ON readings (device_id, metric, ts)"
    )


def _calls_timescaledb(text: str) -> bool:
    return bool(
        re.search(
            r"timescaledb\.|create_hypertable|time_bucket|_policy\(|set_chunk_time_interval|"
            r"refresh_continuous_aggregate",
            text,
        )
    )
