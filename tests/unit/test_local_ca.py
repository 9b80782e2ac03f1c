"""The local mesh's root CA as istiod reads it (pure files, no istiod)."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from harness.backends.local.ca import MeshCA


def test_istiod_gets_the_root_as_its_signing_ca_and_no_intermediate_chain(tmp_path: Path) -> None:
    """A workload chain is then leaf + root, as a cluster's self-signed istiod sends it, not
    leaf + root + root (docs/FIDELITY.md, reason ``ca``)."""
    ca = MeshCA.create()
    d = ca.write_istiod_cacerts(tmp_path / "cacerts")
    assert (d / "ca-cert.pem").read_bytes() == (d / "root-cert.pem").read_bytes() == ca.root_pem
    assert (d / "cert-chain.pem").read_bytes() == b""
    root = x509.load_pem_x509_certificate(ca.root_pem)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (d / "ca-key.pem").stat().st_mode & 0o777 == 0o600
