"""``GET /devices/{device_id}/readings``: one metric of one device over a window.

Buckets of one minute are aggregated from ``readings``; buckets of an hour or a day
come from the hourly rollup for the hours it holds and from ``readings`` for the
newest ones (``readings_rollup_horizon()``), which is why their window must start and
end on whole hours. ``raw`` returns the readings themselves. Limits keep one request
from scanning without bound; a window outside them is refused with 422 and says why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Annotated, Any, Final, NoReturn

from fastapi import APIRouter, HTTPException, Query
from psycopg import AsyncConnection
from psycopg.rows import TupleRow, dict_row

from cloud.api.deps import ConnectionDep
from cloud.api.models import Bucket, RawReading, ReadingBucket, ReadingSeries
from cloud.api.params import IdentifierPath, Instant
from cloud.api.problems import problem_response
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries
from schemas.vocabulary import Metric

router = APIRouter(prefix="/devices", tags=["readings"])

MAX_RAW_WINDOW: Final = timedelta(days=1)
MAX_BUCKETS: Final = 10_000
MAX_RAW_LIMIT: Final = 10_000
_WIDTHS: Final = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}


@router.get(
    "/{device_id}/readings",
    response_model=ReadingSeries,
    responses={
        HTTPStatus.NOT_FOUND.value: problem_response("No device with this id in reach"),
        HTTPStatus.UNPROCESSABLE_ENTITY.value: problem_response(
            "A malformed parameter, or a window outside the limits"
        ),
    },
)
async def device_readings(
    conn: ConnectionDep,
    principal: Annotated[Principal, allowed(Permission.READINGS_READ)],
    device_id: IdentifierPath,
    metric: Metric,
    start: Annotated[Instant, Query(alias="from", description="Window start, inclusive")],
    end: Annotated[Instant, Query(alias="to", description="Window end, exclusive")],
    bucket: Bucket = "1h",
    limit: Annotated[int, Query(ge=1, le=MAX_RAW_LIMIT, description="Raw rows at most")] = 1000,
) -> ReadingSeries:
    """min/avg/max/count per bucket (``1m``, ``1h``, ``1d``), or the readings (``raw``).

    Buckets are counted from ``from``: with ``bucket=1d`` and ``from`` at local
    midnight they are local days; buckets without readings are left out. Refused
    with 422: ``to`` not after ``from``; an instant before 1900 or after 9000; a
    ``raw`` window over a day; more than 10,000 buckets; ``1h`` or ``1d`` with a
    window not on whole hours. 404 when the device is not registered within the
    key's scope.
    """
    _check_window(start, end, bucket)
    params: dict[str, Any] = {
        "device": device_id,
        "metric": str(metric),
        "start": start,
        "end": end,
    }
    with storage_errors("device_known"):
        cur = await conn.execute(queries()["device_known"], {**params, "scope": principal.scope})
        known = await cur.fetchone()
    if not (known and known[0]):
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no device {device_id!r}")

    readings: list[RawReading] = []
    buckets: list[ReadingBucket] = []
    truncated = False
    horizon: datetime | None = None
    if bucket == "raw":
        readings, truncated = await _raw(conn, params, limit)
    else:
        buckets, horizon = await _buckets(conn, params, bucket)
    return ReadingSeries(
        device_id=device_id,
        metric=metric,
        bucket=bucket,
        start=start,
        end=end,
        buckets=buckets,
        readings=readings,
        truncated=truncated,
        rollup_until=horizon,
    )


async def _raw(
    conn: AsyncConnection[TupleRow], params: dict[str, Any], limit: int
) -> tuple[list[RawReading], bool]:
    """The first ``limit`` readings of the window, and whether there were more."""
    with storage_errors("readings_raw"):
        cur = await conn.execute(queries()["readings_raw"], {**params, "limit": limit + 1})
        rows = await cur.fetchall()
    return [RawReading(ts=ts, value=value) for ts, value in rows[:limit]], len(rows) > limit


async def _buckets(
    conn: AsyncConnection[TupleRow], params: dict[str, Any], bucket: Bucket
) -> tuple[list[ReadingBucket], datetime | None]:
    """The window's buckets, and for hourly and daily ones the rollup horizon used."""
    sql = queries()
    params = {**params, "width": _WIDTHS[bucket]}
    horizon: datetime | None = None
    query = "readings_buckets_raw"
    if bucket != "1m":
        with storage_errors("rollup_horizon"):
            cur = await conn.execute(sql["rollup_horizon"], params)
            row = await cur.fetchone()
        assert row is not None  # a SELECT without FROM yields one row
        horizon = params["horizon"] = row[0]
        query = "readings_buckets_rollup"
    with storage_errors(query):
        dict_cur = conn.cursor(row_factory=dict_row)
        await dict_cur.execute(sql[query], params)
        rows = await dict_cur.fetchall()
    return [ReadingBucket.model_validate(row) for row in rows], horizon


def _check_window(start: datetime, end: datetime, bucket: Bucket) -> None:
    """Raise 422 naming the problem and the fix when the window is outside the limits."""
    if end <= start:
        _refuse(f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
    if bucket == "raw":
        if end - start > MAX_RAW_WINDOW:
            _refuse(
                f"raw readings are served for windows of at most {MAX_RAW_WINDOW}; "
                "ask for bucket=1m or wider, or a shorter window"
            )
        return
    width = _WIDTHS[bucket]
    if (end - start) / width > MAX_BUCKETS:
        _refuse(
            f"{bucket} buckets over this window would be more than {MAX_BUCKETS}; "
            "ask for wider buckets or a shorter window"
        )
    if bucket != "1m":
        for name, instant in (("from", start), ("to", end)):
            utc = instant.astimezone(UTC)
            if utc.minute or utc.second or utc.microsecond:
                _refuse(
                    f"'{name}' ({instant.isoformat()}) must be a whole hour for "
                    f"bucket={bucket}, which is served from the hourly rollup"
                )


def _refuse(detail: str) -> NoReturn:
    raise HTTPException(HTTPStatus.UNPROCESSABLE_ENTITY, detail)
