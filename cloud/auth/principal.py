"""What a checked API key grants one request."""

from __future__ import annotations

from dataclasses import dataclass

from cloud.auth.roles import Permission, Role, may


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a valid key: who (``name``, the actor the queue records), in which
    role, and over which community nodes.

    ``communities`` holds the id of every node in the key's subtree (its root
    included); ``None`` means the whole tree. Queries take it as their ``scope``
    parameter (``scope``), so a row outside it is never read, and an object outside
    it is answered as not found rather than forbidden: its existence is not disclosed.
    """

    key_id: int
    name: str
    role: Role
    scope_id: int | None
    scope_path: str | None
    communities: frozenset[int] | None

    def can(self, permission: Permission) -> bool:
        return may(self.role, permission)

    def reaches(self, community_id: int) -> bool:
        """Whether the node ``community_id`` is in this key's subtree."""
        return self.communities is None or community_id in self.communities

    @property
    def scope(self) -> list[int] | None:
        """The ``%(scope)s`` parameter of scoped queries: node ids, or None for all."""
        return None if self.communities is None else sorted(self.communities)
