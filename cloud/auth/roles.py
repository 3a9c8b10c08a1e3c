"""The five roles and what each may do.

One table (``GRANTS``) answers "may this role call this route?"; every route names
the one permission it needs, so a role's reach is read here rather than from the
routes. Which rows a permitted call sees is the key's scope (``principal``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Role(StrEnum):
    """Who holds a key.

    ``admin`` runs the platform; ``street`` is a street office over its communities;
    ``property_manager`` runs one community's security and tools; ``dispatcher``
    works the emergency queue; ``installer`` sets up gateways and devices on site.
    """

    ADMIN = "admin"
    STREET = "street"
    PROPERTY_MANAGER = "property_manager"
    DISPATCHER = "dispatcher"
    INSTALLER = "installer"


class Permission(StrEnum):
    TREE_READ = "tree:read"
    TREE_MANAGE = "tree:manage"
    DEVICES_READ = "devices:read"
    GATEWAYS_MANAGE = "gateways:manage"
    """Register gateways and issue, rotate and revoke their broker credentials; add,
    move and remove devices (each change makes a new config pushed to the gateway)."""
    EVENTS_READ = "events:read"
    READINGS_READ = "readings:read"
    INCIDENTS_READ = "incidents:read"
    QUEUE_ACT = "queue:act"
    WEBHOOKS_MANAGE = "webhooks:manage"
    RESIDENTS_READ = "residents:read"
    """List residents and where they live; never their personal data."""
    RESIDENTS_MANAGE = "residents:manage"
    """Register, update and erase residents (personal data is written, not read back)."""
    RESIDENTS_REVEAL = "residents:reveal"
    """Read a resident's personal data; a dispatcher only while holding an incident
    about the resident (checked by the route), and each reading is logged."""
    RESIDENTS_AUDIT = "residents:audit"
    """Read who saw a resident's personal data (the access log)."""
    KEYS_MANAGE = "keys:manage"
    METRICS_READ = "metrics:read"


_EVERYONE: Final = frozenset(Role)
_OFFICE: Final = frozenset({Role.ADMIN, Role.STREET})

GRANTS: Final[dict[Permission, frozenset[Role]]] = {
    Permission.TREE_READ: _EVERYONE,
    Permission.TREE_MANAGE: _OFFICE,
    Permission.DEVICES_READ: _EVERYONE,
    Permission.GATEWAYS_MANAGE: _OFFICE | {Role.INSTALLER},
    Permission.EVENTS_READ: _EVERYONE,
    Permission.READINGS_READ: _EVERYONE,
    Permission.INCIDENTS_READ: _EVERYONE - {Role.INSTALLER},
    Permission.QUEUE_ACT: frozenset({Role.ADMIN, Role.DISPATCHER}),
    Permission.WEBHOOKS_MANAGE: _OFFICE | {Role.PROPERTY_MANAGER},
    Permission.RESIDENTS_READ: _EVERYONE - {Role.INSTALLER},
    Permission.RESIDENTS_MANAGE: _OFFICE | {Role.PROPERTY_MANAGER},
    Permission.RESIDENTS_REVEAL: frozenset({Role.ADMIN, Role.DISPATCHER}),
    Permission.RESIDENTS_AUDIT: frozenset({Role.ADMIN}),
    Permission.KEYS_MANAGE: _OFFICE,
    Permission.METRICS_READ: frozenset({Role.ADMIN}),
}

ISSUABLE: Final[dict[Role, frozenset[Role]]] = {
    Role.ADMIN: _EVERYONE,
    Role.STREET: frozenset({Role.PROPERTY_MANAGER, Role.DISPATCHER, Role.INSTALLER}),
}
"""The roles of the keys each key-managing role may make (and list and revoke): a
street office hands out keys for its communities' staff, never one like its own."""


def may(role: Role, permission: Permission) -> bool:
    """Whether ``role`` holds ``permission``."""
    return role in GRANTS[permission]
