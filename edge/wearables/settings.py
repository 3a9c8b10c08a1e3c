"""Parameters of the wearable analysis, from the gateway config's ``wearables`` section.

Every duration is in seconds, so tests can compress hours into seconds. Example::

    wearables:
      inactivity_after_s: 14400
      waking_hours: "07:00-22:00"
      timezone: Asia/Shanghai
"""

from datetime import time
from typing import Annotated, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.local_time import TimeZoneName

MAX_BASELINE_BUCKETS = 2880
"""Each band keeps two float64 per bucket (16 bytes): 2,880 buckets (48 h of 60 s
buckets) is 23 MB for 500 bands, about what a gateway box can spare."""


class AnalysisSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0,
        description="Heart rate is averaged per bucket of this length; the personal "
        "baseline is the median of these bucket means.",
    )
    baseline_window_s: Annotated[float, Field(gt=0, le=7 * 86400)] = Field(
        default=6 * 3600.0,
        description="How far back the personal baseline looks, before the current window.",
    )
    baseline_min_s: Annotated[float, Field(ge=0, le=7 * 86400)] = Field(
        default=1800.0,
        description="Seconds of heart rate the baseline window must hold before the "
        "personal baseline is used; until then only the absolute limits apply.",
    )
    current_window_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=120.0,
        description="The heart rate judged is the mean over this many seconds up to now.",
    )
    k: Annotated[float, Field(gt=0, le=20)] = Field(
        default=4.0,
        description="How many robust spreads (1.4826 x MAD) from the personal median "
        "count as abnormal.",
    )
    min_spread_bpm: Annotated[float, Field(ge=0, le=50)] = Field(
        default=5.0,
        description="Floor of the robust spread, so a very steady baseline does not make "
        "a few beats per minute abnormal.",
    )
    absolute_low_bpm: Annotated[float, Field(gt=0, le=100)] = Field(
        default=40.0, description="Below this the heart rate is abnormal whatever the baseline."
    )
    absolute_high_bpm: Annotated[float, Field(ge=100, le=250)] = Field(
        default=150.0, description="Above this the heart rate is abnormal whatever the baseline."
    )
    clear_margin_bpm: Annotated[float, Field(ge=0, le=50)] = Field(
        default=5.0,
        description="An abnormal heart rate counts as normal again, and can be reported "
        "again later, only once it is this far back inside its limits.",
    )
    hold_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=330.0,
        description="How long a reading stands for its value when none follows. Bands "
        "report by exception: a value within its deadband is sent again only after "
        "the profile's heartbeat_s (300 s in the bundled profiles), so keep this a "
        "little above it.",
    )
    inactivity_after_s: Annotated[float, Field(gt=0, le=7 * 86400)] = Field(
        default=14400.0,
        description="Waking-hours seconds without movement or steps that make an "
        "inactivity finding; 14400 matches the cloud's inactivity rule.",
    )
    motion_still_max: Annotated[int, Field(ge=0, le=255)] = Field(
        default=20, description="Motion level (0-255) at or below which the wearer is still."
    )
    waking_hours: Annotated[str, Field(pattern=r"^\d\d:\d\d-\d\d:\d\d$")] = Field(
        default="07:00-22:00",
        description="Local hours (HH:MM-HH:MM, not across midnight) in which stillness "
        "counts toward inactivity and inactivity is reported.",
    )
    timezone: TimeZoneName = Field(
        default="Asia/Shanghai", description="IANA time zone of waking_hours."
    )
    fall_confirm_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=30.0,
        description="After the band flags a suspected fall, the wearer must get up "
        "within this long or the fall is confirmed.",
    )
    fall_recovery_motion: Annotated[int, Field(ge=0, le=255)] = Field(
        default=60,
        description="Motion level above which the wearer counts as getting up after a "
        "suspected fall (steps taken count too).",
    )
    fall_min_confidence: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.5,
        description="Confidence of a confirmed fall with no stillness observed (the "
        "band sent nothing); full stillness for the whole window gives 1.",
    )

    @field_validator("waking_hours")
    @classmethod
    def _hours_parse(cls, value: str) -> str:
        try:
            start, end = (time.fromisoformat(part) for part in value.split("-"))
        except ValueError:
            raise ValueError(f"{value!r} is not HH:MM-HH:MM") from None
        if start >= end:
            raise ValueError(f"{value!r} must start before it ends, on the same day")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.baseline_window_s / self.bucket_s > MAX_BASELINE_BUCKETS:
            raise ValueError(
                f"baseline_window_s / bucket_s must be at most {MAX_BASELINE_BUCKETS}: "
                "lengthen bucket_s or shorten baseline_window_s"
            )
        if self.baseline_min_s > self.baseline_window_s:
            raise ValueError("baseline_min_s must not exceed baseline_window_s")
        if self.absolute_low_bpm >= self.absolute_high_bpm:
            raise ValueError("absolute_low_bpm must be below absolute_high_bpm")
        if self.fall_recovery_motion < self.motion_still_max:
            raise ValueError("fall_recovery_motion must be at least motion_still_max")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def waking_span_s(self) -> tuple[float, float]:
        """``waking_hours`` as seconds after local midnight: (start, end)."""
        start, end = (time.fromisoformat(part) for part in self.waking_hours.split("-"))
        return (
            start.hour * 3600.0 + start.minute * 60.0,
            end.hour * 3600.0 + end.minute * 60.0,
        )
