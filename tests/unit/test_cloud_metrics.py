"""The cloud's metric families from the process's counters and a database snapshot.

No services: the collector renders what it is given, and ``IngestCounters`` keeps the
group count and the sealing time the lag is read from.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from cloud.configs.worker import ConfigCounters
from cloud.ingest.counters import IngestCounters
from cloud.metrics import INGEST_COUNTS, CloudCollector, DatabaseFigures
from cloud.webhooks.delivery import DeliveryCounters

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def families(collector: CloudCollector) -> dict[str, tuple[str, str, list[Sample]]]:
    """Each family rendered and parsed back: name to (type, help, samples)."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        family.name: (family.type, family.documentation, family.samples)
        for family in text_string_to_metric_families(text)
    }


def test_record_group_counts_groups_and_keeps_the_newest_sealing_time() -> None:
    counters = IngestCounters()
    counters.record_group([], committed_at=NOW)
    assert (counters.groups, counters.newest_sealed_at) == (1, None)

    counters.record_group(
        [NOW - timedelta(seconds=30), NOW - timedelta(seconds=5)], committed_at=NOW
    )
    assert counters.newest_sealed_at == NOW - timedelta(seconds=5)

    # A group of older batches (a gateway draining its spool) does not move it back.
    counters.record_group([NOW - timedelta(hours=2)], committed_at=NOW + timedelta(seconds=1))
    assert counters.newest_sealed_at == NOW - timedelta(seconds=5)

    # A gateway clock an hour ahead counts as sealing at the commit.
    later = NOW + timedelta(seconds=2)
    counters.record_group([later + timedelta(hours=1)], committed_at=later)
    assert (counters.groups, counters.newest_sealed_at) == (4, later)


def test_snapshot_holds_the_counts_only() -> None:
    counters = IngestCounters(messages=3, groups=2)
    counters.record_group([NOW], committed_at=NOW)
    snapshot = counters.snapshot()
    assert "newest_sealed_at" not in snapshot
    assert (snapshot["messages"], snapshot["groups"]) == (3, 3)
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_process_counters_become_counters_with_help() -> None:
    ingest = IngestCounters(
        messages=12,
        batches=9,
        duplicates=2,
        conflicts=13,
        readings=900,
        events=4,
        clock_skewed=14,
        quarantined=3,
        poisoned=1,
        storage_errors=5,
        broker_errors=6,
        acks_published=15,
        ack_failures=16,
        failures=7,
        groups=8,
        newest_sealed_at=datetime.now(UTC) - timedelta(seconds=40),
    )
    deliveries = DeliveryCounters(delivered=10, retried=4, dead=2, lost_claims=1, disabled=1)

    found = families(CloudCollector(database=None, ingest=ingest, deliveries=deliveries))

    expected = {
        "messages": 12,
        "batches": 9,
        "duplicates": 2,
        "conflicts": 13,
        "readings": 900,
        "events": 4,
        "clock_skewed": 14,
        "quarantined": 3,
        "poisoned": 1,
        "storage_errors": 5,
        "broker_errors": 6,
        "acks_published": 15,
        "ack_failures": 16,
        "failures": 7,
        "groups": 8,
    }
    assert {name for name, _ in INGEST_COUNTS} == set(expected)
    for name, count in expected.items():
        kind, help_text, samples = found[f"anju_cloud_ingest_{name}"]
        assert (kind, help_text != "") == ("counter", True), name
        assert [(s.name, s.value) for s in samples] == [(f"anju_cloud_ingest_{name}_total", count)]
    kind, _, [lag] = found["anju_cloud_ingest_lag_seconds"]
    assert kind == "gauge"
    assert 40 <= lag.value < 60
    webhooks = {
        name: found[f"anju_cloud_webhook_{name}"][2][0].value
        for name in ("attempts", "failures", "dead_letters")
    }
    assert webhooks == {"attempts": 17, "failures": 6, "dead_letters": 2}
    assert found["anju_cloud_scrape_database_up"][2][0].value == 0
    assert "anju_cloud_incidents_open" not in found


def test_config_pusher_counters_become_counters_by_outcome() -> None:
    """The pusher's pushes and errors are plain counters; its answers one counter with
    an ``outcome`` label, so an alert can watch refusals alone or every answer."""
    configs = ConfigCounters(
        pushes=9, applied=5, refused=1, failed=2, reported=7, malformed=3, errors=4
    )

    found = families(CloudCollector(database=None, configs=configs))

    kind, help_text, [pushes] = found["anju_cloud_config_pushes"]
    assert (kind, pushes.name, pushes.value, help_text != "") == (
        "counter",
        "anju_cloud_config_pushes_total",
        9,
        True,
    )
    kind, _, results = found["anju_cloud_config_results"]
    assert kind == "counter"
    assert {(s.name, s.labels["outcome"]): s.value for s in results} == {
        ("anju_cloud_config_results_total", "applied"): 5,
        ("anju_cloud_config_results_total", "refused"): 1,
        ("anju_cloud_config_results_total", "failed"): 2,
    }
    assert found["anju_cloud_config_errors"][2][0].value == 4
    # A process without the pusher exports none of its families.
    none = families(CloudCollector(database=None))
    assert not [name for name in none if name.startswith("anju_cloud_config_")]


def test_lag_is_absent_until_a_batch_is_stored() -> None:
    found = families(CloudCollector(database=None, ingest=IngestCounters(groups=3)))
    _, help_text, samples = found["anju_cloud_ingest_lag_seconds"]
    assert help_text
    assert samples == []


def test_database_figures_cover_every_priority_and_active_status() -> None:
    figures = DatabaseFigures(
        open_incidents={(1, "open"): 2, (3, "dispatched"): 1},
        oldest_open_age_s={1: 75.5, 3: 9.0},
        escalations=4,
        deliveries={"pending": 6, "dead": 1},
        gateways_config_behind=2,
    )

    found = families(CloudCollector(database=figures))

    assert found["anju_cloud_scrape_database_up"][2][0].value == 1
    kind, _, samples = found["anju_cloud_incidents_open"]
    assert kind == "gauge"
    counts = {(s.labels["priority"], s.labels["status"]): s.value for s in samples}
    assert len(counts) == 3 * 4
    assert {key: n for key, n in counts.items() if n} == {("1", "open"): 2, ("3", "dispatched"): 1}
    _, _, ages = found["anju_cloud_incident_oldest_open_age_seconds"]
    assert {s.labels["priority"]: s.value for s in ages} == {"1": 75.5, "2": 0.0, "3": 9.0}
    kind, _, [escalations] = found["anju_cloud_escalations"]
    assert (kind, escalations.name, escalations.value) == (
        "counter",
        "anju_cloud_escalations_total",
        4,
    )
    _, _, waiting = found["anju_cloud_webhook_deliveries"]
    assert {s.labels["status"]: s.value for s in waiting} == {"pending": 6, "dead": 1}
    kind, _, [behind] = found["anju_cloud_gateways_config_behind"]
    assert (kind, behind.value) == ("gauge", 2)
    assert not [name for name in found if name.startswith("anju_cloud_ingest_")]
