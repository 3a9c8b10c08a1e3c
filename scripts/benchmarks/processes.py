"""What benchmarks measure of the processes they start: CPU time, and readiness.

Read from Linux ``/proc`` and from the processes' own logs, so a benchmark needs no
hook inside the process it measures.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from anju.services.ports import free_port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """Process ``pid`` and its descendants (a supervisor's children), from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(p for child in children for p in process_tree(int(child)))]


def busy_cpu_seconds() -> float:
    """CPU seconds this machine spent busy (all cores) since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_subscribed(
    process: subprocess.Popen[bytes],
    log: Path,
    workers: int,
    *,
    ready: Callable[[], bool] = lambda: True,
    timeout_s: float = 60.0,
) -> None:
    """Wait until an ``anju cloud`` process logged the subscriptions of ``workers``
    workers (two sessions each, their alarm and telemetry lanes) and ``ready()``.

    Raises RuntimeError naming the log when the process exits or the time runs out.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited {process.returncode}; see {log}")
        if log.read_text(errors="replace").count("subscribed on") >= 2 * workers and ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{process.args!r} not ready within {timeout_s:g} s; see {log}")


@dataclass(frozen=True, slots=True)
class Cloud:
    """The cloud a benchmark started: its API's URL and the process serving it."""

    api: str
    process: subprocess.Popen[bytes]


@contextmanager
def cloud_process(
    database_url: str, mqtt_url: str, log: Path, *, workers: int = 1
) -> Iterator[Cloud]:
    """``anju cloud run --workers N`` in its own process on a free port, logging to
    ``log``; yielded once its ingest workers subscribed and ``/health`` answers."""
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with anju_process(
        ["cloud", "run", "--workers", str(workers)],
        _environment(database_url, mqtt_url, port),
        log,
    ) as process:
        wait_subscribed(process, log, workers, ready=lambda: _healthy(api))
        yield Cloud(api, process)


@contextmanager
def split_cloud(
    database_url: str, mqtt_url: str, logs: Path, *, workers: int = 1
) -> Iterator[Cloud]:
    """``anju cloud ingest --workers N`` and ``anju cloud api`` as two processes, as a
    site larger than one box runs them, logging to ``logs/ingest.log`` and
    ``logs/api.log``; yielded once the workers subscribed and ``/health`` answers."""
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = _environment(database_url, mqtt_url, port)
    with (
        anju_process(
            ["cloud", "ingest", "--workers", str(workers)], env, logs / "ingest.log"
        ) as ingest,
        anju_process(["cloud", "api"], env, logs / "api.log") as server,
    ):
        wait_subscribed(ingest, logs / "ingest.log", workers)
        wait_subscribed(server, logs / "api.log", 0, ready=lambda: _healthy(api))
        yield Cloud(api, server)


def _environment(database_url: str, mqtt_url: str, api_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "ANJU_DATABASE_URL": database_url,
        "ANJU_MQTT_URL": mqtt_url,
        "ANJU_API_PORT": str(api_port),
        # Log lines unwrapped, so readiness can be read from them whatever the ids' length.
        "COLUMNS": "1000",
    }


@contextmanager
def anju_process(
    args: list[str], env: dict[str, str], log: Path, *, stop_timeout_s: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``anju ARGS`` logging to ``log``, stopped with SIGTERM (killed after
    ``stop_timeout_s``) on the way out."""
    anju = Path(sys.executable).with_name("anju")
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(anju), *args], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
        if process.returncode not in (0, None, -signal.SIGTERM):
            print(f"anju {' '.join(args)} exited {process.returncode}; see {log}", file=sys.stderr)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
