"""The device list the cloud pushes (``apply_config``): checked, merged, kept on disk.

A pushed ``GatewayConfigDocument`` replaces the ``devices`` of the gateway's config
file and adds its profiles to the gateway's own (a pushed profile wins over a bundled
one of the same id); identity, broker, drivers and cameras stay as the file says. So
a document is always judged against the file: ``parse_pushed`` gives the config the
gateway would run, or raises ConfigRefused saying why it will not.

The document the gateway runs is kept in ``state_dir/pushed-config.json``, byte for
byte as it came, written atomically (a power cut leaves the old file or the new one,
never half of either) and readable by its owner alone, because it names every device
of the community and where it is. ``anju edge run`` loads it at start, so a restart
keeps the pushed devices.

Errors (all ``EdgeError``):

ConfigRefused   a document this gateway will not run, ever: the cloud must change it
ConfigNotNow    a document the gateway cannot take at the moment (a fire alarm is on)
"""

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec
from pydantic import ValidationError

from edge.config import DeviceConfig, GatewayConfig, parse_config
from edge.errors import ConfigError, EdgeError
from schemas.errors import WireError
from schemas.profile import DeviceProfile
from schemas.wire import GatewayConfigDocument, decode

log = logging.getLogger(__name__)

PUSHED_FILE = "pushed-config.json"
"""The pushed document's name inside the gateway's ``state_dir``."""


class ConfigRefused(EdgeError):
    """A pushed document this gateway will not run; ``reason`` is what the cloud is told."""

    def __init__(self, version: int | None, reason: str) -> None:
        self.version = version
        self.reason = reason
        what = "pushed config" if version is None else f"pushed config version {version}"
        super().__init__(f"{what}: {reason}")


class ConfigNotNow(EdgeError):
    """A config the gateway cannot take at the moment; the same one may be sent later."""

    def __init__(self, version: int, reason: str) -> None:
        self.version = version
        self.reason = reason
        super().__init__(f"pushed config version {version}: not now, {reason}")


@dataclass(frozen=True, slots=True)
class PushedConfig:
    """A pushed document that passed the checks that need no device."""

    version: int
    document: bytes
    """The document as it came, which is what is stored."""
    config: GatewayConfig
    """The file's config with the pushed devices."""
    profiles: dict[str, DeviceProfile]
    """The gateway's own profiles with the pushed ones added."""

    @property
    def source(self) -> str:
        """How errors about this config name it (in place of a file name)."""
        return f"pushed config version {self.version}"


@dataclass(frozen=True, slots=True)
class DeviceChanges:
    """Device ids by what a new config does to them, each sorted."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    """In both, with a different entry (profile, address, place, egress, interval) or
    a different profile document under the same id."""

    def summary(self) -> str:
        """``added a, b; removed c`` or ``no device changes``."""
        parts = [
            f"{what} {', '.join(ids)}"
            for what, ids in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if ids
        ]
        return "; ".join(parts) or "no device changes"


def parse_pushed(
    document: bytes,
    base: GatewayConfig,
    profiles: Mapping[str, DeviceProfile],
    *,
    version: int | None = None,
) -> PushedConfig:
    """Judge ``document`` against the file's config ``base`` and its ``profiles``.

    ``version``, when given (the command's argument), must be the document's own.
    Raises ConfigRefused for a document that does not decode, names another gateway,
    carries a profile that does not validate (or whose id differs from its key), or
    whose devices the config would not take (an address that does not parse, an id
    twice, a ``cameras`` section naming a device no longer there). Checks that need
    the profiles of the devices and their drivers are the agent's.
    """
    try:
        pushed = decode(document, GatewayConfigDocument)
    except WireError as exc:
        raise ConfigRefused(version, f"not a gateway config document: {exc.reason}") from None
    if version is not None and pushed.version != version:
        raise ConfigRefused(
            version, f"the document says version {pushed.version}, the command {version}"
        )
    if pushed.gateway != base.gateway:
        raise ConfigRefused(
            pushed.version, f"it is for gateway {pushed.gateway!r}, this is {base.gateway!r}"
        )
    merged = dict(profiles)
    for profile_id, profile_document in pushed.profiles.items():
        merged[profile_id] = _profile(pushed.version, profile_id, profile_document)
    source = f"pushed config version {pushed.version}"
    fields = {name: getattr(base, name) for name in GatewayConfig.model_fields}
    fields["devices"] = [msgspec.structs.asdict(device) for device in pushed.devices]
    try:
        config = parse_config(fields, source)
    except ConfigError as exc:
        raise ConfigRefused(pushed.version, f"{exc.key}: {exc.problem}") from None
    return PushedConfig(pushed.version, document, config, merged)


def _profile(version: int, profile_id: str, document: dict[str, object]) -> DeviceProfile:
    try:
        profile = DeviceProfile.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigRefused(
            version, f"profiles.{profile_id}.{field}: {first['msg']}{more}"
        ) from None
    if profile.id != profile_id:
        raise ConfigRefused(version, f"profiles.{profile_id}: the profile's id is {profile.id!r}")
    return profile


def changes(
    old: GatewayConfig,
    old_profiles: Mapping[str, DeviceProfile],
    new: GatewayConfig,
    new_profiles: Mapping[str, DeviceProfile],
) -> DeviceChanges:
    """What going from ``old`` to ``new`` does to each device."""
    before = {device.id: device for device in old.devices}
    after = {device.id: device for device in new.devices}

    def differs(device: DeviceConfig) -> bool:
        previous = before[device.id]
        return previous != device or old_profiles.get(previous.profile) != new_profiles.get(
            device.profile
        )

    return DeviceChanges(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(sorted(i for i in after.keys() & before.keys() if differs(after[i]))),
    )


def store(state_dir: Path, document: bytes) -> Path:
    """Write ``document`` to ``state_dir/pushed-config.json`` atomically, mode 0600.

    A temporary file in the same folder is written, fsynced and renamed over the old
    one, then the folder is fsynced, so after a power cut the file holds the old
    document or the new one. Raises OSError when the disk refuses.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / PUSHED_FILE
    handle, temporary = tempfile.mkstemp(dir=state_dir, prefix=f".{PUSHED_FILE}.")
    try:
        with os.fdopen(handle, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(document)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


def load_stored(
    base: GatewayConfig, profiles: Mapping[str, DeviceProfile], source: str
) -> PushedConfig | None:
    """The stored document judged against the file ``base``, or None.

    None when there is none, and also (logged as an error naming the file and the
    fault) when it cannot be read or no longer fits the file (the file was edited, a
    profile went away): the gateway then runs the file's devices and reports version
    0, and the cloud, seeing that, pushes again.
    """
    path = base.state_dir / PUSHED_FILE
    try:
        document = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("%s: cannot read it (%s); running the devices of %s", path, exc, source)
        return None
    try:
        return parse_pushed(document, base, profiles)
    except ConfigRefused as exc:
        log.error("%s: ignored, %s; running the devices of %s", path, exc, source)
        return None


def stored_version(state_dir: Path) -> int:
    """The version of the stored document, 0 when there is none or it does not decode.

    For tools (``anju provision check``); it does not say whether the agent took it.
    """
    try:
        return decode((state_dir / PUSHED_FILE).read_bytes(), GatewayConfigDocument).version
    except (OSError, WireError):
        return 0
