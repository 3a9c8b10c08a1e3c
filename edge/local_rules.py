"""Fire linkage at the gateway: a smoke alarm releases the egress doors of its building.

Chinese fire code asks access control to release on fire linkage (GB 50116 §4.10.3,
GB 55024 §5.3.6), and a fire is no time to depend on the broker: this rule runs on
the gateway, from the events its pollers produce, and never touches MQTT. It writes
through ``DeviceActions``, so a fire release reaches a door exactly as a cloud
command's unlock would, and waits its turn on the door's bus like any request.

Use::

    linkage = FireLinkage(actions, config.devices, normalisers, emit=outbox.add_events)
    # in the pollers' sink, for every batch:  linkage.observe(events)
    # as a task beside the pollers:           await linkage.run(stop)

``observe`` only records what happened and wakes ``run``; the writes happen in
``run``'s task, one task per door, so doors on different buses are released at the
same time and a slow door never holds up the others or the poller that saw the alarm.
"""

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edge.actions import ActionError, DeviceActions
from edge.backoff import Backoff
from edge.config import DeviceConfig
from edge.errors import ConfigError, DeviceError
from edge.normalise import DeviceNormaliser
from schemas.profile import ActionName
from schemas.vocabulary import EventType
from schemas.wire import Event, EventData

log = logging.getLogger(__name__)

Emit = Callable[[list[Event]], None]

RETRY_FIRST_S = 0.5
"""A failed release is tried again after about this long, doubling up to RETRY_CAP_S."""
RETRY_CAP_S = 5.0
IDLE_WAIT_S = 60.0
"""Longest sleep of ``run`` when no door is due; ``observe`` wakes it sooner."""


@dataclass
class _Door:
    """One egress door and where its release stands in the current fire."""

    device_id: str
    building: str
    repeat_s: float | None
    due: float | None = None
    """Monotonic time of the next write; None while no fire holds it released."""
    writing: bool = False
    reported: bool = False
    """door.unlocked_by_fire was emitted for the current fire in its building.

    Set only after a write succeeded and the event was handed to ``emit``; until then
    the door is tried again, even after the building's smoke has cleared."""
    cause: str = ""
    backoff: Backoff = field(default_factory=lambda: Backoff(RETRY_FIRST_S, RETRY_CAP_S))
    failing: bool = False


