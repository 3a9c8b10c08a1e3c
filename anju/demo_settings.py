"""The demo's cloud settings: the environment ``anju cloud run`` reads, and the demo's services.

The demo must behave as the cloud does for whoever tries it, so it reads every
``ANJU_*`` variable through the same loader (``cloud.settings.load_settings``): a
property manager points webhooks at a local receiver with ``ANJU_WEBHOOK_*``, an
operator tries escalation limits with ``ANJU_QUEUE_*``. Only the database and broker
URLs are replaced, by those of the servers the demo started (which are the
environment's own when ``ANJU_DATABASE_URL`` / ``ANJU_MQTT_URL`` are set).

Two defaults differ, and only where the environment says nothing: the API takes a
free port rather than 8080, so the demo starts beside anything else; and without any
``ANJU_QUEUE_*`` variable the escalation limits are a sixth of the real ones, so an
unclaimed fire visibly escalates within a forty-second run.
"""

import os
from collections.abc import Mapping
from typing import Final

from anju.services.ports import free_port
from cloud.settings import DATABASE_URL_VAR, MQTT_URL_VAR, CloudSettings, load_settings

QUEUE_PREFIX: Final = "ANJU_QUEUE_"
DEMO_QUEUE_LIMITS: Final = {
    "ANJU_QUEUE_P1_UNCLAIMED_S": "10",
    "ANJU_QUEUE_P1_UNACKNOWLEDGED_S": "30",
    "ANJU_QUEUE_P2_UNCLAIMED_S": "20",
    "ANJU_QUEUE_P2_UNACKNOWLEDGED_S": "50",
    "ANJU_QUEUE_P3_UNCLAIMED_S": "50",
    "ANJU_QUEUE_P3_UNACKNOWLEDGED_S": "150",
    "ANJU_QUEUE_REPEAT_S": "10",
}
"""The real limits (docs/emergency-queue.md) divided by six: P1 unclaimed after 10 s
instead of 60, and again every 10 s."""
API_PORT_VAR: Final = "ANJU_API_PORT"


def demo_settings(
    database_url: str, mqtt_url: str, environ: Mapping[str, str] | None = None
) -> tuple[CloudSettings, bool]:
    """The cloud settings of the environment, on the demo's database and broker.

    Returns them and whether the demo's shortened escalation limits apply (no
    ``ANJU_QUEUE_*`` variable was set). Raises SettingsError, naming the variable,
    exactly where ``anju cloud run`` would.
    """
    env = dict(os.environ if environ is None else environ)
    env[DATABASE_URL_VAR] = database_url
    env[MQTT_URL_VAR] = mqtt_url
    if not env.get(API_PORT_VAR):
        env[API_PORT_VAR] = str(free_port())
    shortened = not any(name.startswith(QUEUE_PREFIX) and value for name, value in env.items())
    if shortened:
        env.update(DEMO_QUEUE_LIMITS)
    return load_settings(env), shortened
