"""All the bands of one gateway on its one adapter: scanning, presence and connections.

Passive bands are only heard: every advertisement updates the band's presence and,
where the profile reads fields of the advertisement, becomes a sample, without a
connection. Bands with GATT points get a supervised connection each: subscribed to
their notifications, their read points read each poll interval, reconnected with
backoff when the link drops, and at most ``max_connections`` at once, taking turns
(``Slots``) when there are more. A band not heard (advertisement, notification or a
live link) for ``out_of_range_s`` has its presence point set to 0; it returns to 1
when the band is heard again.

Without an adapter the bus says so once, marks every band offline with the reason,
and keeps trying with backoff, so a dongle plugged in later is picked up.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from edge.backoff import Backoff
from edge.drivers.ble.band import BandPlan, Characteristic
from edge.drivers.ble.gatt import MalformedValue
from edge.drivers.ble.radio import Advertisement, Link, LinkFailed, Radio, RadioError
from edge.drivers.ble.settings import BleDriverSettings
from edge.drivers.ble.slots import Slots
from edge.drivers.contract import DeviceSpec, StreamingBus, StreamSink
from edge.errors import DeviceDisconnected, DeviceMalformed, DeviceUnreachable, PointError
from schemas.profile import Point

log = logging.getLogger(__name__)

SWEEP_S = 1.0
"""How often presence is checked."""
STOP_GRACE_S = 2.0
"""How long connections may take to wind down when the bus stops."""


class BleBus(StreamingBus):
    """Every configured band, through one ``Radio``."""

    def __init__(
        self,
        radio: Callable[[], Radio],
        devices: Sequence[DeviceSpec],
        settings: BleDriverSettings,
    ) -> None:
        self.name = "ble"
        self._make_radio = radio
        self._settings = settings
        self._devices = {device.device_id: device for device in devices}
        self._plans = [BandPlan.of(device) for device in devices]
        self._by_mac = {plan.mac: plan for plan in self._plans}
        self._heard_at: dict[str, float] = {}
        """Monotonic time each band was last heard, by MAC."""
        self._in_range: dict[str, bool] = {}
        self._linked: set[str] = set()
        self._advertised = {plan.mac: asyncio.Event() for plan in self._plans}
        """Set by each advertisement of a band: a band to connect to is in range."""
        self._sink: StreamSink | None = None
        self.advertisements = 0
        self.notifications = 0
        self.connects = 0
        self.slots = Slots(settings.max_connections)

    @property
    def connected(self) -> int:
        """Bands connected and subscribed now."""
        return len(self._linked)

    async def run(self, sink: StreamSink, stop: asyncio.Event) -> None:
        self._sink = sink
        backoff = Backoff(initial_s=2.0, cap_s=60.0)
        reported = False
        while not stop.is_set():
            radio = self._make_radio()
            try:
                await radio.open()
            except RadioError as exc:
                if not reported:
                    log.error("BLE: %s; %d band(s) offline until it is", exc, len(self._plans))
                    reported = True
                self._all_offline(DeviceUnreachable(radio.name, exc.problem))
                await _sleep(stop, backoff.next_delay())
                continue
            if reported:
                log.info("BLE: %s is up", radio.name)
                reported = False
            backoff.reset()
            problem = "the adapter was lost"
            try:
                await self._serve(radio, stop)
            except RadioError as exc:
                problem = exc.problem
            finally:
                await radio.stop_scan()
                await radio.close()
            if not stop.is_set():
                log.error("BLE: %s: %s; reopening it", radio.name, problem)
                self._all_offline(DeviceUnreachable(radio.name, problem))
                await _sleep(stop, backoff.next_delay())

    async def _serve(self, radio: Radio, stop: asyncio.Event) -> None:
        now = time.monotonic()
        for plan in self._plans:
            self._heard_at[plan.mac] = now  # a fresh grace period on every (re)open
        await radio.scan(self._heard)
        tasks = [asyncio.create_task(self._sweep(stop))]
        tasks += [
            asyncio.create_task(self._supervise(radio, plan, stop))
            for plan in self._plans
            if plan.connects
        ]
        try:
            await _first(stop, radio.lost)
            # Let the supervisors finish what they are doing: bumble's host fails on a
            # reply to an HCI command whose waiter was cancelled in the same instant.
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _heard(self, advertisement: Advertisement) -> None:
        plan = self._by_mac.get(advertisement.address)
        if plan is None:
            return
        self.advertisements += 1
        self._advertised[plan.mac].set()
        self._seen(plan)
        if not plan.advertised:
            return
        try:
            sample = plan.advertised_values(advertisement)
        except MalformedValue as exc:
            self._malformed(plan, exc)
            return
        if sample:
            self._deliver(plan.device_id, sample, _now())

    def _seen(self, plan: BandPlan) -> None:
        self._heard_at[plan.mac] = time.monotonic()
        if not self._in_range.get(plan.mac, False):
            self._in_range[plan.mac] = True
            if plan.presence is not None:
                self._deliver(plan.device_id, {plan.presence: 1}, _now())

    async def _sweep(self, stop: asyncio.Event) -> None:
        """Bands silent past the grace period are out of range, once per absence."""
        while not stop.is_set():
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for plan in self._plans:
                if plan.mac in self._linked:
                    self._heard_at[plan.mac] = now
                    continue
                silent = now - self._heard_at[plan.mac]
                if silent >= self._settings.out_of_range_s and self._in_range.get(plan.mac, True):
                    self._in_range[plan.mac] = False
                    log.info("%s: not heard for %.0f s: out of range", plan.device_id, silent)
                    if plan.presence is not None:
                        self._deliver(plan.device_id, {plan.presence: 0}, _now())

    async def _supervise(self, radio: Radio, plan: BandPlan, stop: asyncio.Event) -> None:
        """Keep one band connected, taking turns for a slot, reconnecting with backoff.

        A band is tried once it advertises (it is in range and connectable), or after
        ``reconnect_max_s`` in any case, so a band that walked away does not hold a
        slot with attempts that time out while others wait.
        """
        backoff = Backoff(initial_s=1.0, cap_s=self._settings.reconnect_max_s)
        advertised = self._advertised[plan.mac]
        while not stop.is_set():
            await _sleep(stop, self._settings.reconnect_max_s, advertised)
            advertised.clear()
            if stop.is_set():
                return
            await self.slots.acquire()
            try:
                failed = await self._session(radio, plan, stop)
            finally:
                self.slots.release()  # also when the bus is cancelled mid-connect
            if failed:
                await _sleep(stop, backoff.next_delay())
            else:
                backoff.reset()

    async def _session(self, radio: Radio, plan: BandPlan, stop: asyncio.Event) -> bool:
        """One connection to a band, held while it lasts; whether it failed (counted)."""
        device = self._devices[plan.device_id]
        try:
            link = await radio.connect(plan.mac, self._settings.connect_timeout_s)
        except LinkFailed as exc:
            self._fault(plan, DeviceUnreachable(str(device.address), exc.problem))
            return True
        self.connects += 1
        try:
            await self._hold(link, plan, device, stop)
        except LinkFailed as exc:
            self._fault(plan, DeviceDisconnected(str(device.address), exc.problem))
            return True
        finally:
            self._linked.discard(plan.mac)
            await link.close()
        return False

    async def _hold(
        self, link: Link, plan: BandPlan, device: DeviceSpec, stop: asyncio.Event
    ) -> None:
        """Subscribe, then read each poll interval until the link drops or it is
        another band's turn; raises LinkFailed."""
        for characteristic in plan.notified:
            await link.subscribe(*characteristic, self._notified(plan, characteristic))
        self._linked.add(plan.mac)
        self._seen(plan)
        since = time.monotonic()
        interval = device.interval_s
        while True:
            for characteristic in plan.read:
                value = await link.read(*characteristic)
                self._gatt(plan, characteristic, value)
            due = time.monotonic() + interval
            while time.monotonic() < due:
                await _sleep(stop, min(SWEEP_S, due - time.monotonic()), link.lost)
                if stop.is_set():
                    return
                if link.lost.is_set():
                    raise LinkFailed(plan.mac, "the band dropped the connection")
                if self.slots.contended and time.monotonic() - since >= self._settings.rotation_s:
                    self.slots.rotations += 1
                    return

    def _notified(self, plan: BandPlan, characteristic: Characteristic) -> Callable[[bytes], None]:
        def notified(value: bytes) -> None:
            self.notifications += 1
            self._heard_at[plan.mac] = time.monotonic()
            self._gatt(plan, characteristic, value)

        return notified

    def _gatt(self, plan: BandPlan, characteristic: Characteristic, value: bytes) -> None:
        try:
            samples = plan.gatt_values(characteristic, value, _now())
        except MalformedValue as exc:
            self._malformed(plan, exc)
            return
        for sample, ts in samples:
            self._deliver(plan.device_id, sample, ts)

    def _deliver(
        self, device_id: str, sample: dict[str, int | float | bool | str], ts: datetime
    ) -> None:
        if self._sink is not None:
            self._sink.sample(device_id, sample, ts)

    def _malformed(self, plan: BandPlan, exc: MalformedValue) -> None:
        self._fault(plan, DeviceMalformed(f"ble://{plan.mac}", str(exc)))

    def _fault(
        self, plan: BandPlan, error: DeviceUnreachable | DeviceDisconnected | DeviceMalformed
    ) -> None:
        if self._sink is not None:
            self._sink.fault(plan.device_id, error)

    def _all_offline(self, error: DeviceUnreachable) -> None:
        self._in_range.clear()
        self._linked.clear()
        if self._sink is not None:
            ts = _now()
            for plan in self._plans:
                self._sink.offline(plan.device_id, error, ts)

    async def write(self, device: DeviceSpec, point: Point, value: float) -> None:
        raise PointError(device.profile.id, point.name, "BLE bands take no writes from Anju yet")


def _now() -> datetime:
    return datetime.now(UTC)


async def _sleep(stop: asyncio.Event, seconds: float, *also: asyncio.Event) -> None:
    """Wait ``seconds``, or less if ``stop`` (or one of ``also``) is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_first(stop, *also), timeout=max(seconds, 0.0))


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
