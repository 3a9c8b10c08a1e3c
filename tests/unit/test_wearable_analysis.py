"""The gateway's wearable analysis, fed readings and events built by hand.

Heart-rate tests compress time six-fold (10 s buckets for 60 s, a 1 h baseline for
6 h), so an hour's drift takes 600 s; every timestamp is explicit and nothing waits.
"""

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from edge.wearables.analysis import Finding, WearableAnalysis
from edge.wearables.settings import AnalysisSettings
from schemas.vocabulary import EventType, Metric, Severity
from schemas.wire import Event, Reading

START = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
"""09:00 in Asia/Shanghai: waking hours."""
BAND = "b3-0301-band"

HEART = AnalysisSettings(
    bucket_s=10,
    baseline_window_s=3600,
    baseline_min_s=300,
    current_window_s=20,
    hold_s=15,
)
STILLNESS = AnalysisSettings(inactivity_after_s=600, hold_s=90)

Sampler = Callable[[int], list[Reading]]


def at(seconds: float, start: datetime = START) -> datetime:
    return start + timedelta(seconds=seconds)


def reading(
    seconds: float, metric: Metric, value: float, device: str = BAND, start: datetime = START
) -> Reading:
    return Reading(device=device, ts=at(seconds, start), seq=1, metric=metric, value=float(value))


def fall_flag(seconds: float, device: str = BAND) -> Event:
    return Event(
        device=device,
        ts=at(seconds),
        seq=1,
        type=EventType.WEARABLE_FALL_SUSPECTED,
        severity=Severity.INFO,
    )


def run(
    analysis: WearableAnalysis,
    seconds: Iterable[int],
    sample: Sampler,
    events: dict[int, list[Event]] | None = None,
    start: datetime = START,
) -> list[Finding]:
    """Feed what ``sample`` gives for each second and tick at that second."""
    findings: list[Finding] = []
    for second in seconds:
        analysis.observe(sample(second), (events or {}).get(second, []))
        findings += analysis.tick(at(second, start))
    return findings


def heart(value: Callable[[int], float], device: str = BAND) -> Sampler:
    return lambda second: [reading(second, Metric.HEART_RATE, value(second), device)]


def resting(level: float) -> Callable[[int], float]:
    """A steady heart rate with a few beats per minute of natural wobble."""
    return lambda second: level + 3 * math.sin(second * 0.3) + math.sin(second * 0.05)


def drifting(since: int, minimum: float = 65, maximum: float = 110) -> Callable[[int], float]:
    """``minimum`` until ``since``, then up to ``maximum`` over 600 s (an hour, compressed)."""
    return lambda second: min(maximum, minimum + (maximum - minimum) * max(0, second - since) / 600)


def seconds_since(finding: Finding, start: datetime = START) -> float:
    return (finding.ts - start).total_seconds()


@pytest.mark.parametrize("level", [48, 95], ids=["athlete at 48", "patient at 95"])
def test_a_steady_unusual_heart_rate_is_that_persons_normal(level: float) -> None:
    analysis = WearableAnalysis(HEART, [BAND])
    assert run(analysis, range(0, 7200, 2), heart(resting(level))) == []


def test_a_drift_from_the_baseline_is_reported_once_per_episode() -> None:
    def scenario(second: int) -> float:
        if second < 5200:
            return resting(65)(second) if second < 4000 else drifting(4000)(second)
        return resting(65)(second) if second < 6400 else drifting(6400)(second)

    analysis = WearableAnalysis(HEART, [BAND])
    findings = run(analysis, range(0, 7300, 2), heart(scenario))

    assert [f.type for f in findings] == [EventType.WEARABLE_HEART_RATE_ABNORMAL] * 2
    for finding, drift_start in zip(findings, [4000, 6400], strict=True):
        threshold = finding.data.threshold
        assert threshold is not None
        # About 65 + 4 x 5 (the spread's floor); the first episode, still in the
        # baseline window, lifts the second one's median a little.
        assert threshold == pytest.approx(86, abs=2)
        crossed = drift_start + 600 * (threshold - 65) / 45
        assert crossed < seconds_since(finding) <= crossed + HEART.current_window_s + HEART.bucket_s
        assert finding.device_id == BAND
        assert finding.data.value is not None
        assert finding.data.value > threshold
        assert finding.data.reason is not None
        assert finding.data.reason.startswith("above the personal baseline 6")
        assert finding.data.reason.endswith(" ± 20 1/min")
    assert analysis.findings_by_type[EventType.WEARABLE_HEART_RATE_ABNORMAL] == 2


