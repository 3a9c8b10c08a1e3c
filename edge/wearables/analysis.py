"""Findings from wristband data: abnormal heart rate, inactivity, confirmed falls.

Use::

    analysis = WearableAnalysis(config.wearables, wearable_device_ids)
    # for every batch the normalisers produce:  analysis.observe(readings, events)
    # about once a second:                      findings = analysis.tick(now)

``observe`` is cheap bookkeeping per item; ``tick`` does the work for every band at
once on numpy arrays, so its cost grows with the number of bands, not with a Python
loop over bands times buckets. Only bands with a finding are visited one by one.
Time comes from the items' ``ts`` and from ``now``, never from the clock.

Readings arrive by exception (a value within its deadband is not sent again until the
profile's heartbeat), so a reading stands for its value until the next one, for at
most ``hold_s``: heart rate is averaged over time, not over readings, and a band that
sends nothing while its wearer lies still is still seen to be still. A heart rate of
0 is the band saying it has no skin contact: the band is not worn from then on.

Heart rate: per band, a ring of time-weighted means per bucket. The personal baseline
is the median of the bucket means over ``baseline_window_s`` before the current window,
its spread 1.4826 x their median absolute deviation (at least ``min_spread_bpm``);
the heart rate now is the mean over ``current_window_s``, once that is half covered.
It is abnormal ``k`` spreads from the median (once ``baseline_min_s`` of data exist)
or outside the absolute limits; one finding when a band turns abnormal, none while it
stays so, and it is re-armed once back inside by ``clear_margin_bpm``.

Inactivity: the waking-hours seconds since the band last showed motion above
``motion_still_max`` or a step; one finding when they reach ``inactivity_after_s``,
and only while the band is heard from and worn. Re-armed by activity.

Falls: a ``wearable.fall_suspected`` event opens a window of ``fall_confirm_s``. Motion
above ``fall_recovery_motion`` or a step in it means the wearer got up (counted in
``recovered_falls``); otherwise the window's end makes a ``wearable.fall`` with
``confidence = fall_min_confidence + (1 - fall_min_confidence) x still_s /
fall_confirm_s``, ``still_s`` being the seconds of the window the wearer was seen
still. A fall is never dropped for lack of data: with none it pages at the minimum.

``wearable.sos`` is ignored: it goes from the profile to the spool directly, never
waiting for analysis.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from edge.wearables.settings import AnalysisSettings
from schemas.vocabulary import EventType, Metric
from schemas.wire import Event, EventData, Reading

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Buckets = npt.NDArray[np.int64]

MAD_TO_SIGMA = 1.4826
"""Makes a median absolute deviation comparable to a standard deviation (normal data)."""
MIN_CURRENT_SHARE = 0.5
"""A band's heart rate is judged once its current window is at least this much covered,
so one reading of a band just put on (the sensor still settling) decides nothing."""

FINDING_TYPES = (
    EventType.WEARABLE_HEART_RATE_ABNORMAL,
    EventType.WEARABLE_INACTIVITY,
    EventType.WEARABLE_FALL,
)


@dataclass(frozen=True, slots=True)
class Finding:
    """Something the analysis concluded about one band; the agent sends it as an event."""

    device_id: str
    type: EventType
    ts: datetime
    data: EventData


@dataclass(slots=True)
class _FallWindow:
    """A suspected fall waiting for its wearer to get up (epoch seconds)."""

    start: float
    end: float
    steps_ref: float
    """Steps the band had counted by the impact; NaN while unknown."""
    still_s: float = 0.0
    """Seconds of the window with the wearer known to be still, from closed segments."""


def _overlap(start: float, end: float, window_start: float, window_end: float) -> float:
    return max(0.0, min(end, window_end) - max(start, window_start))


def _shown_crossing(value: float, threshold: float, high: bool) -> tuple[float, float]:
    """Round a crossing to 0.1 so that the stored pair still shows the crossing.

    Plain rounding prints 94.02 above a threshold of 93.98 as 94.0 over 94.0, which
    reads as a false alarm to whoever opens the event; then the threshold is shown
    0.1 on its own side of the value (off by less than 0.1), and the value as measured.
    """
    shown, limit = round(value, 1), round(threshold, 1)
    if high and shown <= limit:
        limit = round(shown - 0.1, 1)
    elif not high and shown >= limit:
        limit = round(shown + 0.1, 1)
    return shown, limit


def _row_medians(values: Floats) -> Floats:
    """Median of each row with NaNs left out; NaN for a row without a number.

    ``np.nanmedian`` falls back to a Python loop over rows once rows have 600 columns
    (a 6 h baseline of 30 s buckets has 720), and warns about empty rows; sorting once
    (NaNs sort last) and picking the middle of each row's numbers does neither.
    """
    ordered = np.sort(values, axis=1)
    counts = np.count_nonzero(~np.isnan(values), axis=1)
    low = np.take_along_axis(ordered, np.maximum((counts - 1) // 2, 0)[:, None], axis=1)
    high = np.take_along_axis(ordered, (counts // 2)[:, None], axis=1)
    return np.where(counts > 0, (low[:, 0] + high[:, 0]) / 2, np.nan)


class WearableAnalysis:
    """The analysis of a fixed set of bands (the gateway's configured wearables).

    Attributes read by /metrics: ``findings_by_type`` (findings returned, per event
    type) and ``recovered_falls`` (suspected falls the wearer got up from).
    """

    def __init__(self, settings: AnalysisSettings, device_ids: Sequence[str]) -> None:
        self.settings = settings
        self._ids = list(dict.fromkeys(device_ids))
        self._index = {device_id: band for band, device_id in enumerate(self._ids)}
        bands = len(self._ids)
        self._baseline_buckets = math.ceil(settings.baseline_window_s / settings.bucket_s)
        # Enough buckets for the baseline, the current window and the bucket each
        # straddles, so neither ever reads a slot the ring has reused.
        self._slots = (
            self._baseline_buckets + math.ceil(settings.current_window_s / settings.bucket_s) + 2
        )
        self._head = -1
        """The newest bucket the ring holds (epoch seconds // bucket_s); -1 before any."""
        self._sum: Floats = np.zeros((bands, self._slots))
        """Heart rate x seconds per band and bucket, from segments closed by a reading."""
        self._time: Floats = np.zeros((bands, self._slots))
        self._hr: Floats = np.full(bands, np.nan)
        """The heart rate each band holds now (NaN: never seen, or not worn)."""
        self._hr_ts: Floats = np.full(bands, np.nan)
        self._hr_flagged: Bools = np.zeros(bands, dtype=bool)
        self._baseline_end: int | None = None
        self._median: Floats = np.full(bands, np.nan)
        self._spread: Floats = np.full(bands, np.nan)
        self._enough: Bools = np.zeros(bands, dtype=bool)
        self._motion: Floats = np.full(bands, np.nan)
        self._motion_ts: Floats = np.full(bands, np.nan)
        self._steps: Floats = np.full(bands, np.nan)
        self._active_ts: Floats = np.full(bands, np.nan)
        """When each band last showed activity, or was first heard from."""
        self._active_waking: Floats = np.full(bands, np.nan)
        """The same moment as a count of waking-hours seconds (``_waking_s``)."""
        self._inactive_flagged: Bools = np.zeros(bands, dtype=bool)
        self._falls: dict[int, _FallWindow] = {}
        self._zone = settings.zone
        self._wake_start, wake_end = settings.waking_span_s
        self._waking_len = wake_end - self._wake_start
        self.findings_by_type: dict[EventType, int] = dict.fromkeys(FINDING_TYPES, 0)
        self.recovered_falls = 0

    def observe(self, readings: Sequence[Reading], events: Sequence[Event]) -> None:
        """Take in what the bands sent; items of other devices and metrics are ignored.

        Events go first, so a fall flag and the readings of the same notification
        (same ``ts``) are taken as the impact and what the band saw up to it.
        """
        for event in events:
            band = self._index.get(event.device)
            if (
                band is not None
                and event.type == EventType.WEARABLE_FALL_SUSPECTED
                and band not in self._falls
            ):
                start = event.ts.timestamp()
                self._falls[band] = _FallWindow(
                    start, start + self.settings.fall_confirm_s, float(self._steps[band])
                )
        for reading in readings:
            band = self._index.get(reading.device)
            if band is None:
                continue
            if reading.metric == Metric.HEART_RATE:
                self._heart_rate(band, reading.ts.timestamp(), reading.value)
            elif reading.metric == Metric.MOTION:
                self._motion_level(band, reading.ts.timestamp(), reading.value)
            elif reading.metric == Metric.STEPS:
                self._step_count(band, reading.ts.timestamp(), reading.value)

    def tick(self, now: datetime) -> list[Finding]:
        """Findings due at ``now`` (an aware datetime), for every band at once."""
        t = now.timestamp()
        findings = [
            *self._heart_rate_findings(now, t),
            *self._inactivity_findings(now, t),
            *self._fall_findings(t),
        ]
        for finding in findings:
            self.findings_by_type[finding.type] += 1
        return findings

    def _heart_rate(self, band: int, t: float, value: float) -> None:
        last_ts = float(self._hr_ts[band])
        if t < last_ts:
            return
        held = float(self._hr[band])
        if not math.isnan(held):
            self._accumulate(band, last_ts, min(t, last_ts + self.settings.hold_s), held)
        self._hr[band] = value if value > 0 else np.nan
        self._hr_ts[band] = t

    def _accumulate(self, band: int, start: float, end: float, value: float) -> None:
        """Add a closed segment of a held heart rate to the buckets it spans."""
        size = self.settings.bucket_s
        last = math.ceil(end / size) - 1
        self._advance(last)
        for bucket in range(max(int(start // size), self._head - self._slots + 1), last + 1):
            seconds = _overlap(start, end, bucket * size, (bucket + 1) * size)
            if seconds > 0:
                self._sum[band, bucket % self._slots] += value * seconds
                self._time[band, bucket % self._slots] += seconds

    def _advance(self, bucket: int) -> None:
        """Make ``bucket`` the ring's newest, emptying the slots it reuses."""
        if bucket > self._head:
            first = max(self._head + 1, bucket - self._slots + 1)
            reused = np.arange(first, bucket + 1) % self._slots
            self._sum[:, reused] = 0.0
            self._time[:, reused] = 0.0
            self._head = bucket

    def _motion_level(self, band: int, t: float, value: float) -> None:
        last_ts = float(self._motion_ts[band])
        if t < last_ts:
            return
        still_max = self.settings.motion_still_max
        fall = self._falls.get(band)
        held = float(self._motion[band])
        if not math.isnan(held):
            held_until = min(t, last_ts + self.settings.hold_s)
            if held > still_max:
                self._set_active(band, held_until)
            elif fall is not None:
                fall.still_s += _overlap(last_ts, held_until, fall.start, fall.end)
        if value > still_max or math.isnan(self._active_ts[band]):
            # A band first heard from starts counting stillness now: the gateway cannot
            # know what happened before it started.
            self._set_active(band, t)
        self._motion[band] = value
        self._motion_ts[band] = t
        getting_up = value > self.settings.fall_recovery_motion
        if fall is not None and getting_up and fall.start < t <= fall.end:
            self._recovered(band)

    def _step_count(self, band: int, t: float, value: float) -> None:
        # Steps restart at local midnight: a smaller count is a new day, not activity.
        if value > self._steps[band]:
            self._set_active(band, t)
        self._steps[band] = value
        fall = self._falls.get(band)
        if fall is not None and t <= fall.end:
            if t <= fall.start or math.isnan(fall.steps_ref):
                fall.steps_ref = value
            elif value > fall.steps_ref:
                self._recovered(band)

    def _set_active(self, band: int, t: float) -> None:
        if not t <= self._active_ts[band]:  # NaN, never active, compares false
            self._active_ts[band] = t
            self._active_waking[band] = self._waking_s(t)
            self._inactive_flagged[band] = False

    def _recovered(self, band: int) -> None:
        del self._falls[band]
        self.recovered_falls += 1

    def _waking_s(self, t: float) -> float:
        """Waking-hours seconds from a fixed origin to ``t``; differences of two are the
        waking time between them (local wall-clock hours, DST days included)."""
        local = datetime.fromtimestamp(t, self._zone)
        of_day = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        today = min(max(of_day - self._wake_start, 0.0), self._waking_len)
        return local.toordinal() * self._waking_len + today

    def _with_held(self, buckets: Buckets, t: float) -> tuple[Floats, Floats]:
        """Heart rate x seconds and seconds per band in ``buckets``, with each band's
        held value up to ``t`` (its open segment) added in."""
        size = self.settings.bucket_s
        stored = buckets > self._head - self._slots
        slots = buckets % self._slots
        starts = buckets * size
        held = np.isfinite(self._hr)
        seg_end = np.minimum(self._hr_ts + self.settings.hold_s, t)
        overlap = np.minimum(seg_end[:, None], starts + size) - np.maximum(
            self._hr_ts[:, None], starts
        )
        overlap = np.where(held[:, None] & (overlap > 0), overlap, 0.0)
        times = np.where(stored, self._time[:, slots], 0.0) + overlap
        sums = (
            np.where(stored, self._sum[:, slots], 0.0)
            + overlap * np.where(held, self._hr, 0.0)[:, None]
        )
        return sums, times

    def _update_baseline(self, end: int, t: float) -> None:
        """Median and spread of the bucket means in the baseline window ending at
        bucket ``end`` (excluded); done once per bucket, as the window moves."""
        settings = self.settings
        buckets = np.arange(end - self._baseline_buckets, end, dtype=np.int64)
        sums, times = self._with_held(buckets, t)
        means = np.divide(sums, times, out=np.full_like(sums, np.nan), where=times > 0)
        self._median = _row_medians(means)
        mad = _row_medians(np.abs(means - self._median[:, None]))
        self._spread = np.maximum(MAD_TO_SIGMA * mad, settings.min_spread_bpm)
        self._enough = (times.sum(axis=1) >= settings.baseline_min_s) & np.isfinite(self._median)
        self._baseline_end = end

    def _heart_rate_findings(self, now: datetime, t: float) -> list[Finding]:
        settings = self.settings
        size = settings.bucket_s
        self._advance(int(t // size))
        window_start = t - settings.current_window_s
        if self._baseline_end != int(window_start // size):
            self._update_baseline(int(window_start // size), t)

        # Buckets are taken as uniform inside: the one the window starts in counts
        # for the share of its observed part that lies in the window.
        recent = np.arange(int(window_start // size), int(t // size) + 1, dtype=np.int64)
        sums, times = self._with_held(recent, t)
        starts = recent * size
        observed = np.minimum(starts + size, t) - starts
        inside = np.minimum(starts + size, t) - np.maximum(starts, window_start)
        share = np.divide(inside, observed, out=np.zeros_like(observed), where=observed > 0)
        current_time = times @ share
        current = np.divide(
            sums @ share,
            current_time,
            out=np.full_like(current_time, np.nan),
            where=current_time >= MIN_CURRENT_SHARE * settings.current_window_s,
        )

        reach = settings.k * self._spread
        upper, lower = self._median + reach, self._median - reach
        above_limit = current > settings.absolute_high_bpm
        below_limit = current < settings.absolute_low_bpm
        above_own = self._enough & (current > upper)
        below_own = self._enough & (current < lower)
        abnormal = above_limit | below_limit | above_own | below_own
        top = np.where(
            self._enough, np.minimum(upper, settings.absolute_high_bpm), settings.absolute_high_bpm
        )
        bottom = np.where(
            self._enough, np.maximum(lower, settings.absolute_low_bpm), settings.absolute_low_bpm
        )
        margin = settings.clear_margin_bpm
        back_inside = (current <= top - margin) & (current >= bottom + margin)
        new = abnormal & ~self._hr_flagged
        self._hr_flagged = (self._hr_flagged | abnormal) & ~back_inside

        findings = []
        for band in np.flatnonzero(new).tolist():
            high = bool(above_limit[band] or above_own[band])
            if above_limit[band]:
                threshold = settings.absolute_high_bpm
                reason = f"above the absolute limit {threshold:g}"
            elif below_limit[band]:
                threshold = settings.absolute_low_bpm
                reason = f"below the absolute limit {threshold:g}"
            else:
                threshold = float(upper[band] if high else lower[band])
                reason = (
                    f"{'above' if high else 'below'} the personal baseline "
                    f"{self._median[band]:.0f} ± {reach[band]:.0f} 1/min"
                )
            value, threshold = _shown_crossing(float(current[band]), threshold, high)
            data = EventData(value=value, threshold=threshold, reason=reason)
            findings.append(
                Finding(self._ids[band], EventType.WEARABLE_HEART_RATE_ABNORMAL, now, data)
            )
        return findings

    def _inactivity_findings(self, now: datetime, t: float) -> list[Finding]:
        settings = self.settings
        waking_now = self._waking_s(t)
        heard = (t - self._motion_ts) <= settings.hold_s
        moving = heard & (self._motion > settings.motion_still_max)
        self._active_ts[moving] = t
        self._active_waking[moving] = waking_now
        self._inactive_flagged[moving] = False

        local = now.astimezone(self._zone)
        of_day = local.hour * 3600 + local.minute * 60 + local.second
        if not 0 <= of_day - self._wake_start < self._waking_len:
            return []
        worn = np.isfinite(self._hr) & ((t - self._hr_ts) <= settings.hold_s)
        still_waking = waking_now - self._active_waking
        due = heard & worn & ~self._inactive_flagged & (still_waking >= settings.inactivity_after_s)
        self._inactive_flagged |= due
        findings = []
        for band in np.flatnonzero(due).tolist():
            since = datetime.fromtimestamp(float(self._active_ts[band]), self._zone)
            data = EventData(
                duration_s=round(t - float(self._active_ts[band]), 1),
                threshold=settings.inactivity_after_s,
                reason=f"no movement or steps since {since:%m-%d %H:%M} local time: "
                f"{still_waking[band] / 3600:.1f} h of waking time",
            )
            findings.append(Finding(self._ids[band], EventType.WEARABLE_INACTIVITY, now, data))
        return findings

    def _fall_findings(self, t: float) -> list[Finding]:
        settings = self.settings
        findings = []
        for band in [band for band, fall in self._falls.items() if fall.end <= t]:
            fall = self._falls.pop(band)
            held = float(self._motion[band])
            if held <= settings.motion_still_max:
                held_from = float(self._motion_ts[band])
                fall.still_s += _overlap(
                    held_from, held_from + settings.hold_s, fall.start, fall.end
                )
            still = min(fall.still_s / settings.fall_confirm_s, 1.0)
            floor = settings.fall_min_confidence
            data = EventData(
                duration_s=round(fall.still_s, 1),
                confidence=round(floor + (1 - floor) * still, 2),
                reason=f"not up {settings.fall_confirm_s:g} s after the impact, "
                f"seen still for {fall.still_s:.0f} s of them",
            )
            ts = datetime.fromtimestamp(fall.end, UTC)
            findings.append(Finding(self._ids[band], EventType.WEARABLE_FALL, ts, data))
        return findings
