"""``anju provision``: a gateway box given its own identity by the cloud, on site.

``gateway`` registers the box through the API and writes its config with the broker
credentials the cloud issued for it alone: a password, or a client certificate whose
private key is made here and never leaves the box (the cloud signs a request for it).
``rotate`` replaces them, ``revoke`` cuts a lost box off the broker, and ``check``
says whether the box is ready (``anju.provision_check``).

Every file is written whole or not at all (a temporary file, fsync, rename), so a
power cut leaves the old config or the new one; the config and the private key are
mode 0600, owned by the user the agent runs as. Re-running ``gateway`` is safe: the
cloud answers with fresh credentials for the same id, and the config keeps every key
it had (devices, drivers, cameras, ...) but those it is given.
"""

import json
import os
import pwd
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

import typer
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from anju.api_client import cloud_session, config_defaults, fail_command
from anju.commands.common import (
    CLOUD_URL_VAR,
    DEFAULT_GATEWAY_CONFIG,
    CloudOption,
    JsonOption,
    ProfilesOption,
)
from anju.provision_check import CheckRow, Result, run_checks
from edge.config import parse_config
from edge.errors import ConfigError

DEFAULT_STATE_DIR: Final = Path("/var/lib/anju")
AGENT_USER: Final = "anju"
"""The user ``anju-edge.service`` runs the agent as; it must read what is written here."""
CA_FILE: Final = "broker-ca.crt"

app = typer.Typer(
    help="Give a gateway box its own identity: register it with the cloud and write its "
    "config with broker credentials for it alone (provision gateway), replace them "
    "(rotate), cut a lost box off (revoke), and check the box on site (check).\n\n"
    f"The cloud's API is --cloud, else ${CLOUD_URL_VAR}, else the config's cloud: key "
    "(written by provision gateway). The API key comes from $ANJU_API_KEY, else a "
    "prompt that does not echo: an installer key whose scope is the community.",
    epilog="The visit, step by step: docs/install.md.\n\n"
    "  export ANJU_API_KEY=anju_...   (or let the prompt ask)\n\n"
    "  sudo -E anju provision gateway --community xijin/fenghuang --name gw-fh-01 "
    "--cloud https://api.example.cn\n\n"
    "  anju device import devices.csv --gateway gw-fh-01 --dry-run\n\n"
    "  sudo systemctl restart anju-edge && anju provision check",
    no_args_is_help=True,
)


class Auth(StrEnum):
    PASSWORD = "password"
    CERTIFICATE = "certificate"


ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        metavar="FILE",
        help="The gateway's config file (the agent's --config).",
        dir_okay=False,
    ),
]


@dataclass
class Written:
    """What a provisioning wrote, for the installer and for ``--json``."""

    config: Path
    files: list[Path] = field(default_factory=list)
    owner: str = ""
    broker: str = ""


