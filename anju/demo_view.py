"""What the demo shows while it runs: a live view in a terminal, and a timeline everywhere.

The view is drawn from the simulators, the agents' counters and what the API last
answered (``GET /incidents``, ``GET /webhooks/deliveries``, the wearer's
``GET /devices/{id}/readings``), so the queue on screen is the one a dispatcher sees,
the deliveries are the outbox's own rows and the heart rate is the one the cloud
stored. The timeline prints one line for each thing worth noticing (a door released,
an incident opened or escalated, a webhook delivered or failing, the wearer's heart
rate first reaching the cloud), above the live view in a terminal and as the whole
output in a log, where tables redrawn four times a second are no use; a log also gets
the heart rate every ``HEART_RATE_NOTE_S``, since it has no live view to show it.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from anju.demo_sites import CARE_BAND, SITES, SiteBand, site_device
from cloud.ingest.counters import IngestCounters
from edge.app import Agent
from firmware_sim.door_controller import DoorController
from firmware_sim.smoke_detector import SmokeDetector
from schemas.vocabulary import DeviceKind

DELIVERIES_SHOWN = 3
HEART_RATE_NOTE_S: Final = 10.0
"""How often a log (no live view) is told the wearer's heart rate."""


@dataclass(frozen=True)
class Wearer:
    """The resident the demo follows: their band, and their id as registered."""

    band: SiteBand
    community: str
    resident_id: int

    def __str__(self) -> str:
        return f"resident {self.resident_id} in {self.band.unit} ({self.band.device_id})"


@dataclass
class HeartRate:
    """The wearer's heart rate as the cloud stored it, read back through
    ``GET /devices/{id}/readings`` (raw readings, in time order)."""

    bpm: float | None = None
    measured_at: datetime | None = None
    """The reading's own time (when the gateway took it from the band)."""
    seen: int = 0
    """Readings read back so far."""

    def take(self, readings: list[dict[str, Any]]) -> None:
        """Follow ``readings`` (the API's ``readings``, oldest first, none seen before)."""
        for reading in readings:
            self.bpm = float(reading["value"])
            self.measured_at = datetime.fromisoformat(reading["ts"])
            self.seen += 1


