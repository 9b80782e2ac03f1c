"""The mTLS suite's evidence from Envoy: the certificate a proxy presents (its SDS secret in
/config_dump) and the x-forwarded-client-cert header a serving sidecar sets."""

from __future__ import annotations

import base64
import datetime as dt
import json

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.envoy import parse_workload_certificate, parse_xfcc, workload_certificate
from harness.errors import BackendError

SPIFFE = "spiffe://cluster.local/ns/other-namespace/sa/client"


def _cert(uris: list[str]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0xABC)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=24))
    )
    if uris:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=True
        )
    return b.sign(key, hashes.SHA256())


def _dump(*certs: x509.Certificate, name: str = "default") -> str:
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return json.dumps(
        {
            "configs": [
                {"name": "ROOTCA", "secret": {"name": "ROOTCA", "validation_context": {}}},
                {
                    "name": name,
                    "secret": {
                        "name": name,
                        "tls_certificate": {
                            "certificate_chain": {"inline_bytes": base64.b64encode(pem).decode()},
                            "private_key": {"inline_bytes": "W3JlZGFjdGVkXQ=="},
                        },
                    },
                },
            ]
        }
    )


def test_reads_the_leaf_of_the_workload_secret() -> None:
    leaf, intermediate = _cert([SPIFFE]), _cert(["spiffe://cluster.local/ns/x/sa/ca"])
    cert = parse_workload_certificate(_dump(leaf, intermediate))
    assert cert is not None
    assert cert.spiffe_id == SPIFFE and cert.uri_sans == (SPIFFE,)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(leaf.public_bytes(serialization.Encoding.DER))
    assert cert.sha256 == digest.finalize().hex()  # what Envoy writes as XFCC Hash=
    assert cert.serial == "abc" and "cluster.local" in cert.issuer


def test_no_single_spiffe_id_is_empty_not_a_guess() -> None:
    assert parse_workload_certificate(_dump(_cert([]))).spiffe_id == ""  # type: ignore[union-attr]
    two = _cert([SPIFFE, "spiffe://cluster.local/ns/x/sa/y"])
    assert parse_workload_certificate(_dump(two)).spiffe_id == ""  # type: ignore[union-attr]


def test_missing_secret_is_none_and_the_reader_says_so() -> None:
    assert parse_workload_certificate(_dump(_cert([SPIFFE]), name="other")) is None

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["resource"] == "dynamic_active_secrets"
        return httpx.Response(200, text=_dump(_cert([SPIFFE]), name="other"))

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as http,
        pytest.raises(BackendError, match="holds no workload certificate"),
    ):
        workload_certificate(http, "http://127.0.0.1:1")


def test_xfcc_elements_keys_and_quoted_values() -> None:
    value = f'By=spiffe://cluster.local/ns/sample/sa/microservice-1;Hash=ab12;Subject="";URI={SPIFFE}'
    assert parse_xfcc(value) == [
        {
            "by": ["spiffe://cluster.local/ns/sample/sa/microservice-1"],
            "hash": ["ab12"],
            "subject": [""],
            "uri": [SPIFFE],
        }
    ]
    two = parse_xfcc('By=a;URI=b,By=c;Subject="CN=x,O=y;z \\"q\\"";URI=d;URI=e')
    assert two == [
        {"by": ["a"], "uri": ["b"]},
        {"by": ["c"], "subject": ['CN=x,O=y;z "q"'], "uri": ["d", "e"]},
    ]
    assert parse_xfcc("") == []