@app.command(
    "gateway",
    epilog="Examples:\n\n"
    "  sudo -E anju provision gateway --community xijin/fenghuang --name gw-fh-01 "
    "--cloud https://api.example.cn\n\n"
    "  sudo -E anju provision gateway --community xijin/fenghuang --name gw-fh-01 "
    "--cloud https://api.example.cn --auth certificate\n\n"
    "With --auth certificate a private key is made on this box (never sent; mode 0600) "
    "and the cloud signs a certificate for it; the broker knows the gateway by the "
    "certificate's name. Files go next to the config, named after it (gateway.key, "
    "gateway.crt for gateway.yaml) with "
    f"{CA_FILE} (the broker's CA, when the cloud hands one out). Re-running gives the "
    "same id fresh credentials; the old ones stop working at once. Run as root, the "
    f"files are given to the {AGENT_USER} user when it exists.",
)
def provision_gateway(
    community: Annotated[
        str,
        typer.Option(
            "--community",
            metavar="STREET/COMMUNITY",
            help="The community the box serves, e.g. xijin/fenghuang (the installer "
            "key must reach it).",
            show_default=False,
        ),
    ],
    name: Annotated[
        str,
        typer.Option(
            "--name",
            metavar="GW",
            help="The gateway's id, unique in the city: lower-case, e.g. gw-fh-01.",
            show_default=False,
        ),
    ],
    cloud: CloudOption = None,
    auth: Annotated[
        Auth,
        typer.Option(
            "--auth",
            help="How the gateway proves itself to the broker: a password, or a client "
            "certificate whose key never leaves the box.",
        ),
    ] = Auth.PASSWORD,
    config: ConfigOption = DEFAULT_GATEWAY_CONFIG,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            metavar="DIR",
            help="Where the agent keeps its spool and audit log (default: the config's, "
            f"else {DEFAULT_STATE_DIR}).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Register this box as a gateway of a community and write its config.

    The config (mode 0600) gets gateway, community, broker (with the password in it),
    the TLS files, state_dir and cloud; every other key of an existing config stays.
    Refused when the config belongs to another gateway: provisioning must not quietly
    turn one box into another.
    """
    document = _read_document(config, as_json)
    existing = document.get("gateway")
    if existing not in (None, name):
        fail_command(
            as_json,
            f"{config} is the config of gateway {existing!r}, not {name!r}; to reprovision "
            f"this box as {name}, move that file away first (or use --config)",
        )
    had_certificate = bool(document.get("tls_cert_file"))
    key, csr = _key_and_csr(name) if auth is Auth.CERTIFICATE else (None, None)
    with cloud_session(cloud, _text(document.get("cloud")), as_json=as_json) as api:
        answer, created = api.register_gateway(name, community, auth=auth.value, csr=csr)
        base_url = api.base_url
    document["community"] = community
    document["state_dir"] = str(state_dir or document.get("state_dir") or DEFAULT_STATE_DIR)
    written = _install(config, document, name, answer["credentials"], key, base_url, as_json)
    if as_json:
        typer.echo(json.dumps(_written_json(written, answer, created=created)))
        return
    verb = "registered" if created else "was registered already; issued new credentials for"
    typer.echo(f"{verb} {name} in {community}" + ("" if created else _old_ones(had_certificate)))
    _print_written(written)
    typer.echo(
        f"next: add its devices (anju device add|import --gateway {name}), start the agent "
        "(sudo systemctl restart anju-edge), then run anju provision check"
    )


@app.command(
    "rotate",
    epilog="Examples:\n\n"
    "  sudo -E anju provision rotate\n\n"
    "  sudo -E anju provision rotate --config /etc/anju/gateway.yaml --auth certificate\n\n"
    "The broker drops the old credentials at once; the running agent reads the new ones "
    "from the file on its next connect and sends what it spooled meanwhile. Nothing is "
    "lost and the agent need not restart.",
)
def provision_rotate(
    config: ConfigOption = DEFAULT_GATEWAY_CONFIG,
    cloud: CloudOption = None,
    auth: Annotated[
        Auth | None,
        typer.Option(
            "--auth",
            help="Switch to this kind of credentials (default: the kind the config uses).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Replace the gateway's broker credentials and rewrite its config; the spool stays."""
    document = _read_document(config, as_json)
    gateway = _text(document.get("gateway"))
    if gateway is None:
        fail_command(
            as_json,
            f"{config} names no gateway: provision it first (anju provision gateway)",
            code=2,
        )
    had_certificate = bool(document.get("tls_cert_file"))
    kind = auth or (Auth.CERTIFICATE if had_certificate else Auth.PASSWORD)
    key, csr = _key_and_csr(gateway) if kind is Auth.CERTIFICATE else (None, None)
    with cloud_session(cloud, _text(document.get("cloud")), as_json=as_json) as api:
        answer = api.issue_credentials(gateway, auth=kind.value, csr=csr)
        base_url = api.base_url
    written = _install(config, document, gateway, answer["credentials"], key, base_url, as_json)
    if as_json:
        typer.echo(json.dumps(_written_json(written, answer, created=False)))
        return
    typer.echo(f"new {kind.value} credentials for {gateway}" + _old_ones(had_certificate))
    _print_written(written)
    typer.echo(
        "the running agent reads them on its next connect and sends what it spooled "
        "meanwhile; no restart needed"
    )


@app.command(
    "revoke",
    epilog="Examples:\n\n"
    "  anju provision revoke --gateway gw-fh-01 --cloud https://api.example.cn\n\n"
    "  anju provision revoke --gateway gw-fh-01 --yes        (no question: for scripts)\n\n"
    "For a lost or stolen box. The broker deletes its account and closes its connection "
    "at once; the cloud refuses its batches from then on. A revoked id is never used "
    "again: a replacement box gets a new name.",
)
def provision_revoke(
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            metavar="GW",
            help="The gateway to cut off (default: the one of --config).",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    cloud: CloudOption = None,
    config: ConfigOption = DEFAULT_GATEWAY_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Revoke a gateway: its broker credentials stop at once, for good."""
    config_gateway, config_cloud = config_defaults(config)
    gateway = gateway or config_gateway
    if not gateway:
        fail_command(as_json, "which gateway? pass --gateway GW", code=2)
    if not yes:
        if not sys.stdin.isatty():
            fail_command(
                as_json, f"revoking {gateway} cannot be undone: confirm with --yes", code=2
            )
        typer.confirm(
            f"Revoke {gateway}? It is cut off the broker at once and its id is never used again",
            abort=True,
        )
    with cloud_session(cloud, config_cloud, as_json=as_json) as api:
        revoked = api.revoke_gateway(gateway)
    if as_json:
        typer.echo(json.dumps({"ok": True, "gateway": revoked}))
        return
    typer.echo(
        f"revoked {revoked['id']} of {revoked.get('community', '?')}: the broker refuses it "
        "from now on; give a replacement box a new name"
    )


@app.command(
    "check",
    epilog="Examples:\n\n"
    "  anju provision check\n\n"
    "  anju provision check --config /etc/anju/gateway.yaml --json --timeout 2\n\n"
    "Checks, each with its fix when it fails: the config (readable, mode 0600); the "
    "broker (a TLS connection with these credentials, as a client of its own so the "
    "running agent is not disturbed); the clock (against the cloud's, at most 5 s "
    "apart); each device (one read through its profile, the pushed devices when the "
    "cloud has pushed a config); the spool folder (writable, free space at least twice "
    "spool_budget_mb); the config version (what the box runs against what the cloud "
    "wants). Exits 1 when any check fails.",
)
def provision_check(
    config: ConfigOption = DEFAULT_GATEWAY_CONFIG,
    cloud: CloudOption = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            metavar="S",
            min=0.1,
            max=120,
            help="Seconds each check may take: the broker's connection, the cloud's "
            "answer, each request to a device.",
        ),
    ] = 3.0,
    profiles: ProfilesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check on site that the gateway is ready: broker, clock, devices, spool, config."""
    rows = run_checks(config, cloud=cloud, timeout_s=timeout, profiles=profiles)
    failed = [row for row in rows if row.result is Result.FAIL]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": not failed,
                    "config": str(config),
                    "checks": [row.as_json() for row in rows],
                }
            )
        )
        raise typer.Exit(1 if failed else 0)
    console = Console()
    console.print(_check_table(rows))
    if failed:
        console.print(
            f"[red]{len(failed)} check(s) failed[/red]: fix them and run anju provision "
            "check again.",
            highlight=False,
        )
        raise typer.Exit(1)
    console.print("[green]all checks passed[/green]", highlight=False)


