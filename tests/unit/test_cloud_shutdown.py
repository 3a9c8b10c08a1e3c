"""``anju cloud`` commands end even when a task swallows its cancellation, as Python
3.11's ``asyncio.wait_for`` does when its result and the cancellation arrive together
(aiomqtt awaits CONNACK and SUBACK with it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest

from anju.commands import cloud as cloud_command
from anju.commands.cloud import _run_until_signal
from cloud.errors import CloudError


async def _swallows_one_cancellation() -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)


async def _fails_soon() -> None:
    await asyncio.sleep(0.05)
    raise CloudError("the API could not listen")


@pytest.fixture(autouse=True)
def _recancel_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cloud_command, "RECANCEL_AFTER_S", 0.1)


@pytest.mark.timeout(30)
def test_a_failed_task_ends_the_command_though_a_sibling_swallowed_its_cancel() -> None:
    async def main(stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(_swallows_one_cancellation())
            group.create_task(_fails_soon())
            await stop.wait()

    with pytest.raises(ExceptionGroup) as caught:
        _run_until_signal(main)
    assert caught.group_contains(CloudError)


@pytest.mark.timeout(30)
def test_sigterm_ends_the_command_though_a_task_swallowed_its_cancel() -> None:
    async def main(stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            task = group.create_task(_swallows_one_cancellation())
            asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
            await stop.wait()
            task.cancel()

    _run_until_signal(main)
