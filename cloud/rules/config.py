"""The rule file: which events open which incidents, with per-community overrides.

Rules are data (``cloud/rules/rules.yaml``, or the file ``ANJU_RULES_FILE`` names),
validated once at start-up into ``RuleSet``; a malformed file raises ``RulesError``
naming the rule and the field, before any event is evaluated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import time
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from cloud.errors import CloudError
from schemas.vocabulary import DeviceKind, EventType
from schemas.wire import EventData

RULES_FILE_VAR: Final = "ANJU_RULES_FILE"

RuleKind = Literal["event", "at_least", "burst", "schedule", "tailgating", "resident", "liveness"]


class RulesError(CloudError):
    """The rule file cannot be used; names the file and what is wrong with it."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"rules {source}: {problem}")


class Rule(BaseModel):
    """One rule; which fields apply depends on ``kind`` (see rules.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RuleKind
    trigger: EventType | None = None
    incident: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
    priority: Annotated[int, Field(ge=1, le=3)]
    enabled: bool = True
    field: str | None = None
    value: float | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    within_s: Annotated[float, Field(gt=0)] | None = None
    hours: Annotated[str, Field(pattern=r"^\d\d:\d\d-\d\d:\d\d$")] | None = None
    zones: tuple[str, ...] = ()
    device_kind: DeviceKind | Literal["gateway"] | None = None
    after_s: Annotated[float, Field(gt=0)] | None = None
    per: Literal["device", "building"] = "device"
    """What repeats join on: the device's incident, or its building's (a fire)."""
    lateness_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    """Burst and tailgating only: how long after its window closes an event may still
    arrive and count (a later batch, another worker's group); the rule decides that
    much after the window, so it is also the delay it adds (docs/rules.md)."""

    def model_post_init(self, context: Any, /) -> None:
        needs: dict[str, tuple[str, ...]] = {
            "event": ("trigger",),
            "at_least": ("trigger", "field", "value"),
            "burst": ("trigger", "count", "within_s"),
            "schedule": ("trigger",),
            "tailgating": ("trigger", "within_s"),
            "resident": ("trigger",),
            "liveness": ("device_kind", "after_s"),
        }
        missing = [name for name in needs[self.kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} rule needs {', '.join(missing)}")
        if self.kind == "liveness" and self.trigger is not None:
            raise ValueError("a liveness rule is swept, not triggered: drop 'trigger'")
        if self.kind == "schedule" and self.hours is None and not self.zones:
            raise ValueError("a schedule rule needs hours, zones or both")
        if self.hours is not None:
            for part in self.hours.split("-"):
                try:
                    time.fromisoformat(part)
                except ValueError:
                    raise ValueError(f"hours {self.hours!r}: {part} is not a time of day") from None
        if self.field is not None and self.field not in EventData.__struct_fields__:
            known = ", ".join(EventData.__struct_fields__)
            raise ValueError(f"field {self.field!r} is not in event data ({known})")

    @cached_property
    def closed_hours(self) -> tuple[time, time] | None:
        """``hours`` as (start, end) local times; the span may cross midnight."""
        if self.hours is None:
            return None
        start, end = self.hours.split("-")
        return time.fromisoformat(start), time.fromisoformat(end)


class Evacuation(BaseModel):
    """The incidents a fire opens for residents of its building who need help:
    ``after`` names the rule whose incidents are fires."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    after: str = "fire"
    incident: str = "evacuation_assistance"
    priority: Annotated[int, Field(ge=1, le=3)] = 1


class RuleSet(BaseModel):
    """Every rule, and each community's changes to them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = "Asia/Shanghai"
    rules: dict[str, Rule]
    evacuation: Evacuation = Evacuation()
    overrides: dict[str, dict[str, dict[str, Any]]] = {}
    _merged: dict[str, Mapping[str, Rule]] = PrivateAttr(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def incident_types(self) -> frozenset[str]:
        """Every incident type this rule set can open.

        Disabled rules count (an override may enable one for a community, and a rule's
        incidents outlive turning it off), and so do the names overrides give and the
        incident a fire brings for residents who need help to leave.
        """
        names = {rule.incident for rule in self.rules.values()}
        names.update(
            str(change["incident"])
            for changes in self.overrides.values()
            for change in changes.values()
            if "incident" in change
        )
        names.add(self.evacuation.incident)
        return frozenset(names)

    def model_post_init(self, context: Any, /) -> None:
        if self.evacuation.after not in self.rules:
            raise ValueError(
                f"evacuation follows rule {self.evacuation.after!r}, which is not there"
            )
        for community, changes in self.overrides.items():
            for name, change in changes.items():
                if name not in self.rules:
                    raise ValueError(f"override for {community} names no rule {name!r}")
                Rule.model_validate({**self.rules[name].model_dump(), **change})

    @cached_property
    def zone(self) -> ZoneInfo:
        """The local time zone of schedules."""
        return ZoneInfo(self.timezone)

    def for_community(self, community: str) -> Mapping[str, Rule]:
        """The rules as they apply in ``community`` (its overrides merged, disabled ones out)."""
        found = self._merged.get(community)
        if found is None:
            changes = self.overrides.get(community, {})
            rules = {
                name: Rule.model_validate({**rule.model_dump(), **changes[name]})
                if name in changes
                else rule
                for name, rule in self.rules.items()
            }
            found = {name: rule for name, rule in rules.items() if rule.enabled}
            self._merged[community] = found
        return found

    def triggered_by(self, event: EventType, community: str) -> list[tuple[str, Rule]]:
        """The enabled rules of ``community`` that react to ``event``, in file order."""
        return [(n, r) for n, r in self.for_community(community).items() if r.trigger == event]

    def sweeps(self, community: str) -> list[tuple[str, Rule]]:
        """The enabled liveness rules of ``community``."""
        return [(n, r) for n, r in self.for_community(community).items() if r.kind == "liveness"]


def load_rules(path: Path | None = None) -> RuleSet:
    """The rule set from ``path``, ``ANJU_RULES_FILE`` or the packaged rules.yaml.

    Raises RulesError naming the file for unreadable YAML or an invalid rule.
    """
    chosen = path or (Path(os.environ[RULES_FILE_VAR]) if os.environ.get(RULES_FILE_VAR) else None)
    source = str(chosen) if chosen else "cloud/rules/rules.yaml"
    try:
        text = (
            chosen.read_text(encoding="utf-8")
            if chosen
            else files("cloud.rules").joinpath("rules.yaml").read_text(encoding="utf-8")
        )
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(source, f"cannot read: {exc}") from None
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RulesError(source, f"{where}: {first['msg']}") from None
