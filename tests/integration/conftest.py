"""Fixtures several integration modules share: a database connection and a webhook receiver."""

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from psycopg import AsyncConnection

from tests.integration.webhook_support import Receiver, running_receiver


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[AsyncConnection[Any]]:
    """An autocommit connection to the test's own database."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP webhook receiver on a free loopback port (``webhook_support``)."""
    async with running_receiver() as running:
        yield running
