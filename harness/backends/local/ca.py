"""Our own mesh CA: a root that istiod plugs in and that signs every workload's SPIFFE cert.

Workload certs carry ``spiffe://<trust domain>/ns/<ns>/sa/<sa>`` as their only URI SAN, the
identity Istio's authorization sees. pilot-agent reads them as files from
``./var/run/secrets/workload-spiffe-credentials/`` of its working directory.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
CREDENTIALS_DIR = Path("var/run/secrets/workload-spiffe-credentials")


def spiffe_id(namespace: str, service_account: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    valid_for: dt.timedelta,
    *,
    ca: bool,
) -> x509.CertificateBuilder:
    """A certificate valid from 5 minutes ago for ``valid_for``: a CA (signs certs) or a workload's
    (TLS client and server key)."""
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
    )


@dataclass(frozen=True)
class MeshCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, *, days: int = 7) -> MeshCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshproof"),
                x509.NameAttribute(NameOID.COMMON_NAME, "meshproof root CA"),
            ]
        )
        cert = (
            _builder(name, name, key.public_key(), dt.timedelta(days=days), ca=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def root_pem(self) -> bytes:
        return _pem_cert(self.cert)

    def write_istiod_cacerts(self, directory: Path) -> Path:
        """The plugged-CA layout istiod reads from ``ROOT_CA_DIR``."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca-cert.pem").write_bytes(self.root_pem)
        (directory / "ca-key.pem").write_bytes(_pem_key(self.key))
        (directory / "root-cert.pem").write_bytes(self.root_pem)
        (directory / "cert-chain.pem").write_bytes(self.root_pem)
        (directory / "ca-key.pem").chmod(0o600)
        return directory

    def issue(self, identity: str, *, hours: int = 48) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) for a workload whose only URI SAN is ``identity``."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(
                x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshproof")]),
                self.cert.subject,
                key.public_key(),
                dt.timedelta(hours=hours),
                ca=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return _pem_cert(cert), _pem_key(key)

    def write_workload_credentials(self, workdir: Path, identity: str) -> Path:
        """Write cert-chain.pem, key.pem and root-cert.pem where pilot-agent looks for them."""
        cert, key = self.issue(identity)
        d = workdir / CREDENTIALS_DIR
        d.mkdir(parents=True, exist_ok=True)
        (d / "cert-chain.pem").write_bytes(cert)
        (d / "key.pem").write_bytes(key)
        (d / "key.pem").chmod(0o600)
        (d / "root-cert.pem").write_bytes(self.root_pem)
        return d
