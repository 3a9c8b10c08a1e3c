"""httpx as the webhook sender and the CLI use it: no module search per request.

httpcore asks sniffio which event loop runs each request; with sniffio missing it tries
the import again at every call, a walk of ``sys.path`` costing tens of microseconds,
several times a request (pyproject.toml says so where it lists sniffio).
"""

import asyncio
import contextlib
import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

import httpx

_RESPONSE = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class _Recorder(importlib.abc.MetaPathFinder):
    """Notes every module the import system is asked to find, and finds none itself."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        self.searched.append(fullname)
        return None


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every request on the connection (none has a body) until the client leaves."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(_RESPONSE)
            await writer.drain()
    writer.close()


async def _requests(count: int, recorder: _Recorder) -> list[int]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        statuses = [(await client.post("/warm-up")).status_code]  # first use may import
        sys.meta_path.insert(0, recorder)
        try:
            for _ in range(count):
                statuses.append((await client.post("/hook")).status_code)
        finally:
            sys.meta_path.remove(recorder)
    return statuses


def test_requests_search_for_no_module() -> None:
    recorder = _Recorder()
    statuses = asyncio.run(_requests(5, recorder))
    assert statuses == [204] * 6
    assert recorder.searched == []
