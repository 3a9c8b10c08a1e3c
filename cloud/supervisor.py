"""Child processes started, watched and stopped together: how ``anju cloud ingest
--processes N`` runs N ingest processes on one shared subscription.

One Python process runs Python on one core at a time, and at ten readings per message
the MQTT client's work per message and ingest's fill that core (docs/decisions.md,
docs/capacity.md): more cores need more processes. The parent holds no broker session
and writes nothing; each child is a whole ingest process with its own sessions, pool
and counters.

A stop (SIGTERM, Ctrl-C) is passed on to every child, which finishes as a lone process
does: nothing uncommitted is acknowledged, so nothing is lost. A child that ends by
itself stops the rest, and the parent fails naming it, as a lone process fails when
one of its workers does: the service manager then restarts the set, the dead child's
sessions expire (``shared_session_expiry_s``) and the gateways resend what it held.
A parent that dies without stopping them (SIGKILL) still ends its children: each holds
a pipe from it as standard input (``run_supervised``), whose end they see, so no child
is left consuming under the client ids a restarted set takes again (the broker would
hand each id back and forth between the two).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Final

from cloud.errors import CloudError

log = logging.getLogger(__name__)

STOP_GRACE_S: Final = 40.0
"""How long a child may take to stop after SIGTERM before it is killed: longer than a
group's write may take (``IngestSettings.write_timeout_s``)."""


async def supervise(
    commands: Sequence[Sequence[str]], *, stop: asyncio.Event, name: str = "child"
) -> None:
    """Run ``commands`` as child processes until ``stop`` is set or one of them ends.

    The children inherit this process's output. Raises CloudError naming the first child
    that ended by itself (with its exit status) once the others have stopped.
    """
    # The pipes' write ends stay open, unwritten, for as long as this process lives.
    children = [
        await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE)
        for command in commands
    ]
    for index, child in enumerate(children, start=1):
        log.info("%s %d of %d started (pid %d)", name, index, len(children), child.pid)
    exits = {asyncio.ensure_future(child.wait()): index for index, child in enumerate(children)}
    stopping = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([*exits, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        await _stop_all(children)
    ended = sorted(exits[future] for future in done if future in exits)
    if ended and not stop.is_set():
        first = children[ended[0]]
        raise CloudError(
            f"{name} {ended[0] + 1} of {len(children)} (pid {first.pid}) exited with "
            f"{_status(first.returncode)}; the others were stopped (see its log above)"
        )


async def run_supervised(
    main: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Run ``main(stop)`` in a child of ``supervise``: ``stop`` is also set when standard
    input ends, which is when the supervising process is gone, however it ended."""
    watcher = asyncio.create_task(_stop_at_end_of_input(stop), name="supervisor:input")
    try:
        await main(stop)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def _stop_at_end_of_input(stop: asyncio.Event) -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while await reader.read(4096):
            pass
    finally:
        transport.close()
    if not stop.is_set():
        log.error("the supervising process is gone (its pipe closed); stopping")
        stop.set()


async def _stop_all(children: Sequence[asyncio.subprocess.Process]) -> None:
    """SIGTERM each child still running, then wait; kill one that outlasts the grace."""
    for child in children:
        if child.returncode is None:
            with suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    async def ended(child: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(child.wait(), STOP_GRACE_S)
        except TimeoutError:
            log.error("pid %d did not stop within %g s of SIGTERM; killed", child.pid, STOP_GRACE_S)
            with suppress(ProcessLookupError):
                child.kill()
            await child.wait()

    # Shielded: a second Ctrl-C must not leave children running unwatched.
    await asyncio.shield(asyncio.gather(*(ended(child) for child in children)))


def _status(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"code {returncode}"
