"""The site's camera configuration, from the gateway config's ``cameras`` section.

A camera box knows its zones and lines by the short ids set on the box (Z1, L1); the
cloud's rules know places by name (rooftop) and doors by device id. This section
joins the two, per camera device. Example::

    cameras:
      timezone: Asia/Shanghai
      devices:
        cam-gate-01:
          zones:
            Z1: {name: rooftop}
            Z2: {name: lobby, armed: "22:00-06:00"}
          lines:
            L1: {door: gate-reader-01, name: gate}
"""

import re
from datetime import time
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator

from edge.local_time import TimeZoneName

ALWAYS = "always"

_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"
"""Device ids, as in the gateway config's ``devices``."""

BoxId = Annotated[
    str,
    # A box's zone 1 written unquoted in YAML is the integer 1; the box says "1".
    BeforeValidator(lambda value: str(value) if isinstance(value, int) else value),
    Field(pattern=r"^[A-Za-z0-9_-]{1,32}$"),
]
"""A zone or line id as the box reports it."""
PlaceName = Annotated[str, Field(pattern=_ID)]
"""A name the cloud's rules know (``rooftop``, ``plant-room``)."""


def parse_hours(hours: str) -> tuple[time, time]:
    """``"22:00-06:00"`` as (start, end) local times; raises ValueError naming the text."""
    try:
        if not re.fullmatch(r"\d\d:\d\d-\d\d:\d\d", hours):
            raise ValueError(hours)
        start, end = (time.fromisoformat(part) for part in hours.split("-"))
    except ValueError:
        raise ValueError(f"{hours!r} is not {ALWAYS!r} or HH:MM-HH:MM") from None
    if start == end:
        raise ValueError(f"{hours!r} is empty; write {ALWAYS!r} for all day")
    return start, end


class ZoneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: PlaceName = Field(description="The zone's name in the cloud's rules (rooftop).")
    armed: str = Field(
        default=ALWAYS,
        description="Local hours (HH:MM-HH:MM, may cross midnight) in which intrusion "
        "and loitering in the zone are reported; 'always' by default.",
    )

    _span: tuple[time, time] | None = PrivateAttr(default=None)

    @field_validator("armed")
    @classmethod
    def _hours_parse(cls, value: str) -> str:
        if value != ALWAYS:
            parse_hours(value)
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._span = None if self.armed == ALWAYS else parse_hours(self.armed)

    def armed_at(self, local: time) -> bool:
        """Whether the zone is armed at local time ``local`` (the end is excluded)."""
        if self._span is None:
            return True
        start, end = self._span
        return start <= local < end if start < end else local >= start or local < end


class LineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    door: Annotated[str, Field(pattern=_ID)] = Field(
        description="Device id of the door the line guards: the cloud checks the people "
        "crossing it against that door's access grants."
    )
    name: PlaceName | None = Field(
        default=None, description="The line's name in the cloud; default: the box's line id."
    )


class CameraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    zones: dict[BoxId, ZoneSettings] = Field(default_factory=dict)
    lines: dict[BoxId, LineSettings] = Field(default_factory=dict)


class CameraSiteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: TimeZoneName = Field(
        default="Asia/Shanghai", description="IANA time zone of armed hours."
    )
    devices: dict[Annotated[str, Field(pattern=_ID)], CameraSettings] = Field(
        default_factory=dict,
        description="Zones and lines of each camera device, by its id in 'devices'.",
    )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