class Demo:
    """The running demo: its simulators and agents, and what the API last answered."""

    def __init__(self, console: Console, started_at: float) -> None:
        self.console = console
        self.started_at = started_at
        self.detectors: dict[str, SmokeDetector] = {}
        self.doors: dict[str, DoorController] = {}
        self.agents: list[Agent] = []
        self.counters = IngestCounters()
        self.incidents: list[dict[str, Any]] = []
        """The queue, as ``GET /incidents`` last listed it."""
        self.deliveries: list[dict[str, Any]] = []
        """The newest webhook deliveries, as ``GET /webhooks/deliveries`` last listed them."""
        self.subscriptions = 0
        self.wearer: Wearer | None = None
        self.heart_rate = HeartRate()
        self.phase = "starting"
        self._heart_rate_noted: tuple[int, float] | None = None
        """Readings seen and the time when the heart rate last went on the timeline."""
        self._released: set[str] = set()
        self._levels: dict[int, int] = {}
        self._deliveries: dict[int, tuple[Any, ...]] = {}

    def note(self, text: str) -> None:
        """One line of the timeline, stamped with the seconds since the demo started."""
        self.console.print(f"[{time.monotonic() - self.started_at:5.1f} s] {text}", highlight=False)

    def follow(self) -> None:
        """Put on the timeline what changed since the last call."""
        for device_id, door in self.doors.items():
            if device_id in self._released or not door.strike_released:
                continue
            self._released.add(device_id)
            self.note(
                f"[bold green]egress door {device_id} released[/] by its gateway "
                f"(building {site_device(device_id).building}, strike open "
                f"{door.unlock_seconds_left} s)"
            )
        for incident in sorted(self.incidents, key=lambda i: int(i["id"])):
            level, known = incident["escalation_level"], self._levels.get(incident["id"])
            if known is None:
                flat = f", flat {incident['unit']}" if incident["unit"] else ""
                self.note(
                    f"incident {incident['id']} on the queue: {incident['type']} "
                    f"P{incident['priority']}, {incident['community']} "
                    f"building {incident['building']}{flat}"
                )
            elif level > known:
                self.note(
                    f"[bold yellow]incident {incident['id']} escalated[/] to level {level}: "
                    f"still {incident['status']}, P{incident['priority']}"
                )
            self._levels[incident["id"]] = level
        for delivery in sorted(self.deliveries, key=lambda d: int(d["id"])):
            self._follow_delivery(delivery)
        self._follow_heart_rate()

    def _follow_delivery(self, delivery: dict[str, Any]) -> None:
        state = (
            delivery["status"],
            delivery["attempts"],
            delivery["last_status_code"],
            delivery["last_error"],
        )
        if self._deliveries.get(delivery["id"]) == state:
            return
        self._deliveries[delivery["id"]] = state
        what = (
            f"webhook {delivery['event_type']} of incident {delivery['incident_id']} "
            f"to subscription {delivery['subscription_id']}"
        )
        if delivery["status"] == "delivered":
            self.note(
                f"[bold cyan]{what} delivered[/] ({_answer(delivery)}, "
                f"attempt {delivery['attempts']})"
            )
        elif delivery["status"] == "dead":
            self.note(
                f"[red]{what} is a dead letter[/] after {delivery['attempts']} attempts: "
                f"{_answer(delivery)}"
            )
        elif delivery["last_status_code"] is not None or delivery["last_error"]:
            self.note(
                f"[red]{what}: attempt {delivery['attempts']} failed[/] ({_answer(delivery)}); "
                "retried on the Standard Webhooks schedule"
            )

    def _follow_heart_rate(self) -> None:
        """The first reading to reach the cloud; then, in a log, the newest at most every
        ``HEART_RATE_NOTE_S`` when new ones came."""
        rate = self.heart_rate
        if self.wearer is None or rate.bpm is None:
            return
        now = time.monotonic()
        if self._heart_rate_noted is None:
            self.note(
                f"[bold magenta]heart rate of {self.wearer} reached the cloud[/]: "
                f"{rate.bpm:.0f} bpm (GET /devices/{self.wearer.band.device_id}/readings)"
            )
        elif (
            self.console.is_terminal
            or rate.seen == self._heart_rate_noted[0]
            or now - self._heart_rate_noted[1] < HEART_RATE_NOTE_S
        ):
            return
        else:
            self.note(f"heart rate of {self.wearer}: {self._heart_rate_text()}")
        self._heart_rate_noted = (rate.seen, now)

    def _heart_rate_text(self) -> str:
        """The latest stored heart rate, how old it is, and how many the API gave back."""
        rate = self.heart_rate
        if rate.bpm is None or rate.measured_at is None:
            return "none in the cloud yet"
        age = (datetime.now(UTC) - rate.measured_at).total_seconds()
        return f"[bold magenta]{rate.bpm:.0f} bpm[/] {age:.0f} s ago, {rate.seen} readings"

    def view(self) -> Group:
        """The whole live view: the data flow, the wearables, the buildings, the queue and
        the webhooks.

        Sized for an 80 x 24 terminal: one line per row, so the queue and the webhooks
        at the bottom are not cropped away.
        """
        return Group(
            self._flow(), self._wearables(), self._buildings(), self._queue(), self._webhooks()
        )

    def _flow(self) -> Table:
        grid = Table.grid()
        produced = sum(a.readings_produced + a.events_produced for a in self.agents)
        sent = sum(a.uplink.published_items for a in self.agents)
        releases = sum(a.linkage.releases for a in self.agents)
        ingest = self.counters.snapshot()
        grid.add_row(f"[bold]{self.phase}[/]")
        grid.add_row(
            f"edge: {produced} items produced, {sent} published, "
            f"{releases} fire-release writes to doors"
        )
        grid.add_row(
            f"cloud: {ingest['batches']} batches, {ingest['readings']} readings and "
            f"{ingest['events']} events stored, {ingest['quarantined']} quarantined, "
            f"{ingest['duplicates']} duplicates"
        )
        return grid

    def _wearables(self) -> Table:
        """Two lines: the bands their gateways hear, and the wearer's heart rate."""
        grid = Table.grid()
        if self.wearer is None:
            return grid
        heard = {
            d.device_id: d.answered > 0 and d.online for agent in self.agents for d in agent.devices
        }
        bands = [band for site in SITES for band in site.bands]
        care = [band for band in bands if band.profile == CARE_BAND]
        beacons = [band for band in bands if band.profile != CARE_BAND]
        grid.add_row(
            "wearables: "
            f"{sum(heard.get(b.device_id, False) for b in care)}/{len(care)} CB-300 care bands "
            f"connected, {sum(heard.get(b.device_id, False) for b in beacons)}/{len(beacons)} "
            "CB-100 beacons heard"
        )
        grid.add_row(f"{self.wearer}: heart rate {self._heart_rate_text()}")
        return grid

    def _buildings(self) -> Table:
        """One row per building: its detector and its egress doors, as the simulators stand."""
        online = {d.device_id: d.online for agent in self.agents for d in agent.devices}
        table = _table("Buildings", "community", "bldg", "smoke detector", "smoke", "egress doors")
        for site in SITES:
            for building, devices in site.buildings().items():
                for detector in (d for d in devices if d.kind is DeviceKind.SMOKE):
                    table.add_row(
                        site.community,
                        building,
                        detector.device_id,
                        self._smoke(detector.device_id, online),
                        self._doors_state([d.device_id for d in devices if d.egress], online),
                    )
        return table

    def _smoke(self, device_id: str, online: dict[str, bool]) -> str:
        if not online.get(device_id, True):
            return "[yellow]offline[/]"
        detector = self.detectors[device_id]
        reading = f"{detector.obscuration_pct_per_m:.2f} %/m"
        return f"[bold red]ALARM[/] {reading}" if detector.alarm else reading

    def _doors_state(self, door_ids: list[str], online: dict[str, bool]) -> str:
        """How many are released (and for how long yet), locked, or offline."""
        released = [d for d in door_ids if self.doors[d].strike_released]
        offline = sum(1 for d in door_ids if not online.get(d, True))
        parts = []
        if released:
            left = min(self.doors[d].unlock_seconds_left for d in released)
            parts.append(f"[bold green]{len(released)} RELEASED[/] {left} s")
        if len(door_ids) > len(released):
            parts.append(f"{len(door_ids) - len(released)} locked")
        if offline:
            parts.append(f"[yellow]{offline} offline[/]")
        return ", ".join(parts) or "none"

    def _queue(self) -> Table:
        table = _table(
            "Emergency queue (GET /incidents)",
            *("id", "type", "P", "status", "esc.", "community", "bldg", "device", "waiting"),
        )
        now = datetime.now(UTC)
        for incident in self.incidents:
            level = int(incident["escalation_level"])
            waited = now - datetime.fromisoformat(incident["opened_at"])
            table.add_row(
                str(incident["id"]),
                incident["type"],
                f"P{incident['priority']}",
                incident["status"],
                f"[bold yellow]{level}[/]" if level else "0",
                incident["community"],
                str(incident["building"] or ""),
                str(incident["device_id"] or ""),
                f"{waited.total_seconds():.0f} s",
            )
        return table

    def _webhooks(self) -> RenderableType:
        if not self.subscriptions:
            return Text(
                "Webhooks: no subscription yet. Point a receiver at this demo: "
                "docs/webhooks.md, 'Trying it with the demo'."
            )
        table = _table(
            f"Webhook deliveries (GET /webhooks/deliveries), {self.subscriptions} subscription(s)",
            *("id", "event", "incident", "sub.", "status", "tries", "answer"),
        )
        for delivery in self.deliveries[:DELIVERIES_SHOWN]:
            table.add_row(
                str(delivery["id"]),
                delivery["event_type"],
                str(delivery["incident_id"]),
                str(delivery["subscription_id"]),
                delivery["status"],
                str(delivery["attempts"]),
                _answer(delivery),
            )
        return table


def _table(title: str, *columns: str) -> Table:
    """A compact table: a rule under the header, no frame, one line per row."""
    table = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True, expand=True
    )
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


def _answer(delivery: dict[str, Any]) -> str:
    """What the receiver last answered: an HTTP status, or why there was no answer."""
    if delivery["last_status_code"] is not None:
        return f"HTTP {delivery['last_status_code']}"
    return str(delivery["last_error"] or "not tried yet")