_STYLE: Final = {
    Result.PASS: "green",
    Result.WARN: "yellow",
    Result.FAIL: "red",
    Result.SKIP: "dim",
}


def _check_table(rows: list[CheckRow]) -> Table:
    table = Table(title="anju provision check")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for row in rows:
        style = _STYLE[row.result]
        table.add_row(
            escape(row.check),
            f"[{style}]{row.result.value}[/{style}]",
            escape(row.detail),
            escape(row.fix),
        )
    return table


def _read_document(config: Path, as_json: bool) -> dict[str, Any]:
    """The config file as a mapping ({} when there is none yet); unreadable ends the command."""
    try:
        text = config.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        fail_command(as_json, f"cannot read {config}: {exc.strerror}")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        fail_command(as_json, f"{config} is not valid YAML ({exc}); fix it or move it away")
    if document is None:
        return {}
    if not isinstance(document, dict):
        fail_command(as_json, f"{config} does not hold a mapping; fix it or move it away")
    return document


def _key_and_csr(gateway: str) -> tuple[bytes, str]:
    """A new P-256 private key (PEM) and a certificate request for it named ``gateway``."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway)]))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, request.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _install(
    config: Path,
    document: dict[str, Any],
    gateway: str,
    credentials: dict[str, Any],
    key: bytes | None,
    cloud: str,
    as_json: bool,
) -> Written:
    """Write the credentials' files and the config that uses them; the config last, so
    it never names a file not yet written. Raises nothing: a failure ends the command."""
    folder = config.parent
    owner = _owner(config)
    written = Written(config, owner=_user_name(owner))
    document["gateway"] = gateway
    document["cloud"] = cloud
    broker = str(credentials["broker_url"])
    if key is not None:
        certificate = str(credentials.get("certificate") or "")
        if not certificate:
            fail_command(as_json, "the cloud issued no certificate for the request; try again")
        key_file, cert_file = folder / f"{config.stem}.key", folder / f"{config.stem}.crt"
        written.files += [
            _write(key_file, key, 0o600, owner, as_json),
            _write(cert_file, certificate.encode("ascii"), 0o644, owner, as_json),
        ]
        document["tls_key_file"], document["tls_cert_file"] = str(key_file), str(cert_file)
        document["broker"] = broker
    else:
        document.pop("tls_key_file", None)
        document.pop("tls_cert_file", None)
        document["broker"] = _with_credentials(
            broker, str(credentials["username"]), str(credentials.get("password") or "")
        )
    ca = credentials.get("ca_certificate")
    if ca:
        ca_file = folder / CA_FILE
        written.files.append(_write(ca_file, str(ca).encode("ascii"), 0o644, owner, as_json))
        document["tls_ca_file"] = str(ca_file)
    try:
        checked = parse_config(document, str(config))
    except ConfigError as exc:
        fail_command(as_json, f"the config would not load, so it was not written: {exc}")
    written.broker = checked.broker_address.redacted()
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    _write(config, text.encode("utf-8"), 0o600, owner, as_json)
    return written


def _with_credentials(url: str, username: str, password: str) -> str:
    """``url`` with ``username:password@`` in it, each percent-encoded."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = quote(username, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def _owner(config: Path) -> tuple[int, int] | None:
    """Whose the written files are. As root on a box with the agent's user: that user's,
    since the agent (``anju-edge.service``) must read a config only its owner may read.
    Otherwise the existing config's owner, else None (whoever runs this)."""
    if os.geteuid() == 0:
        with suppress(KeyError):
            user = pwd.getpwnam(AGENT_USER)
            return user.pw_uid, user.pw_gid
    with suppress(FileNotFoundError):
        status = config.stat()
        return status.st_uid, status.st_gid
    return None


