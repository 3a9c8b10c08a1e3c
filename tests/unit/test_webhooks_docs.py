"""docs/webhooks.md tells property managers what they may filter on: every example
subscription must be one the API accepts, and the documented names must be the ones
the code and the packaged rules use, so a copied example never subscribes to silence.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cloud.api.models import WebhookSubscriptionRequest
from cloud.api.routes.webhooks import filter_vocabulary
from cloud.rules.config import load_rules
from cloud.webhooks.errors import InvalidFilter
from cloud.webhooks.outbox import WebhookEvent

DOC = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```[a-z]*\n(.*?)^```", DOC, flags=re.MULTILINE | re.DOTALL)
RULES = load_rules()
VOCABULARY = filter_vocabulary(RULES)


def _subscription_bodies() -> list[dict[str, Any]]:
    """The JSON bodies (``-d '{...}'``, in code blocks or inline) of the doc's requests
    creating a subscription: those naming a community."""
    bodies = [json.loads(body) for body in re.findall(r"-d '(\{.*?\})'", DOC, flags=re.DOTALL)]
    return [body for body in bodies if "community" in body]


def _priorities() -> dict[str, int]:
    """Each incident type of the packaged rules and the priority it opens with."""
    found = {rule.incident: rule.priority for rule in RULES.rules.values()}
    found[RULES.evacuation.incident] = RULES.evacuation.priority
    return found


def test_the_doc_has_examples_filtering_on_each_kind_of_name() -> None:
    bodies = _subscription_bodies()
    for field in ("event_types", "incident_types", "max_priority"):
        assert any(field in body for body in bodies), field


@pytest.mark.parametrize("body", _subscription_bodies(), ids=lambda body: str(body["url"]))
def test_every_example_subscription_is_accepted(body: dict[str, Any]) -> None:
    request = WebhookSubscriptionRequest.model_validate(body)
    VOCABULARY.check(
        event_types=request.event_types,
        incident_types=request.incident_types,
        max_priority=request.max_priority,
    )


def test_the_check_refuses_the_name_the_doc_used_to_show() -> None:
    with pytest.raises(InvalidFilter, match=r"'smoke' is not an incident type; valid: .*fire"):
        VOCABULARY.check(event_types=[], incident_types=["smoke"], max_priority=3)


def test_the_incident_type_table_is_the_packaged_rules() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d) \|", DOC, flags=re.MULTILINE)
    assert {name: int(priority) for name, priority in rows} == _priorities()
    assert len(rows) == len(_priorities())
    assert set(_priorities()) == VOCABULARY.incident_types


def test_the_event_type_list_is_every_event() -> None:
    bullet = re.search(r"^- `event_types`: (.*?);\n", DOC, flags=re.MULTILINE | re.DOTALL)
    assert bullet is not None
    assert set(re.findall(r"`([a-z.]+)`", bullet.group(1))) == {str(e) for e in WebhookEvent}


def test_the_example_delivery_names_a_real_event_and_incident_type() -> None:
    [body] = [line for block in BLOCKS for line in block.splitlines() if line.startswith('{"data"')]
    delivery = json.loads(body)
    assert delivery["type"] in {str(event) for event in WebhookEvent}
    incident_type = delivery["data"]["incident_type"]
    assert incident_type in VOCABULARY.incident_types
    assert delivery["data"]["priority"] == _priorities()[incident_type]
