"""Errors of the config pusher, each naming the broker or topic concerned.

    CloudError
    └── ConfigPushError
        ├── ConfigLinkLost     the broker connection failed, refused us or timed out;
        │                      the worker reconnects with backoff
        └── DeviceTestRefused  a device test that cannot be asked for: the device is
                               removed, its gateway revoked, or it is behind another
                               gateway than the one named

A gateway's refusal of a config is not an error here: it is an answer, recorded on
the gateway's row (``cloud.configs.store``).
"""

from __future__ import annotations

from cloud.errors import CloudError


class ConfigPushError(CloudError):
    """Base of the errors of ``cloud.configs``."""


class ConfigLinkLost(ConfigPushError):
    """The connection to ``broker`` (its redacted URL) failed while ``doing``."""

    def __init__(self, broker: str, doing: str, reason: str) -> None:
        self.broker = broker
        self.doing = doing
        self.reason = reason
        super().__init__(f"config pusher on {broker}: {doing} failed: {reason}")


class DeviceTestRefused(ConfigPushError):
    """``device`` (behind ``gateway``) cannot be tested through its gateway: ``reason``."""

    def __init__(self, device: str, gateway: str | None, reason: str) -> None:
        self.device = device
        self.gateway = gateway
        self.reason = reason
        super().__init__(f"cannot test {device} through its gateway: {reason}")
