"""Errors of the broker administration, each naming the command, gateway or value.

CloudError
└── BrokerError
    ├── BrokerAdminError        the plugin refused a command (carries it and its text)
    │   ├── AccountInUse            a gateway id names an account that is not a gateway's
    │   └── BrokerUnreachable       no answer: the broker is down, refused the admin
    │                               account, or did not answer in time; retry later
    ├── CertificateRequestError  a gateway's CSR is malformed, badly signed, or names
    │                            another gateway
    └── TopicLevelError          a gateway id or community would not be one (or two)
                                 plain topic levels, so its ACLs would widen
"""

from __future__ import annotations

from cloud.errors import CloudError


class BrokerError(CloudError):
    """Base of every error of ``cloud.broker``."""


class BrokerAdminError(BrokerError):
    """The dynamic-security plugin refused ``command`` with ``error`` (its own text).

    ``subject`` is the client or role the command concerned, when it had one.
    """

    def __init__(self, command: str, error: str, *, subject: str | None = None) -> None:
        self.command = command
        self.error = error
        self.subject = subject
        about = f" {subject!r}" if subject else ""
        super().__init__(f"broker refused {command}{about}: {error}")


class AccountInUse(BrokerAdminError):
    """``subject`` names a broker account that is not that gateway's (the cloud workers',
    the plugin's admin, one made by hand): granting or revoking a gateway of that name
    would delete it, so nothing is done."""

    def __init__(self, command: str, username: str, roles: tuple[str, ...]) -> None:
        held = ", ".join(roles) or "none"
        super().__init__(
            command,
            f"the broker account {username!r} is not a gateway's (its roles: {held}); "
            "give the gateway another id",
            subject=username,
        )


class BrokerUnreachable(BrokerAdminError):
    """The broker could not be asked at all; nothing is known to have changed.

    Every operation of ``DynamicSecurity`` is idempotent, so the caller retries the
    whole operation later.
    """


class CertificateRequestError(BrokerError):
    """A certificate signing request cannot be signed for ``gateway``: ``reason`` says why."""

    def __init__(self, gateway: str, reason: str) -> None:
        self.gateway = gateway
        self.reason = reason
        super().__init__(f"certificate request for gateway {gateway!r}: {reason}")


class TopicLevelError(BrokerError):
    """``value`` cannot stand in a topic as ``what``: it is empty or holds ``/``, ``+``,
    ``#``, a NUL or a leading ``$``, any of which would change what an ACL matches."""

    def __init__(self, what: str, value: str) -> None:
        self.what = what
        self.value = value
        super().__init__(f"{what} {value!r} cannot stand in an MQTT topic ACL")