@pytest.mark.parametrize(
    ("level", "shown", "threshold", "reason"),
    [
        (160, 160, 150, "above the absolute limit 150"),
        (35, 35, 40, "below the absolute limit 40"),
        # Plain rounding would show 150.0 over 150.0 and 40.0 under 40.0.
        (150.04, 150, 149.9, "above the absolute limit 150"),
        (39.96, 40, 40.1, "below the absolute limit 40"),
    ],
)
def test_the_absolute_limits_hold_before_any_baseline(
    level: float, shown: float, threshold: float, reason: str
) -> None:
    analysis = WearableAnalysis(HEART, [BAND])
    findings = run(analysis, range(120), heart(lambda second: level))

    assert len(findings) == 1
    assert seconds_since(findings[0]) <= HEART.current_window_s
    assert findings[0].data.value == shown
    assert findings[0].data.threshold == threshold
    assert findings[0].data.reason == reason


def test_a_band_without_skin_contact_is_not_a_low_heart_rate() -> None:
    analysis = WearableAnalysis(HEART, [BAND])
    assert run(analysis, range(600), heart(lambda second: 0)) == []


def active_then_still(until: int, start: datetime = START) -> Sampler:
    """A worn band, every minute: moving until ``until``, then lying still."""

    def sample(second: int) -> list[Reading]:
        motion = 80 if second < until else 5
        return [
            reading(second, Metric.MOTION, motion, start=start),
            reading(second, Metric.HEART_RATE, 70, start=start),
        ]

    return sample


def test_inactivity_in_waking_hours_is_reported_once_and_rearmed_by_activity() -> None:
    analysis = WearableAnalysis(STILLNESS, [BAND])
    still = active_then_still(300)

    def sample(second: int) -> list[Reading]:
        if second == 3000:
            return [*still(second)[1:], reading(second, Metric.MOTION, 100)]
        return still(second)

    findings = run(analysis, range(0, 4000, 60), sample)

    # The last moving reading (240 s) holds until the still one at 300 s replaces it.
    assert [seconds_since(f) for f in findings] == [900, 3660]
    assert all(f.type is EventType.WEARABLE_INACTIVITY for f in findings)
    assert findings[0].data.duration_s == 600
    assert findings[0].data.threshold == 600
    assert findings[0].data.reason == (
        "no movement or steps since 11-30 09:05 local time: 0.2 h of waking time"
    )


def test_steps_count_as_activity() -> None:
    analysis = WearableAnalysis(STILLNESS, [BAND])
    still = active_then_still(0)

    def sample(second: int) -> list[Reading]:
        return [*still(second), reading(second, Metric.STEPS, 1000 + (second >= 480) * 12)]

    findings = run(analysis, range(0, 1200, 60), sample)
    assert [seconds_since(f) for f in findings] == [1080]


def test_only_waking_hours_count_toward_inactivity() -> None:
    evening = datetime(2026, 11, 30, 13, 50, tzinfo=UTC)  # 21:50 in Shanghai
    analysis = WearableAnalysis(STILLNESS, [BAND])
    findings = run(
        analysis, range(0, 11 * 3600, 60), active_then_still(300, evening), start=evening
    )

    # Still from 21:55: five waking minutes before 22:00, five more after 07:00.
    assert [seconds_since(f, evening) for f in findings] == [(9 * 60 + 15) * 60]
    assert findings[0].data.duration_s == 9 * 3600 + 10 * 60


def test_a_band_not_worn_is_not_an_inactive_resident() -> None:
    analysis = WearableAnalysis(STILLNESS, [BAND])
    on_its_charger = run(
        analysis, range(0, 3600, 60), lambda second: [reading(second, Metric.MOTION, 0)]
    )
    assert on_its_charger == []


def fall_then(motion_after: Callable[[int], float | None]) -> Sampler:
    """Walking until the impact at 100 s, then the motion ``motion_after`` gives."""

    def sample(second: int) -> list[Reading]:
        if second < 100:
            return [reading(second, Metric.MOTION, 120)]
        if second == 100:
            return [reading(second, Metric.MOTION, 200)]
        motion = motion_after(second)
        return [] if motion is None else [reading(second, Metric.MOTION, motion)]

    return sample


IMPACT = {100: [fall_flag(100)]}


