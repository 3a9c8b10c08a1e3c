"""Signing a gateway's certificate request with the deployment's client CA.

A certificate gateway makes its private key on the box and sends only a CSR; the
cloud signs it here, so the key never leaves the gateway. The certificate names the
gateway id as its common name, which the broker's certificate listener
(``use_identity_as_username``) takes as the username the dynamic-security plugin
knows it by.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.broker.errors import CertificateRequestError

MIN_RSA_BITS: Final = 2048
BACKDATE: Final = timedelta(minutes=5)
"""Valid from a little before now, so a gateway whose clock runs behind accepts it."""


def sign_gateway_csr(
    csr_pem: str | bytes, gateway: str, ca_cert_path: Path, ca_key_path: Path, days: int
) -> str:
    """A PEM client certificate for ``gateway``, valid ``days`` days, from its CSR.

    The CSR must be well formed, signed by the key it carries (proof the requester
    holds it), carry an RSA (>= 2048 bits) or EC key, and name exactly ``gateway`` as
    its common name; otherwise ``CertificateRequestError`` says which. The certificate
    takes only the common name from the CSR, allows client authentication alone and
    has a random serial.
    """
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise CertificateRequestError(gateway, f"not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise CertificateRequestError(gateway, "its signature does not match its public key")
    names = [str(attr.value) for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [gateway]:
        raise CertificateRequestError(
            gateway, f"its common name must be the gateway id {gateway!r}, not {names or 'none'}"
        )
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateRequestError(
                gateway, f"an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are needed"
            )
    elif not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateRequestError(gateway, "only RSA and EC keys are accepted")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateRequestError(gateway, f"the CA key {ca_key_path} is neither RSA nor EC")
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway)]))
        .issuer_name(ca_cert.subject)
        .public_key(key)
        .serial_number(secrets.randbits(159) | 1)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=isinstance(key, rsa.RSAPublicKey),
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()
