"""The pipe protocol between the benchmark and its child processes, both ends.

One JSON object per line each way. Children are separate Python processes (not
threads, not multiprocessing forks of the parent) so the agent's CPU time and memory
are its own and the simulators' load cannot hide inside them.
"""

import asyncio
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any

_SCRIPTS = Path(__file__).resolve().parents[1]
_REPO = _SCRIPTS.parent
_STOP_GRACE_S = 5.0


# --- child side ----------------------------------------------------------------------


def read_spec() -> dict[str, Any]:
    """The spec the parent wrote as the first line of stdin; exits 2 if there is none."""
    line = sys.stdin.readline()
    if not line:
        sys.exit(2)
    spec: dict[str, Any] = json.loads(line)
    return spec


def report(message: dict[str, Any]) -> None:
    """Send one message to the parent."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def run_measurement(
    measure: Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any] | None]],
    *,
    failures: tuple[type[BaseException], ...],
) -> None:
    """A child's whole life: read the spec, run ``measure`` on it, report what it
    returns (if anything); a failure of ``failures`` is reported to the parent, which
    stops the run, and exits 1."""
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    spec = read_spec()
    try:
        result = asyncio.run(measure(spec))
    except failures as exc:
        report({"error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
    if result is not None:
        report(result)


def stop_when_parent_leaves(stop: asyncio.Event) -> None:
    """Set ``stop`` (from a daemon thread) when stdin ends or SIGTERM arrives.

    The parent closes our stdin to ask us to stop, and the kernel closes it if the
    parent dies, so a killed benchmark leaves no simulator listening.
    """
    loop = asyncio.get_running_loop()

    def wait_for_eof() -> None:
        while sys.stdin.readline():
            pass
        # The parent closes our stdin after our last message, when our loop may be
        # closed already: then there is nothing left to stop.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, name="parent-watch", daemon=True).start()
    loop.add_signal_handler(signal.SIGTERM, stop.set)


# --- parent side ---------------------------------------------------------------------


class ChildError(RuntimeError):
    """A child process failed, exited early or did not answer in time."""


class Child:
    """One child process running ``python -m MODULE`` with a spec on its stdin."""

    def __init__(self, name: str, module: str, spec: dict[str, Any]) -> None:
        self.name = name
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(_SCRIPTS), str(_REPO), *filter(None, [env.get("PYTHONPATH")])]
        )
        self._process = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            cwd=_REPO,
            env=env,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        stdout = self._process.stdout
        assert stdout is not None
        threading.Thread(
            target=self._pump, args=(stdout,), name=f"{name}-stdout", daemon=True
        ).start()
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(json.dumps(spec) + "\n")
        stdin.flush()

    @property
    def pid(self) -> int:
        return self._process.pid

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def receive(self, timeout_s: float) -> dict[str, Any]:
        """The child's next message; raises ChildError on exit, bad output or timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ChildError(f"{self.name}: no message within {timeout_s:g} s") from None
            if line is None:
                code = self._process.wait(timeout=_STOP_GRACE_S)
                raise ChildError(f"{self.name}: exited with code {code} (see its stderr above)")
            try:
                message: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                raise ChildError(f"{self.name}: not a JSON line: {line[:200]!r}") from None
            if "error" in message:
                raise ChildError(f"{self.name}: {message['error']}")
            return message

    def finish(self) -> None:
        """Close its stdin, the request to stop; what it sends on its way out can
        still be received."""
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    def stop(self) -> None:
        """Close its stdin (the request to stop), then SIGTERM, then SIGKILL; idempotent."""
        process = self._process
        if process.poll() is None and process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        for action in (None, process.terminate, process.kill):
            if action is not None and process.poll() is None:
                action()
            try:
                process.wait(timeout=_STOP_GRACE_S)
                return
            except subprocess.TimeoutExpired:
                continue