def test_a_fall_followed_by_stillness_is_confirmed_at_the_end_of_the_window() -> None:
    analysis = WearableAnalysis(AnalysisSettings(), [BAND])
    findings = run(analysis, range(200), fall_then(lambda second: 3), IMPACT)

    assert len(findings) == 1
    fall = findings[0]
    assert (fall.device_id, fall.type, fall.ts) == (BAND, EventType.WEARABLE_FALL, at(130))
    # Still from the first reading after the impact (101 s) to the window's end.
    assert fall.data.duration_s == 29
    assert fall.data.confidence is not None
    assert 0.9 < fall.data.confidence <= 1
    assert analysis.recovered_falls == 0
    assert analysis.findings_by_type[EventType.WEARABLE_FALL] == 1


def test_a_fall_with_no_data_in_the_window_still_pages() -> None:
    analysis = WearableAnalysis(AnalysisSettings(), [BAND])
    findings = run(analysis, range(200), lambda second: [], IMPACT)

    assert [(f.type, f.ts) for f in findings] == [(EventType.WEARABLE_FALL, at(130))]
    assert findings[0].data.confidence == AnalysisSettings().fall_min_confidence
    assert findings[0].data.duration_s == 0


def test_a_wearer_who_gets_up_is_not_a_fall() -> None:
    analysis = WearableAnalysis(AnalysisSettings(), [BAND])
    getting_up = fall_then(lambda second: 3 if second < 112 else 150)

    assert run(analysis, range(200), getting_up, IMPACT) == []
    assert analysis.recovered_falls == 1
    assert analysis.findings_by_type[EventType.WEARABLE_FALL] == 0


def test_steps_after_a_fall_mean_the_wearer_got_up() -> None:
    analysis = WearableAnalysis(AnalysisSettings(), [BAND])

    def sample(second: int) -> list[Reading]:
        steps = reading(second, Metric.STEPS, 2000 if second < 115 else 2008)
        return [steps, reading(second, Metric.MOTION, 10)]

    assert run(analysis, range(200), sample, IMPACT) == []
    assert analysis.recovered_falls == 1


def test_other_devices_and_metrics_are_ignored() -> None:
    analysis = WearableAnalysis(HEART, [BAND])

    def sample(second: int) -> list[Reading]:
        return [
            reading(second, Metric.HEART_RATE, 200, device="b3-0302-band"),
            reading(second, Metric.BATTERY, 5),
            reading(second, Metric.HEART_RATE, 70),
        ]

    findings = run(analysis, range(200), sample, {100: [fall_flag(100, "b3-0302-band")]})
    assert findings == []


def test_five_hundred_bands_are_judged_together() -> None:
    settings = AnalysisSettings(
        bucket_s=10, baseline_window_s=600, baseline_min_s=300, current_window_s=20, hold_s=6
    )
    bands = [f"band-{number:03}" for number in range(500)]
    rng = np.random.default_rng(7)
    baselines = rng.uniform(50, 100, len(bands)).round()
    baselines[342] = 90
    rising, falling = 17, 342

    def sample(second: int) -> list[Reading]:
        levels = baselines + 3 * np.sin(second * 0.1 + np.arange(len(bands)))
        if second >= 700:
            levels[rising] += 40
            levels[falling] = 55
        return [
            reading(second, Metric.HEART_RATE, float(level), device)
            for device, level in zip(bands, levels, strict=True)
        ]

    analysis = WearableAnalysis(settings, bands)
    findings = run(analysis, range(0, 800, 5), sample)

    assert {(f.device_id, f.data.reason is not None and f.data.reason[:5]) for f in findings} == {
        (bands[rising], "above"),
        (bands[falling], "below"),
    }
    assert all(700 < seconds_since(f) <= 730 for f in findings)


def test_settings_default_to_the_cloud_rules_and_reject_what_cannot_work() -> None:
    defaults = AnalysisSettings()
    assert defaults.inactivity_after_s == 14400
    assert defaults.waking_span_s == (7 * 3600, 22 * 3600)
    with pytest.raises(ValidationError, match="same day"):
        AnalysisSettings(waking_hours="22:00-07:00")
    with pytest.raises(ValidationError, match="unknown time zone"):
        AnalysisSettings(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="at most 2880"):
        AnalysisSettings(bucket_s=1, baseline_window_s=86400)
    with pytest.raises(ValidationError, match="Extra inputs"):
        AnalysisSettings.model_validate({"k_value": 3})
