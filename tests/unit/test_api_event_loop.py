"""Every route of the API runs on the event loop: its endpoint and each dependency it
draws on (to any depth) are coroutine functions or async generators.

FastAPI runs a plain ``def`` endpoint or dependency in a worker thread, a hand-over and
back per call. The dispatcher's claim and resolve went through two such hops each, and
on a two-core machine the thread switches were a fifth of the API's CPU, taken from
the alarms it serves (docs/decisions.md). No database is needed: building the app
connects to nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from cloud.api.app import create_app
from cloud.settings import CloudSettings


def _calls(dependant: Dependant) -> Iterator[object]:
    if dependant.call is not None:
        yield dependant.call
    for dependency in dependant.dependencies:
        yield from _calls(dependency)


def _on_the_loop(call: object) -> bool:
    if inspect.isclass(call):  # a class as a dependency: FastAPI calls its constructor
        return False
    target = call if inspect.isroutine(call) else getattr(call, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def test_no_route_hands_work_to_a_thread() -> None:
    app = create_app(CloudSettings(database_url="postgresql://anju@127.0.0.1:9/anju"))
    threaded = set()
    routes = 0
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute):
            continue
        routes += 1
        for call in _calls(context.dependant):
            if not _on_the_loop(call):
                threaded.add(f"{context.path}: {getattr(call, '__qualname__', repr(call))}")
    assert routes > 50, "the walk found the app's routes"
    assert not threaded, "run in a worker thread:\n" + "\n".join(sorted(threaded))


def test_the_check_tells_a_plain_function_from_a_coroutine() -> None:
    def plain() -> None: ...

    async def coroutine() -> None: ...

    class Callable:
        async def __call__(self) -> None: ...

    assert not _on_the_loop(plain)
    assert _on_the_loop(coroutine)
    assert _on_the_loop(Callable())
    assert not _on_the_loop(Callable)
