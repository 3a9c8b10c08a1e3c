"""The agent's Prometheus metrics, read from its live objects at each scrape.

Nothing here counts anything: the pollers, the spool, the uplink and the fire linkage
keep their own counters, and ``EdgeCollector`` reads them when Prometheus scrapes, so
no number is kept twice or can drift from the one the agent acts on. The endpoint is
served on the agent's own event loop (``MetricsServer``), not from a thread, so a
scrape reads that state between two steps of the loop, never halfway through one,
and a spool backed by SQLite is read from the thread that owns its connection.

Metrics (all prefixed ``anju_edge_``):

==========================================  =======  =============================
name                                        type     labels
==========================================  =======  =============================
polls_total, polls_answered_total           counter  device
poll_faults_total                           counter  device, kind (timeout,
                                                     exception, unreachable,
                                                     disconnected, internal)
device_online                               gauge    device
device_offline_info                         gauge    device, protocol, reason
                                                     (1 per offline device)
bus_overruns_total                          counter  bus
bus_restarts_total                          counter  bus (streaming buses)
unknown_device_records_total                counter  bus (streaming buses)
spool_depth_batches                         gauge    lane (not acknowledged
                                                     by the cloud yet)
spool_sent_unacked_batches                  gauge    lane (PUBACKed, waiting for
                                                     the cloud's acknowledgement)
spool_oldest_unsent_age_seconds             gauge    (0 when nothing waits)
telemetry_dropped_total                     counter  (readings evicted by budget)
uplink_state                                gauge    state (1 for the current one)
uplink_published_batches_total, ..._items   counter  (PUBACKed by the broker)
uplink_acknowledged_batches_total           counter  (stored or duplicate in the
                                                     cloud: deleted)
uplink_refused_batches_total                counter  (refused by the cloud:
                                                     deleted, never resent)
uplink_resent_batches_total                 counter  (no acknowledgement within
                                                     the ack timeout)
uplink_unreadable_acks_total                counter  kind (schema_version, invalid)
uplink_connection_failures_total            counter
fire_releases_total                         counter  (writes the doors took)
fire_release_failures_total                 counter
fire_buildings_in_alarm                     gauge
wearable_findings_total                     counter  type (wearable.fall, ...)
wearable_falls_recovered_total              counter  (suspected falls the wearer
                                                     got up from: no event)
camera_events_disarmed_total                counter  device (intrusions and loitering
                                                     in a zone outside its armed
                                                     hours: not sent)
==========================================  =======  =============================
"""

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from edge.devices import AgentDevice
from edge.errors import EdgeError
from edge.poller import BusPoller
from edge.streams import StreamPump
from edge.uplink import UplinkState
from schemas.topics import Channel
from schemas.vocabulary import EventType

log = logging.getLogger(__name__)

PREFIX = "anju_edge"
REQUEST_TIMEOUT_S = 5.0
"""A scraper gets this long to send its request line and headers."""
CLOSE_TIMEOUT_S = 5.0


class SpoolView(Protocol):
    """What the collector reads of the spool."""

    @property
    def depth(self) -> Mapping[Channel, int]:
        """Batches waiting per lane."""

    @property
    def sent_unacked(self) -> Mapping[Channel, int]:
        """Batches per lane the broker took and the cloud has not acknowledged."""

    @property
    def oldest_unsent_age_s(self) -> float | None:
        """Age of the oldest item not yet acknowledged; None when nothing waits."""

    @property
    def dropped_readings(self) -> int:
        """Readings evicted to keep within the disk budget, since start."""


class UplinkView(Protocol):
    """What the collector reads of the uplink."""

    @property
    def state(self) -> UplinkState: ...

    @property
    def published_batches(self) -> int: ...

    @property
    def published_items(self) -> int: ...

    @property
    def connection_failures(self) -> int: ...

    @property
    def acknowledged_batches(self) -> int: ...

    @property
    def refused_batches(self) -> int: ...

    @property
    def resent_batches(self) -> int: ...

    @property
    def unreadable_acks(self) -> int: ...

    @property
    def ack_version_mismatches(self) -> int: ...


class LinkageView(Protocol):
    """What the collector reads of the fire linkage (``edge.local_rules.FireLinkage``)."""

    @property
    def releases(self) -> int: ...

    @property
    def release_failures(self) -> int: ...

    @property
    def buildings_in_alarm(self) -> list[str]: ...

    @property
    def internal_errors(self) -> int: ...


class AnalysisView(Protocol):
    """What the collector reads of the wearable analysis (``edge.wearables``)."""

    @property
    def findings_by_type(self) -> Mapping[EventType, int]: ...

    @property
    def recovered_falls(self) -> int: ...


