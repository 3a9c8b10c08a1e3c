"""A property manager's webhook receiver, for trying Anju's webhooks against the demo.

It does what a real receiver must (docs/webhooks.md, "Verifying"): subscribe and keep
the secret, verify each request's signature on the raw bytes with the reference
Standard Webhooks library, drop repeats by ``webhook-id``, and answer 2xx at once. To
be usable against a demo that is only starting, it waits for the API to answer before
subscribing. Subscribing takes an API key that manages webhooks (a property manager's,
a street office's or an admin's): ``--key``, or ``ANJU_API_KEY``. Run it beside
``anju demo``, with the key the demo prints at start-up (docs/webhooks.md, "Trying it
with the demo")::

    ANJU_API_KEY=anju_… python examples/webhook_receiver.py --api http://127.0.0.1:8080 \
        --listen 127.0.0.1:9000

Needs ``standardwebhooks`` (``scripts/demo`` installs it); everything else is the
standard library. Stops on Ctrl-C or SIGTERM.
"""

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock, Thread
from typing import Any, ClassVar

from standardwebhooks import Webhook, WebhookVerificationError

PATH = "/anju"
KEY_VAR = "ANJU_API_KEY"
REFUSALS = {
    401: "The API key was refused: unknown, revoked or expired (anju demo's lasts one run).",
    403: "This key may not manage webhooks: use a property manager's, a street office's "
    "or an admin key.",
    422: "A receiver on this machine is a loopback address, which Anju refuses unless the "
    "cloud runs with ANJU_WEBHOOK_ALLOWED_NETWORKS=127.0.0.1/32 "
    "(or ANJU_WEBHOOK_ALLOW_PRIVATE=1).",
}
"""What to do about each refusal a subscription commonly meets."""


def wait_for_api(api: str, within_s: float) -> None:
    """Return once ``GET /health`` answers 200; exit with a message after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"no answer from {api}/health within {within_s:g} s")
        time.sleep(0.2)


def subscribe(api: str, key: str, community: str, url: str) -> dict[str, Any]:
    """``POST /webhooks/subscriptions`` with ``key``; the answer holds the secret, shown
    this once."""
    body = json.dumps(
        {"community": community, "url": url, "description": "examples/webhook_receiver.py"}
    ).encode()
    request = urllib.request.Request(
        f"{api}/webhooks/subscriptions",
        data=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            created: dict[str, Any] = json.load(response)
            return created
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        hint = REFUSALS.get(exc.code, "")
        sys.exit(f"subscribing {url} was refused ({exc.code}): {detail}\n{hint}".rstrip())


_OUTPUT = Lock()


def _say(line: str) -> None:
    """Print one whole line: deliveries are handled on threads of their own, and two
    print() calls at once can interleave their text and newlines."""
    with _OUTPUT:
        print(line, flush=True)


class Receiver(BaseHTTPRequestHandler):
    """Verifies, deduplicates and prints each delivery; answers 204, or 401 when forged."""

    webhook: ClassVar[Webhook]
    seen: ClassVar[set[str]] = set()
    seen_lock: ClassVar[Lock] = Lock()

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            event = self.webhook.verify(raw, headers)
        except WebhookVerificationError as exc:
            _say(f"REJECTED a request that failed verification: {exc}")
            self._answer(401)
            return
        message_id = headers["webhook-id"]
        with self.seen_lock:
            repeat = message_id in self.seen
            self.seen.add(message_id)
        self._answer(204)
        if repeat:
            _say(f"repeat of {message_id}, dropped")
            return
        data = event["data"]
        location = data["location"]
        _say(
            f"verified {event['type']}: incident {data['incident_id']} {data['incident_type']} "
            f"P{data['priority']} {data['status']}, {location['community']} building "
            f"{location['building']} ({message_id})"
        )

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the verified deliveries are the output."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080", help="Anju's API")
    parser.add_argument(
        "--listen", default="127.0.0.1:9000", help="HOST:PORT to receive on (default %(default)s)"
    )
    parser.add_argument(
        "--community",
        default="xijin/fenghuang",
        help="community, street or city to subscribe to (default %(default)s)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get(KEY_VAR),
        help=f"API key to subscribe with (default: ${KEY_VAR}; anju demo prints one)",
    )
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the API (default 120)"
    )
    args = parser.parse_args()
    if not args.key:
        parser.error(f"no API key: pass --key or set {KEY_VAR} (anju demo prints one for its run)")
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Receiver)
    Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{args.listen}{PATH}"
    wait_for_api(args.api.rstrip("/"), args.wait)
    subscription = subscribe(args.api.rstrip("/"), args.key, args.community, url)
    Receiver.webhook = Webhook(subscription["secret"])
    _say(
        f"subscription {subscription['id']}: {args.community} -> {url}; "
        "waiting for deliveries (Ctrl-C to stop)"
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        signal.pause()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
