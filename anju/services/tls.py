"""Throwaway certificate authorities and certificates, for tests and the demo.

A broker with TLS needs a CA, a server certificate for 127.0.0.1 and, for its
certificate listener, client certificates; this module makes them with
``cryptography`` (no openssl binary) as EC P-256 keys. Gateway client certificates
go through the cloud's own signer (``cloud.broker.certificates.sign_gateway_csr``),
so tests exercise the path production uses.

Certificates are written mode 0644 and keys 0600: a broker started as root with
``user root`` reads them, and nobody else reads a key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.broker.certificates import sign_gateway_csr

__all__ = [
    "CertificateAuthority",
    "IssuedCertificate",
    "certificate_request",
    "issue_client_cert",
    "issue_server_cert",
    "make_ca",
    "new_key",
]

_BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA's certificate and private key, as PEM files."""

    cert_path: Path
    key_path: Path


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate signed by a CA and its private key, as PEM files."""

    cert_path: Path
    key_path: Path


def new_key(path: Path) -> Path:
    """Write a new EC P-256 private key to ``path`` (PEM, unencrypted, mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, 0o600)
    return path


def certificate_request(key_path: Path, common_name: str) -> str:
    """A PEM CSR naming ``common_name``, signed by the key in ``key_path``."""
    key = _load_key(key_path)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(directory: Path, name: str, *, days: int = 2) -> CertificateAuthority:
    """A self-signed CA called ``name``, valid ``days`` days, written to
    ``directory/{slug}.crt`` and ``.key`` (slug: ``name`` in lower case, dashes)."""
    stem = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "ca"
    key_path = new_key(directory / f"{stem}.key")
    key = _load_key(key_path)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(159) | 1)
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{stem}.crt"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return CertificateAuthority(cert_path, key_path)


def issue_server_cert(
    ca: CertificateAuthority,
    directory: Path,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    *,
    days: int = 2,
) -> IssuedCertificate:
    """A server certificate for ``hosts`` (IP addresses and DNS names in its SAN),
    written to ``directory/server.crt`` and ``server.key``."""
    key_path = new_key(directory / "server.key")
    key = _load_key(key_path)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    ca_cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    ca_key = _load_key(ca.key_path)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(159) | 1)
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = directory / "server.crt"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return IssuedCertificate(cert_path, key_path)


def issue_client_cert(
    ca: CertificateAuthority, directory: Path, common_name: str, *, days: int = 2
) -> IssuedCertificate:
    """A client certificate for ``common_name`` (a gateway id), made as a gateway
    makes one: key on this side, CSR signed by the cloud's signer. Written to
    ``directory/{common_name}.crt`` and ``.key``."""
    key_path = new_key(directory / f"{common_name}.key")
    pem = sign_gateway_csr(
        certificate_request(key_path, common_name), common_name, ca.cert_path, ca.key_path, days
    )
    cert_path = directory / f"{common_name}.crt"
    _write(cert_path, pem.encode(), 0o644)
    return IssuedCertificate(cert_path, key_path)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path}: expected an EC private key made by anju.services.tls")
    return key


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)
