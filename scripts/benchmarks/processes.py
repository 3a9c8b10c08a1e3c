"""What benchmarks measure of the processes they start: CPU time, and readiness.

Read from Linux ``/proc`` and from the processes' own logs, so a benchmark needs no
hook inside the process it measures.
"""

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    """Wait until an ``anju cloud`` process logged ``workers`` subscriptions and ``ready()``.

    Raises RuntimeError naming the log when the process exits or the time runs out.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited {process.returncode}; see {log}")
        if log.read_text(errors="replace").count("subscribed on") >= workers and ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{process.args!r} not ready within {timeout_s:g} s; see {log}")
