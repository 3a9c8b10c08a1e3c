"""Mosquitto, the system package's broker, run as a child process on a loopback port.

Debian's package does not start the broker here (no systemd), and tests must not
share one broker with whatever else runs on the machine, so each ``MosquittoServer``
writes its own config into a directory it is given and runs ``mosquitto -c`` on it.

It can load the dynamic-security plugin (accounts and ACLs changed over the
``$CONTROL/dynamic-security/v1`` topic, docs/broker.md) and open more than one
listener, such as a TLS password listener and a TLS client-certificate listener.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from anju.services import ServiceError, read_log_tail, stop_process
from anju.services.ports import LOOPBACK, free_port, wait_for_port

__all__ = ["MosquittoServer", "find_dynsec_plugin", "find_mosquitto", "find_mosquitto_ctrl"]

_SBIN_DIRS: Final = (Path("/usr/sbin"), Path("/usr/local/sbin"))
_PLUGIN_GLOBS: Final = (
    "/usr/lib/*/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/*/mosquitto_dynamic_security.so",
)
_CTRL_TIMEOUT_S: Final = 30.0


def find_mosquitto() -> Path | None:
    """Return the ``mosquitto`` binary on PATH or in /usr/sbin, or None.

    /usr/sbin is searched as well because Debian installs the broker there and
    that directory is not on a normal user's PATH.
    """
    found = shutil.which("mosquitto")
    if found is not None:
        return Path(found)
    for directory in _SBIN_DIRS:
        candidate = directory / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_mosquitto_ctrl() -> Path | None:
    """Return ``mosquitto_ctrl`` (package mosquitto-clients), or None."""
    found = shutil.which("mosquitto_ctrl")
    return Path(found) if found is not None else None


def find_dynsec_plugin() -> Path | None:
    """Return the dynamic-security plugin library shipped with Mosquitto, or None.

    Debian installs it under the multiarch directory
    (/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so).
    """
    for pattern in _PLUGIN_GLOBS:
        for candidate in sorted(glob.glob(pattern)):
            return Path(candidate)
    return None


class MosquittoServer:
    """A Mosquitto broker on 127.0.0.1, anonymous, owned by this process.

    Use it as a context manager, or call ``start()`` and ``stop()``. After
    ``stop()`` (or ``kill()``) a later ``start()`` listens on the same port again,
    so clients configured with ``url`` reconnect to it: fault tests rely on that.
    Files (``mosquitto.conf``, ``mosquitto.log``, the persistence file) live in
    ``work_dir``; the log is appended to across restarts.

    With ``persistence=True`` sessions and queued QoS 1 messages survive ``stop()``
    and ``start()`` (Mosquitto saves them on a clean shutdown; ``kill()`` loses what
    was not yet saved, as a crash would).

    With ``dynsec_admin=(user, password)`` the broker loads the dynamic-security
    plugin: before the first start ``mosquitto_ctrl dynsec init`` makes
    ``work_dir/dynsec.json`` with that admin account, and the plugin keeps that file
    up to date from then on, so accounts survive restarts. Security settings are then
    global (``per_listener_settings false``): every listener authenticates through
    the plugin. ``extra_listeners`` each give the lines of one more listener on a
    port of its own (``extra_ports``, in the same order).
    """

    protocol_version: Final = "5"
    supports_shared_subscriptions: Final = True

    def __init__(
        self,
        work_dir: Path,
        *,
        port: int | None = None,
        binary: Path | None = None,
        persistence: bool = False,
        max_inflight_messages: int = 1000,
        max_queued_messages: int = 100_000,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        listener_config: Sequence[str] = ("allow_anonymous true",),
        extra_listeners: Sequence[Sequence[str]] = (),
        dynsec_admin: tuple[str, str] | None = None,
        dynsec_plugin: Path | None = None,
    ) -> None:
        """``listener_config`` lines follow the listener line: the default lets anyone
        in; a test of TLS or credentials gives ``cafile``/``certfile``/``keyfile``,
        ``password_file``, ``acl_file`` and ``allow_anonymous false`` instead.
        ``dynsec_plugin`` defaults to ``find_dynsec_plugin()``."""
        self.work_dir = work_dir
        self.listener_config = tuple(listener_config)
        self.extra_listeners = tuple(tuple(lines) for lines in extra_listeners)
        self.extra_ports = tuple(free_port() for _ in self.extra_listeners)
        self.dynsec_admin = dynsec_admin
        self._dynsec_plugin = dynsec_plugin
        self.dynsec_path = work_dir / "dynsec.json"
        self._port = port if port is not None else free_port()
        self._binary = binary
        self.persistence = persistence
        self.max_inflight_messages = max_inflight_messages
        self.max_queued_messages = max_queued_messages
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.config_path = work_dir / "mosquitto.conf"
        self.log_path = work_dir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``; stays the same across restarts."""
        return f"mqtt://{LOOPBACK}:{self._port}"

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs, else None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Write the config, start the broker and wait until it accepts connections.

        Does nothing if it already runs. Raises ``ServiceError`` (with the tail of
        the broker's log) if the binary is missing, the broker exits, or the port
        does not accept connections within ``start_timeout`` seconds.
        """
        if self.running:
            return
        binary = self._binary or find_mosquitto()
        if binary is None:
            raise ServiceError(
                "mosquitto not found on PATH or in /usr/sbin; install it "
                "(apt-get install mosquitto) or run scripts/test, which does",
                service="mosquitto",
                port=self._port,
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        plugin = self._prepare_dynsec() if self.dynsec_admin is not None else None
        self.config_path.write_text(self._config(plugin), encoding="utf-8")
        with self.log_path.open("ab") as log:
            try:
                self._process = subprocess.Popen(
                    [str(binary), "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.work_dir,
                    # Its own session, so a Ctrl-C meant for the demo reaches us and we
                    # stop the broker in order, instead of the terminal killing it first.
                    start_new_session=True,
                )
            except OSError as exc:
                raise ServiceError(
                    f"cannot run mosquitto: {exc}", service="mosquitto", binary=binary
                ) from exc
        atexit.register(self.stop)
        try:
            for port in (self._port, *self.extra_ports):
                wait_for_port(port, timeout=self.start_timeout, process=self._process)
        except (ChildProcessError, TimeoutError) as exc:
            self.stop()
            raise ServiceError(
                f"broker did not start: {exc}",
                service="mosquitto",
                binary=binary,
                port=self._port,
                log_tail=read_log_tail(self.log_path),
            ) from None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``stop_timeout``); idempotent."""
        self._end(kill=False)

    def kill(self) -> None:
        """Kill the broker with SIGKILL, as a crash would; ``start()`` works afterwards."""
        self._end(kill=True)

    def _end(self, *, kill: bool) -> None:
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is None:
            return
        if kill:
            process.kill()
            process.wait(timeout=self.stop_timeout)
        else:
            stop_process(process, timeout=self.stop_timeout)

    def _prepare_dynsec(self) -> Path:
        """The plugin's path, after making ``dynsec.json`` if this is the first start."""
        plugin = self._dynsec_plugin or find_dynsec_plugin()
        if plugin is None:
            raise ServiceError(
                "mosquitto_dynamic_security.so not found under /usr/lib; it ships with "
                "the mosquitto package (2.0 or later)",
                service="mosquitto",
                port=self._port,
            )
        if self.dynsec_path.exists() or self.dynsec_admin is None:
            return plugin
        ctrl = find_mosquitto_ctrl()
        if ctrl is None:
            raise ServiceError(
                "mosquitto_ctrl not found on PATH; install mosquitto-clients",
                service="mosquitto",
                port=self._port,
            )
        user, password = self.dynsec_admin
        try:
            subprocess.run(
                [str(ctrl), "dynsec", "init", str(self.dynsec_path), user, password],
                check=True,
                capture_output=True,
                timeout=_CTRL_TIMEOUT_S,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            output = getattr(exc, "stderr", b"") or getattr(exc, "stdout", b"") or b""
            raise ServiceError(
                f"mosquitto_ctrl dynsec init failed: {exc} {output.decode(errors='replace')}",
                service="mosquitto",
                binary=ctrl,
                port=self._port,
            ) from None
        return plugin

    def _config(self, dynsec_plugin: Path | None) -> str:
        lines = ["# Written by anju.services.mosquitto for one run; rewritten at every start."]
        if dynsec_plugin is not None:
            lines += [
                # One authentication for every listener: the plugin's.
                "per_listener_settings false",
                f"plugin {dynsec_plugin}",
                f"plugin_opt_config_file {self.dynsec_path}",
            ]
        lines += [f"listener {self._port} {LOOPBACK}", *self.listener_config]
        for port, listener in zip(self.extra_ports, self.extra_listeners, strict=True):
            lines += [f"listener {port} {LOOPBACK}", *listener]
        lines += [
            # The default per-client limits (20 in flight, 1000 queued) make the broker
            # drop QoS 1 messages for a subscriber that falls behind a burst, which
            # would look like message loss in the tests; raise them on purpose.
            f"max_inflight_messages {self.max_inflight_messages}",
            f"max_queued_messages {self.max_queued_messages}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto switches to the `mosquitto` user, which cannot reach
            # a private temporary directory; the broker only listens on loopback.
            lines.append("user root")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.work_dir}/",
                "persistence_file mosquitto.db",
            ]
        else:
            lines.append("persistence false")
        return "\n".join(lines) + "\n"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