def _user_name(owner: tuple[int, int] | None) -> str:
    uid = os.geteuid() if owner is None else owner[0]
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _write(
    path: Path, data: bytes, mode: int, owner: tuple[int, int] | None, as_json: bool
) -> Path:
    """Replace ``path`` with ``data`` whole: a temporary file in its folder, with its
    mode and owner set before any byte is written, fsynced, renamed over it, and the
    folder fsynced so the rename survives a power cut."""
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(descriptor, mode)
            if owner is not None:
                os.fchown(descriptor, *owner)
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    except OSError as exc:
        with suppress(OSError):
            temporary.unlink()
        fail_command(as_json, f"cannot write {path}: {exc.strerror or exc}")
    return path


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _print_written(written: Written) -> None:
    typer.echo(
        f"wrote {written.config} (mode 0600, owner {written.owner}): broker {written.broker}"
    )
    for path in written.files:
        mode = path.stat().st_mode & 0o777
        typer.echo(f"wrote {path} (mode {mode:04o})")


def _written_json(written: Written, answer: dict[str, Any], *, created: bool) -> dict[str, Any]:
    gateway = answer.get("gateway", {})
    credentials = answer.get("credentials", {})
    return {
        "ok": True,
        "gateway": gateway.get("id"),
        "community": gateway.get("community"),
        "created": created,
        "auth": gateway.get("auth"),
        "config": str(written.config),
        "files": [str(path) for path in written.files],
        "owner": written.owner,
        "broker": written.broker,
        "issued_at": credentials.get("issued_at"),
        "config_version": answer.get("config_version"),
    }


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _old_ones(had_certificate: bool) -> str:
    """What became of the credentials replaced. A password stops at once; a certificate
    carries the gateway's id, which the broker still knows, so it works until it
    expires (docs/broker.md, "revoking a certificate")."""
    if had_certificate:
        return (
            "; the old certificate keeps working until it expires: revoke it on the "
            "broker's CRL if the box that held it is lost (docs/broker.md)"
        )
    return "; the old password no longer works"
