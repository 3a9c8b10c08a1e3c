"""Why residents' data could not be stored, read or changed; never any key material.

    CloudError
    └── ResidentError
        ├── NoResidentKeys         no key-encryption key is configured (ANJU_RESIDENT_KEYS)
        ├── UnknownWrappingKey     a record is wrapped by a key the keyring lacks
        ├── PersonalDataCorrupt    a record failed authentication (altered, or moved
        │                          onto another row)
        ├── ResidentNotFound       no resident with this id
        ├── ResidentExists         the care provider's reference is registered already
        ├── ResidentErased         the resident was erased; the row takes no new data
        └── InvalidResident        a field is out of range, or the community is unknown

Messages name key ids and resident ids, which are not secret; they never hold a key,
a data key or a byte of plaintext, so they are safe to log and to show.
"""

from __future__ import annotations

from cloud.errors import CloudError


class ResidentError(CloudError):
    """Base of the errors raised by ``cloud.residents``."""


class NoResidentKeys(ResidentError):
    """No key-encryption key is configured, so personal data can be neither stored nor read."""

    def __init__(self) -> None:
        super().__init__(
            "no resident keys configured: set ANJU_RESIDENT_KEYS (ID:BASE64, comma-separated; "
            "`anju cloud residents keygen` makes one) to store or read residents' personal data"
        )


class UnknownWrappingKey(ResidentError):
    """A record's data key is wrapped by ``key_id``, which the keyring does not hold."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(
            f"personal data is wrapped by key {key_id!r}, which is not in ANJU_RESIDENT_KEYS; "
            "add it back (a key may be removed only after `anju cloud residents rekey`)"
        )


class PersonalDataCorrupt(ResidentError):
    """Authentication failed: the stored bytes were altered, or belong to another row."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"personal data failed authentication: {problem}")


class ResidentNotFound(ResidentError):
    def __init__(self, resident_id: int) -> None:
        self.resident_id = resident_id
        super().__init__(f"no resident {resident_id}")


class ResidentExists(ResidentError):
    """``reference`` (the care provider's id for the person) is registered already."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        super().__init__(f"a resident with reference {reference!r} is registered already")


class ResidentErased(ResidentError):
    """The resident exercised the deletion right; the row keeps no and takes no data."""

    def __init__(self, resident_id: int) -> None:
        self.resident_id = resident_id
        super().__init__(f"resident {resident_id} was erased")


class InvalidResident(ResidentError):
    """``field`` cannot take the value given: ``problem`` says why."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"resident {field}: {problem}")
