"""The local mesh's root CA: a key and self-signed root that istiod plugs in (``ROOT_CA_DIR``).

Only the root comes from here. istiod's CA holds its key and signs every workload certificate
itself, for the SPIFFE ID it derives from the ServiceAccount token pilot-agent sends with its CSR
(see :mod:`harness.backends.local.tokens`); a plugged-in root is how Istio is installed with
one's own CA on Kubernetes too (the ``cacerts`` secret).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class MeshCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, *, days: int = 7) -> MeshCA:
        """A self-signed root valid from 5 minutes ago for ``days``, allowed to sign certificates."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshproof"),
                x509.NameAttribute(NameOID.COMMON_NAME, "meshproof root CA"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def root_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write_istiod_cacerts(self, directory: Path) -> Path:
        """The plugged-CA layout istiod reads from ``ROOT_CA_DIR``. The root signs workload
        certificates itself, so there is no intermediate: ``cert-chain.pem`` is empty (istiod
        appends the root to each workload chain; with the root in ``cert-chain.pem`` too, every
        chain held it twice, where a cluster's self-signed istiod sends leaf and root: found by
        bench/fidelity.py)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca-cert.pem").write_bytes(self.root_pem)
        (directory / "ca-key.pem").write_bytes(_pem_key(self.key))
        (directory / "root-cert.pem").write_bytes(self.root_pem)
        (directory / "cert-chain.pem").write_bytes(b"")
        (directory / "ca-key.pem").chmod(0o600)
        return directory