class FireLinkage:
    """Releases egress doors while a smoke detector in their building is in alarm.

    On ``smoke.alarm`` from a device whose config names building B, every device of
    B with ``egress: true`` gets its profile's ``fire_release`` action at once, then
    again every ``repeat_s`` of that action (a controller's unlock pulse runs out;
    an action without ``repeat_s`` holds by itself and is written once). The first
    successful write of a fire emits ``door.unlocked_by_fire`` for that door, through
    the door's own normaliser so its ``seq`` continues. A write that fails is tried
    again after 0.5 s, backing off to 5 s, until one succeeds, even if the alarm
    clears meanwhile: a door the fire never released is released late rather than
    never. Nothing that goes wrong with one door (an unexpected exception from the
    write, the normaliser or ``emit``) escapes :meth:`run`: it is logged with the door,
    counted in ``internal_errors`` and the door is tried again with the same backoff.

    On ``smoke.cleared`` of the last detector in alarm in B, the repeats stop for the
    doors already released (reported); doors still failing keep being retried. The
    doors are deliberately not relocked: the fire code wants escape routes kept free
    until a person has checked the building and resets the system, and a detector
    that clears because the smoke drifted off, or because it burned, says nothing
    about whether people are still getting out. A controller's pulse runs out on its
    own (up to ``repeat_s`` later); a latching relay stays released until relocked by
    a command. For the same reason a detector going offline does not end its alarm.

    Not thread-safe: every method runs on the agent's event loop.
    """

    def __init__(
        self,
        actions: DeviceActions,
        devices: Sequence[DeviceConfig],
        normalisers: Mapping[str, DeviceNormaliser],
        emit: Emit,
        *,
        source: str = "config",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Check every egress door once, so a fault shows at start-up and not in a fire.

        Raises ConfigError (naming ``source`` and ``devices.N.egress``) for an egress
        door without a building, or whose profile has no ``fire_release`` action, or
        that is not among ``actions`` and ``normalisers``.

        Logs a warning (and does not raise) for a smoke detector (a device whose
        profile has a ``smoke.alarm`` rule) without a building, and for a building with
        smoke detectors and no egress doors: such a detector releases no door, which
        is legitimate (a plant room, a building whose doors are not on this gateway),
        but worth seeing at start-up rather than during a fire.
        """
        self._actions = actions
        self._normalisers = normalisers
        self._emit = emit
        self._clock = clock
        self._building_of = {device.id: device.building for device in devices if device.building}
        self._doors: dict[str, list[_Door]] = defaultdict(list)
        for index, device in enumerate(devices):
            if not device.egress:
                continue
            key = f"devices.{index}.egress"
            if not device.building:
                raise ConfigError(
                    source,
                    key,
                    f"egress door {device.id} needs a building to know which "
                    "smoke detectors release it; set building, or egress: false",
                )
            try:
                action = actions.action(device.id, ActionName.FIRE_RELEASE)
            except ActionError as exc:
                raise ConfigError(
                    source,
                    key,
                    f"{exc}; use a profile with a fire_release action, or set egress: false",
                ) from None
            if device.id not in normalisers:
                raise ConfigError(source, key, f"{device.id} is not polled by this gateway")
            door = _Door(device.id, device.building, action.repeat_s)
            self._doors[device.building].append(door)
        self._warn_unlinked_detectors(devices, normalisers, source)
        self._alarming: dict[str, set[str]] = defaultdict(set)
        self._wake = asyncio.Event()
        self.releases = 0
        """Fire-release writes the doors took, repeats included."""
        self.release_failures = 0
        """Fire-release writes that failed (each is retried)."""
        self.internal_errors = 0
        """Unexpected exceptions in one door's release (logged, the door retried)."""

    def _warn_unlinked_detectors(
        self,
        devices: Sequence[DeviceConfig],
        normalisers: Mapping[str, DeviceNormaliser],
        source: str,
    ) -> None:
        """Warn of smoke detectors whose alarm would release no door."""
        for index, device in enumerate(devices):
            normaliser = normalisers.get(device.id)
            if normaliser is None or not any(
                rule.type is EventType.SMOKE_ALARM for rule in normaliser.profile.events
            ):
                continue
            if not device.building:
                log.warning(
                    "%s devices.%d: smoke detector %s has no building: "
                    "its alarm will release no egress door",
                    source,
                    index,
                    device.id,
                )
            elif not self._doors.get(device.building):
                log.warning(
                    "%s devices.%d: smoke detector %s is in building %s, which has no "
                    "egress doors: its alarm will release no door",
                    source,
                    index,
                    device.id,
                    device.building,
                )

    def hand_over(self, successor: "FireLinkage") -> None:
        """Give ``successor`` (built for a new device list) this linkage's fire state.

        Called by the agent when a pushed config is switched in, after this linkage's
        ``run`` stopped and before ``successor``'s starts, with nothing awaited in
        between: every event this linkage observed, those read while the switch was
        under way included, is in what it hands over, so none needs replaying.

        - Counters carry on, so /metrics never sees them fall.
        - A detector in alarm that the new list still has (under the building it now
          names) keeps its building in alarm: it will not say ``smoke.alarm`` again, so
          a fresh linkage would never release that building's doors.
        - A door that stays an egress door in the same building keeps its release as
          it stands: still being retried, repeated every ``repeat_s`` while the alarm
          lasts, or done. A door that moved to another building keeps only a release
          that has not succeeded yet: a door the fire never released is released late
          rather than never.
        - A door of a building in alarm that has no release under way (added by the
          new list, or made an egress door) is released at once, as at an alarm's start.
        - A released door whose building is no longer in alarm, or whose action now
          holds by itself, is written no more.
        """
        successor.releases = self.releases
        successor.release_failures = self.release_failures
        successor.internal_errors = self.internal_errors
        for detectors in self._alarming.values():
            for detector in detectors:
                building = successor._building_of.get(detector)
                if building is not None:
                    successor._alarming[building].add(detector)
        before = {door.device_id: door for doors in self._doors.values() for door in doors}
        now = successor._clock()
        for building, doors in successor._doors.items():
            in_alarm = successor._alarming.get(building)
            for door in doors:
                old = before.get(door.device_id)
                pending = old is not None and old.due is not None and not old.reported
                if old is not None and (old.building == building or pending):
                    door.due, door.reported, door.cause = old.due, old.reported, old.cause
                    door.backoff, door.failing = old.backoff, old.failing
                if in_alarm and door.due is None and not door.reported:
                    door.due = now
                    door.cause = f"smoke.alarm at {min(in_alarm)}"
                    door.backoff.reset()
                elif door.reported and (not in_alarm or door.repeat_s is None):
                    door.due = None
        successor._wake.set()

    @property
    def buildings_in_alarm(self) -> list[str]:
        """Buildings with at least one smoke detector in alarm, sorted."""
        return sorted(building for building, detectors in self._alarming.items() if detectors)

    def observe(self, events: Sequence[Event]) -> None:
        """Take note of a batch of events from the pollers; never blocks, never raises.

        Only ``smoke.alarm`` and ``smoke.cleared`` matter; the writes they call for
        happen in :meth:`run`.
        """
        for event in events:
            if event.type is EventType.SMOKE_ALARM:
                self._alarm(event.device)
            elif event.type is EventType.SMOKE_CLEARED:
                self._cleared(event.device)

    def _alarm(self, detector: str) -> None:
        building = self._building_of.get(detector)
        if building is None:
            log.error(
                "smoke.alarm at %s, which has no building in the config: no door released", detector
            )
            return
        doors = self._doors.get(building, [])
        if not doors:
            log.warning("smoke.alarm at %s: building %s has no egress doors", detector, building)
        alarming = self._alarming[building]
        starts = not alarming
        alarming.add(detector)
        if not starts:
            return
        log.warning(
            "smoke.alarm at %s: releasing %d egress doors of building %s",
            detector,
            len(doors),
            building,
        )
        now = self._clock()
        for door in doors:
            door.due = now
            door.reported = False
            door.cause = f"smoke.alarm at {detector}"
            door.backoff.reset()
        self._wake.set()

    def _cleared(self, detector: str) -> None:
        building = self._building_of.get(detector)
        alarming = self._alarming.get(building) if building else None
        if building is None or not alarming or detector not in alarming:
            return
        alarming.discard(detector)
        if alarming:
            return
        log.warning(
            "smoke cleared in building %s: egress doors stay released until reset", building
        )
        for door in self._doors.get(building, []):
            if door.reported or door.due is None:
                door.due = None
            else:
                log.warning(
                    "fire release of %s has not succeeded yet: still trying after the "
                    "smoke cleared",
                    door.device_id,
                )

    async def run(self, stop: asyncio.Event) -> None:
        """Perform the releases that fall due until ``stop`` is set.

        Each write runs as a task of its own; on stop the writes in flight finish
        (each is bounded by its bus timeout) before this returns.
        """
        async with asyncio.TaskGroup() as writes:
            while not stop.is_set():
                now = self._clock()
                next_due = now + IDLE_WAIT_S
                for doors in self._doors.values():
                    for door in doors:
                        if door.due is None or door.writing:
                            continue
                        if door.due <= now:
                            door.writing = True
                            writes.create_task(
                                self._release(door), name=f"fire release {door.device_id}"
                            )
                        else:
                            next_due = min(next_due, door.due)
                self._wake.clear()
                await self._sleep(stop, next_due - now)

    async def _sleep(self, stop: asyncio.Event, timeout_s: float) -> None:
        waits = {
            asyncio.create_task(self._wake.wait(), name="fire linkage wake"),
            asyncio.create_task(stop.wait(), name="fire linkage stop"),
        }
        try:
            await asyncio.wait(
                waits, timeout=max(timeout_s, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()

    async def _release(self, door: _Door) -> None:
        """One fire-release write of ``door``; sets when the next one is due.

        Never raises (but for cancellation): the task runs in ``run``'s TaskGroup, and
        an exception escaping it would end the linkage during a fire.
        """
        try:
            try:
                await self._actions.perform(door.device_id, ActionName.FIRE_RELEASE)
            except (DeviceError, ActionError) as exc:
                self._failed(door, exc)
            else:
                self._released(door)
        except Exception as exc:
            # The outer boundary of a write task: whatever stops one door's release
            # (the write, the event, emit) must not stop the others, nor this door's
            # next try.
            self._internal_error(door, exc)
        finally:
            door.writing = False
            self._wake.set()

    def _internal_error(self, door: _Door, exc: Exception) -> None:
        self.internal_errors += 1
        log.error(
            "fire release of %s (%s): unexpected error %r; trying again",
            door.device_id,
            door.cause,
            exc,
            exc_info=exc,
        )
        door.failing = True
        try:
            self._schedule(door, door.backoff.next_delay())
        except Exception:
            log.exception("fire release of %s: cannot reschedule", door.device_id)
            door.due = self._clock() + RETRY_CAP_S

    def _failed(self, door: _Door, exc: Exception) -> None:
        self.release_failures += 1
        if not door.failing:
            log.error(
                "fire release of %s (%s) failed: %s; trying again within %.1f-%.0f s",
                door.device_id,
                door.cause,
                exc,
                RETRY_FIRST_S,
                RETRY_CAP_S,
            )
        door.failing = True
        self._schedule(door, door.backoff.next_delay())

    def _released(self, door: _Door) -> None:
        self.releases += 1
        if door.failing:
            log.warning("fire release of %s succeeded after failures", door.device_id)
        door.failing = False
        door.backoff.reset()
        if not door.reported:
            event = self._normalisers[door.device_id].event(
                EventType.DOOR_UNLOCKED_BY_FIRE, datetime.now(UTC), EventData(reason=door.cause)
            )
            self._emit([event])
            door.reported = True
        self._schedule(door, door.repeat_s)

    def _schedule(self, door: _Door, delay_s: float | None) -> None:
        """Set the door's next write ``delay_s`` from now, or none if it is done.

        A door is done once released and reported, when its action holds by itself
        (no ``repeat_s``) or its building's fire is over. A door not yet released
        keeps being tried after the fire is over.
        """
        over = not self._alarming.get(door.building)
        if delay_s is None or (over and door.reported):
            door.due = None
        else:
            door.due = self._clock() + delay_s