class CamerasView(Protocol):
    """What the collector reads of the ``cameras`` section (``edge.cameras``)."""

    @property
    def disarmed(self) -> Mapping[str, int]: ...


class IntakeView(Protocol):
    """What the collector reads of the agent's way into the spool (``edge.app.Agent``)."""

    @property
    def spool_failures(self) -> int: ...

    @property
    def held_events(self) -> int: ...

    @property
    def readings_dropped_unspooled(self) -> int: ...

    @property
    def events_dropped_unspooled(self) -> int: ...


class MetricsError(EdgeError):
    """The metrics endpoint cannot listen on its address."""

    def __init__(self, host: str, port: int, problem: str) -> None:
        self.host = host
        self.port = port
        super().__init__(f"metrics endpoint {host}:{port}: {problem}")


def _name(name: str) -> str:
    return f"{PREFIX}_{name}"


class EdgeCollector:
    """A Prometheus collector over the agent's devices, buses, spool, uplink and linkage.

    ``devices``, ``pollers`` and ``pumps`` are called at each scrape, so what the agent
    adds after a config reload shows up without a new collector. Any other part may be
    None (not running yet, or not built on this gateway); its metrics are then left out.
    Device metrics are the same for every protocol: the core keeps them, not drivers.
    """

    def __init__(
        self,
        *,
        devices: Callable[[], Sequence[AgentDevice]],
        pollers: Callable[[], Sequence[BusPoller]] = tuple,
        pumps: Callable[[], Sequence[StreamPump]] = tuple,
        spool: SpoolView | None = None,
        uplink: UplinkView | None = None,
        linkage: LinkageView | None = None,
        intake: IntakeView | None = None,
        analysis: AnalysisView | None = None,
        cameras: CamerasView | None = None,
    ) -> None:
        self._devices = devices
        self._pollers = pollers
        self._pumps = pumps
        self._intake = intake
        self._analysis = analysis
        self._cameras = cameras
        self._spool = spool
        self._uplink = uplink
        self._linkage = linkage

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family from the current state (prometheus-client calls it)."""
        yield from self._polling(self._devices())
        yield from self._buses(self._pollers(), self._pumps())
        if self._spool is not None:
            yield from self._spooled(self._spool)
        if self._uplink is not None:
            yield from self._uplinked(self._uplink)
        if self._linkage is not None:
            yield from self._linked(self._linkage)
        if self._intake is not None:
            yield from self._taken_in(self._intake)
        if self._analysis is not None:
            yield from self._analysed(self._analysis)
        if self._cameras is not None:
            yield self._disarmed(self._cameras)

    @staticmethod
    def _polling(devices: Sequence[AgentDevice]) -> Iterable[Metric]:
        polls = CounterMetricFamily(
            _name("polls"), "Reads of a device (records, for streaming ones).", labels=["device"]
        )
        answered = CounterMetricFamily(
            _name("polls_answered"),
            "Reads the device answered (records handled, for streaming ones).",
            labels=["device"],
        )
        faults = CounterMetricFamily(
            _name("poll_faults"),
            "Polls that failed, by kind of fault.",
            labels=["device", "kind"],
        )
        online = GaugeMetricFamily(
            _name("device_online"), "1 while the device answers, 0 once offline.", labels=["device"]
        )
        rejected = CounterMetricFamily(
            _name("rejected_values"),
            "Values a device sent that were not finite numbers (dropped).",
            labels=["device"],
        )
        offline = GaugeMetricFamily(
            _name("device_offline_info"),
            "1 for each offline device, with why (a driver unavailable here included).",
            labels=["device", "protocol", "reason"],
        )
        for device in devices:
            polls.add_metric([device.device_id], device.polls)
            answered.add_metric([device.device_id], device.answered)
            online.add_metric([device.device_id], 1.0 if device.online else 0.0)
            rejected.add_metric([device.device_id], device.normaliser.rejected_values)
            for kind, count in sorted(device.faults.items()):
                faults.add_metric([device.device_id, kind], count)
            if not device.online:
                labels = [device.device_id, device.profile.protocol, device.offline_reason]
                offline.add_metric(labels, 1.0)
        return [polls, answered, faults, online, rejected, offline]

    @staticmethod
    def _buses(pollers: Sequence[BusPoller], pumps: Sequence[StreamPump]) -> Iterable[Metric]:
        overruns = CounterMetricFamily(
            _name("bus_overruns"),
            "Polls that started a whole interval late because the bus was busy.",
            labels=["bus"],
        )
        restarts = CounterMetricFamily(
            _name("bus_restarts"),
            "Times a streaming bus stopped on an unforeseen error and was started again.",
            labels=["bus"],
        )
        unknown = CounterMetricFamily(
            _name("unknown_device_records"),
            "Records a streaming bus received from devices not in the config (ignored).",
            labels=["bus"],
        )
        for poller in pollers:
            overruns.add_metric([poller.bus.name], poller.overruns)
        for pump in pumps:
            restarts.add_metric([pump.bus.name], pump.restarts)
            unknown.add_metric([pump.bus.name], pump.unknown_records)
        return [overruns, restarts, unknown]

    @staticmethod
    def _spooled(spool: SpoolView) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            _name("spool_depth_batches"),
            "Batches in the spool the cloud has not acknowledged, per lane.",
            labels=["lane"],
        )
        for lane, batches in sorted(spool.depth.items()):
            depth.add_metric([str(lane)], batches)
        sent = GaugeMetricFamily(
            _name("spool_sent_unacked_batches"),
            "Batches the broker took that wait for the cloud's acknowledgement, per lane.",
            labels=["lane"],
        )
        for lane, batches in sorted(spool.sent_unacked.items()):
            sent.add_metric([str(lane)], batches)
        age = spool.oldest_unsent_age_s
        oldest = GaugeMetricFamily(
            _name("spool_oldest_unsent_age_seconds"),
            "Age of the oldest item the cloud has not acknowledged; 0 when nothing waits.",
            value=0.0 if age is None else age,
        )
        dropped = CounterMetricFamily(
            _name("telemetry_dropped"),
            "Readings evicted from the spool to keep within its disk budget.",
            value=spool.dropped_readings,
        )
        return [depth, sent, oldest, dropped]

    @staticmethod
    def _uplinked(uplink: UplinkView) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            _name("uplink_state"),
            "1 for the uplink's current state, 0 for the others.",
            labels=["state"],
        )
        for candidate in UplinkState:
            state.add_metric([str(candidate)], 1.0 if candidate is uplink.state else 0.0)
        unreadable = CounterMetricFamily(
            _name("uplink_unreadable_acks"),
            "Acknowledgements from the cloud that could not be read (their batches stay "
            "and are resent); schema_version: the cloud speaks another wire version.",
            labels=["kind"],
        )
        mismatches = uplink.ack_version_mismatches
        unreadable.add_metric(["schema_version"], mismatches)
        unreadable.add_metric(["invalid"], uplink.unreadable_acks - mismatches)
        return [
            state,
            unreadable,
            CounterMetricFamily(
                _name("uplink_acknowledged_batches"),
                "Batches the cloud acknowledged as stored or duplicate (deleted from the spool).",
                value=uplink.acknowledged_batches,
            ),
            CounterMetricFamily(
                _name("uplink_refused_batches"),
                "Batches the cloud refused (quarantined or conflicting): deleted, never resent.",
                value=uplink.refused_batches,
            ),
            CounterMetricFamily(
                _name("uplink_resent_batches"),
                "Batches sent again because no acknowledgement came within the ack timeout.",
                value=uplink.resent_batches,
            ),
            CounterMetricFamily(
                _name("uplink_published_batches"),
                "Batches the broker acknowledged (PUBACK); the cloud's acknowledgement follows.",
                value=uplink.published_batches,
            ),
            CounterMetricFamily(
                _name("uplink_published_items"),
                "Readings and events in acknowledged batches.",
                value=uplink.published_items,
            ),
            CounterMetricFamily(
                _name("uplink_connection_failures"),
                "Broker connections that failed or were lost.",
                value=uplink.connection_failures,
            ),
        ]

    @staticmethod
    def _linked(linkage: LinkageView) -> Iterable[Metric]:
        return [
            CounterMetricFamily(
                _name("fire_releases"),
                "Fire-release writes egress doors took, repeats included.",
                value=linkage.releases,
            ),
            CounterMetricFamily(
                _name("fire_release_failures"),
                "Fire-release writes that failed (each is retried).",
                value=linkage.release_failures,
            ),
            GaugeMetricFamily(
                _name("fire_buildings_in_alarm"),
                "Buildings with a smoke detector in alarm.",
                value=len(linkage.buildings_in_alarm),
            ),
            CounterMetricFamily(
                _name("fire_linkage_internal_errors"),
                "Unexpected errors while releasing a door (each door is tried again).",
                value=linkage.internal_errors,
            ),
        ]

    @staticmethod
    def _analysed(analysis: AnalysisView) -> Iterable[Metric]:
        findings = CounterMetricFamily(
            _name("wearable_findings"),
            "Events the wearable analysis raised (confirmed falls, heart rate off its "
            "baseline, inactivity).",
            labels=["type"],
        )
        for event_type, count in sorted(analysis.findings_by_type.items()):
            findings.add_metric([str(event_type)], count)
        recovered = CounterMetricFamily(
            _name("wearable_falls_recovered"),
            "Impacts a band flagged that the wearer got up from (no wearable.fall sent).",
            value=analysis.recovered_falls,
        )
        return [findings, recovered]

    @staticmethod
    def _disarmed(cameras: CamerasView) -> Metric:
        disarmed = CounterMetricFamily(
            _name("camera_events_disarmed"),
            "Intrusion and loitering events not sent: their zone was outside its armed hours.",
            labels=["device"],
        )
        for device, count in sorted(cameras.disarmed.items()):
            disarmed.add_metric([device], count)
        return disarmed

    @staticmethod
    def _taken_in(intake: IntakeView) -> Iterable[Metric]:
        return [
            CounterMetricFamily(
                _name("spool_write_failures"),
                "Writes to the spool that failed (a full or failing disk).",
                value=intake.spool_failures,
            ),
            GaugeMetricFamily(
                _name("events_held_in_memory"),
                "Events waiting in memory because the spool could not take them.",
                value=intake.held_events,
            ),
            CounterMetricFamily(
                _name("readings_lost_unspooled"),
                "Readings dropped because the spool could not take them.",
                value=intake.readings_dropped_unspooled,
            ),
            CounterMetricFamily(
                _name("events_lost_unspooled"),
                "Events dropped past the in-memory bound while the spool failed.",
                value=intake.events_dropped_unspooled,
            ),
        ]


def build_registry(collector: EdgeCollector, *, gateway: str, community: str) -> CollectorRegistry:
    """A registry of the agent's collector, the process's own metrics and a target_info.

    ``target_info{gateway, community}`` lets one dashboard tell gateways apart without
    relabelling in every scrape config.
    """
    registry = CollectorRegistry(target_info={"gateway": gateway, "community": community})
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MetricsServer:
    """``GET /metrics`` over HTTP/1.1 on the agent's event loop, one request per connection.

    Binds loopback by default: the endpoint has no authentication, so a remote
    Prometheus reaches it through an SSH tunnel or a reverse proxy the site controls.
    ``port=0`` takes any free port (tests); :attr:`port` says which.
    """

    def __init__(self, registry: CollectorRegistry, *, port: int, host: str = "127.0.0.1") -> None:
        self._registry = registry
        self._host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port; raises MetricsError before start."""
        if self._server is None:
            raise MetricsError(self._host, self._requested_port, "not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen; raises MetricsError naming the address if it cannot (port in use)."""
        try:
            self._server = await asyncio.start_server(
                self._handle, self._host, self._requested_port
            )
        except OSError as exc:
            raise MetricsError(self._host, self._requested_port, exc.strerror or str(exc)) from None
        log.info("metrics on http://%s:%d/metrics", self._host, self.port)

    async def stop(self) -> None:
        """Stop listening and close open connections; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("metrics endpoint did not close within %.0f s", CLOSE_TIMEOUT_S)

    async def __aenter__(self) -> "MetricsServer":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(self._respond(head))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            # A scraper that dawdles, hangs up or sends a huge header gets nothing.
            log.debug("metrics request dropped: %r", exc)
        except ConnectionError as exc:
            log.debug("metrics client went away: %s", exc)
        finally:
            writer.close()

    def _respond(self, head: bytes) -> bytes:
        method, _, rest = head.decode("latin-1").partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        if method not in ("GET", "HEAD"):
            return _response(405, "text/plain; charset=utf-8", b"GET /metrics\n", head=False)
        if path != "/metrics":
            return _response(404, "text/plain; charset=utf-8", b"see /metrics\n", head=False)
        return _response(
            200, CONTENT_TYPE_LATEST, generate_latest(self._registry), method == "HEAD"
        )


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}


def _response(status: int, content_type: str, body: bytes, head: bool) -> bytes:
    header = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return header if head else header + body


async def serve_metrics(registry: CollectorRegistry, port: int, stop: asyncio.Event) -> None:
    """Serve ``registry`` on 127.0.0.1:``port`` until ``stop`` is set.

    Returns at once when ``port`` is 0: metrics are off (the config's default). A port
    that cannot be bound is logged and the metrics stay off, but this returns
    normally: the agent beside it polls detectors and releases doors on fire, and a
    port clash must not stop that (nor, under systemd, restart it in a loop).
    """
    if port == 0:
        return
    server = MetricsServer(registry, port=port)
    try:
        await server.start()
    except MetricsError as exc:
        log.error("%s; metrics are off until the agent restarts", exc)
        return
    try:
        await stop.wait()
    finally:
        await server.stop()
