"""``/console/``: the dispatcher console, a page and its ES modules served as files
from ``cloud/console/static`` (docs/console.md). No build step: what is in the
package is what the browser runs.

Every file goes out with a Content-Security-Policy allowing only this origin, no
inline script and no framing: the page shows residents' personal data and holds an API
key, so an injected script or a framing site must get nothing. ``no-cache`` makes a
browser check for a new version on each load, so an upgrade reaches dispatchers at
their next reload rather than whenever a cache expires.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

PATH: Final = "/console"
STATIC: Final = Path(str(files("cloud.console") / "static"))
HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """The console's files, each answered with ``HEADERS``."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def console_files() -> ConsoleFiles:
    """What ``create_app`` mounts at ``PATH`` (``index.html`` for the directory)."""
    return ConsoleFiles(directory=STATIC, html=True)
