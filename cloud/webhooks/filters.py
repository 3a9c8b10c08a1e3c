"""What a subscription may filter on, and the check that refuses names that never match.

A filter is a list of names compared with ``=`` when an incident changes, so a name
nothing emits is not an error there: it simply never matches, and a property manager
who subscribed to ``smoke`` would never hear of a fire. So filters are checked when a
subscription is created, and a refusal lists the names that are valid.

Each part of the vocabulary has one source. Event types are ``WebhookEvent``, here.
Incident types are the ``incident`` names of the rule set the cloud runs with, and
priorities are ``cloud.incidents.Priority``: both live in layers above this package,
so the caller that has them (the API) builds the vocabulary and passes it in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cloud.webhooks.errors import InvalidFilter
from cloud.webhooks.outbox import WebhookEvent


@dataclass(frozen=True, slots=True)
class FilterVocabulary:
    """The names each filter of a subscription may hold."""

    incident_types: frozenset[str]
    priorities: frozenset[int]

    def check(
        self, *, event_types: Sequence[str], incident_types: Sequence[str], max_priority: int
    ) -> None:
        """Raise InvalidFilter for the first filter holding a name outside the vocabulary,
        naming the unknown names and the valid ones."""
        _known("event_types", "event type", event_types, {str(event) for event in WebhookEvent})
        _known("incident_types", "incident type", incident_types, self.incident_types)
        if max_priority not in self.priorities:
            raise InvalidFilter(
                "max_priority", f"{max_priority} is not a priority", _listed(self.priorities)
            )


def _known(field: str, kind: str, given: Sequence[str], valid: Iterable[str]) -> None:
    known = set(valid)
    unknown = [name for name in dict.fromkeys(given) if name not in known]
    if unknown:
        names = ", ".join(repr(str(name)) for name in unknown)
        plural = f"is not an {kind}" if len(unknown) == 1 else f"are not {kind}s"
        raise InvalidFilter(field, f"{names} {plural}", _listed(known))


def _listed(valid: Iterable[object]) -> str:
    return ", ".join(sorted(str(name) for name in valid))
