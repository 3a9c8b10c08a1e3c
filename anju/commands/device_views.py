"""How ``anju device`` shows what it read: tables for people, JSON for scripts.

The same for every protocol: a driver says where a value lives and what raw data it
came from in its own terms, and ``edge.inspection`` what the value means, so these
render any device a driver can probe or scan; only a write is Modbus's alone.
"""

from collections.abc import Mapping
from typing import Any

import msgspec
from rich.markup import escape
from rich.table import Table

from edge.addresses import DeviceAddress
from edge.drivers.contract import Driver, RawRead, ScanHit, ScanTerms
from edge.drivers.modbus.probe import WriteResult
from edge.inspection import InspectedPoint, Inspection, label_for
from schemas.profile import DeviceProfile, Point
from schemas.vocabulary import METRIC_UNITS


def points_table(points: tuple[InspectedPoint, ...], *, raw: bool) -> Table:
    """Every point with its value and label; with ``raw``, where it lives and its raw data."""
    table = Table(title="Points")
    table.add_column("point", no_wrap=True)
    table.add_column("metric", overflow="fold")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("label")
    if raw:
        table.add_column("where", no_wrap=True)
        table.add_column("raw", no_wrap=True)
    for point in points:
        cells = [
            point.name + (" (writable)" if point.writable else ""),
            str(point.metric) if point.metric is not None else "-",
            value_text(point),
            point.label or "",
        ]
        if raw:
            cells += [point.where, raw_text(point)]
        table.add_row(*(escape(cell) for cell in cells))
    return table


def gateway_points_table(values: Mapping[str, object], profile: DeviceProfile | None) -> Table:
    """The values a gateway read (``anju device test --device``), by point, explained by
    ``profile`` when it is known here: metric, unit and label, as the direct form shows."""
    table = Table(title="Points (read by the gateway)")
    table.add_column("point", no_wrap=True)
    table.add_column("metric", overflow="fold")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("label")
    points = {point.name: point for point in profile.points} if profile is not None else {}
    for name, value in values.items():
        point = points.get(name)
        metric = point.metric if point is not None else None
        unit = METRIC_UNITS[metric] if metric is not None else None
        if isinstance(value, float) and not isinstance(value, bool):
            text = f"{value:.{_decimals(value)}f}"
        else:
            text = str(value)
        cells = [
            name + (" (writable)" if point is not None and point.writable else ""),
            str(metric) if metric is not None else "-",
            f"{text} {unit}" if unit else text,
            _label(point, value) or "",
        ]
        table.add_row(*(escape(cell) for cell in cells))
    return table


def _label(point: Point | None, value: object) -> str | None:
    """The profile's label of an engineering ``value``, for points whose value is the raw."""
    if point is None or point.scale != 1 or point.offset != 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not float(value).is_integer():
        return None
    return label_for(point, int(value))


def requests_table(requests: tuple[RawRead, ...]) -> Table:
    """Each request of a probe and its raw answer, for checking against a device manual."""
    table = Table(title="Requests (raw)")
    table.add_column("request", no_wrap=True)
    table.add_column("response", overflow="fold")
    table.add_column("points", overflow="fold")
    for request in requests:
        table.add_row(
            escape(request.request), escape(request.response), escape(", ".join(request.points))
        )
    return table


def scan_table(
    bus: DeviceAddress, tried: list[str], hits: list[ScanHit], terms: ScanTerms
) -> Table:
    """The devices a scan found, each profile suggested, and why the others did not fit."""
    title = terms.outcome.format(
        found=len(hits), tried=len(tried), candidates=terms.candidates, bus=bus.bus
    )
    table = Table(title=escape(title))
    table.add_column(escape(terms.candidate), justify="right")
    table.add_column("address", no_wrap=True)
    table.add_column("answer")
    table.add_column("suggested profiles")
    table.add_column("not matching", overflow="fold")
    for hit in hits:
        misses = [
            f"{check.profile_id}: {check.reason}" for check in hit.checks if not check.matches
        ]
        table.add_row(
            escape(hit.candidate),
            escape(str(hit.address)),
            escape(hit.detail),
            escape(", ".join(hit.suggestions) or "none"),
            escape("\n".join(misses)),
        )
    return table


def value_text(point: InspectedPoint) -> str:
    """The engineering value as an installer reads it: its resolution, its unit, true/false."""
    if isinstance(point.raw, bool):
        return "true" if point.raw else "false"
    if isinstance(point.value, str):
        text = point.value
    elif isinstance(point.raw, float):
        text = f"{point.value:.7g}"
    else:
        text = f"{point.value:.{_decimals(point.value)}f}"
    return f"{text} {point.unit}" if point.unit else text


def _decimals(value: float) -> int:
    """Places needed to show ``value`` as the inspection rounded it (at most 6)."""
    for places in range(7):
        if round(value, places) == value:
            return places
    return 6


def raw_text(point: InspectedPoint) -> str:
    """The data a point came from and the raw value it decodes to (``0xFFC9 -> -55``)."""
    raw = f"{point.raw:.7g}" if isinstance(point.raw, float) else str(point.raw)
    return f"{point.raw_text} -> {raw}"


def _point_json(point: InspectedPoint) -> dict[str, Any]:
    return {
        "name": point.name,
        "metric": point.metric,
        "unit": point.unit,
        "where": point.where,
        "raw_text": point.raw_text,
        "raw": point.raw,
        "value": point.value,
        "label": point.label,
        "writable": point.writable,
    }


def inspection_json(inspection: Inspection) -> dict[str, Any]:
    """``anju device test --json``: one object, the same shape for every protocol."""
    return {
        "ok": True,
        "profile": inspection.profile_id,
        "driver": inspection.driver,
        "address": inspection.address,
        "read_at": inspection.read_at.isoformat(),
        "requests": [
            {
                "request": request.request,
                "response": request.response,
                "points": list(request.points),
            }
            for request in inspection.requests
        ],
        "points": [_point_json(point) for point in inspection.points],
        "events": [
            {
                "type": event.type,
                "severity": event.severity,
                "data": msgspec.to_builtins(event.data),
            }
            for event in inspection.events
        ],
        "elapsed_ms": round(inspection.elapsed_s * 1000, 3),
    }


def write_json(
    result: WriteResult, before: InspectedPoint, after: InspectedPoint
) -> dict[str, Any]:
    """``anju device write --json``: the write, and the point before and after it."""
    return {
        "ok": True,
        "profile": result.profile_id,
        "address": result.address,
        "point": result.point,
        "requested": result.requested,
        "written": list(result.written),
        "before": _point_json(before),
        "after": _point_json(after),
        "holds_written": result.holds_written,
        "elapsed_ms": round(result.elapsed_s * 1000, 3),
    }


def scan_json(
    driver: Driver, bus: DeviceAddress, tried: list[str], hits: list[ScanHit]
) -> dict[str, Any]:
    """``anju device scan --json``: every device found with each profile's check."""
    return {
        "ok": True,
        "driver": driver.name,
        "bus": bus.bus,
        "tried": len(tried),
        "found": [
            {
                "candidate": hit.candidate,
                "address": str(hit.address),
                "detail": hit.detail,
                "suggested": hit.suggestions,
                "checks": [
                    {"profile": check.profile_id, "matches": check.matches, "reason": check.reason}
                    for check in hit.checks
                ],
            }
            for hit in hits
        ],
        "suggestion_basis": driver.scan_terms.basis,
    }
