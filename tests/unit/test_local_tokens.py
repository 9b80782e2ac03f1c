"""The local mesh's ServiceAccount tokens: claims istiod's OIDC authenticator reads, a signature its
JWKS verifies, and the JWKS served on loopback."""

from __future__ import annotations

import base64
import datetime as dt
import json

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from harness.backends.local.tokens import AUDIENCE, JwksServer, ServiceAccountIssuer
from harness.ports import port_outside_ephemeral_range


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _uint(part: str) -> int:
    return int.from_bytes(_b64(part), "big")


@pytest.fixture(scope="module")
def issuer() -> ServiceAccountIssuer:
    return ServiceAccountIssuer.create()


def _verify(token: str, jwks: dict) -> dict:  # type: ignore[type-arg]
    head, body, sig = token.split(".")
    header = json.loads(_b64(head))
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public = rsa.RSAPublicNumbers(_uint(key["e"]), _uint(key["n"])).public_key()
    public.verify(_b64(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    assert header["alg"] == key["alg"] == "RS256"
    return json.loads(_b64(body))  # type: ignore[no-any-return]


def test_token_names_the_service_account_the_way_kubernetes_does(issuer: ServiceAccountIssuer) -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    claims = _verify(issuer.token("other-namespace", "client", now=now), issuer.jwks())
    # istiod's JwtAuthenticator takes namespace and ServiceAccount from sub, checks aud and iss
    assert claims["sub"] == "system:serviceaccount:other-namespace:client"
    assert claims["aud"] == [AUDIENCE] == ["istio-ca"]
    assert claims["iss"] == issuer.issuer
    assert claims["nbf"] < claims["iat"] == int(now.timestamp()) < claims["exp"]


def test_a_tampered_token_fails_verification(issuer: ServiceAccountIssuer) -> None:
    head, body, sig = issuer.token("ns", "a").split(".")
    other = base64.urlsafe_b64encode(
        json.dumps({**json.loads(_b64(body)), "sub": "system:serviceaccount:ns:b"}).encode()
    )
    with pytest.raises(InvalidSignature):
        _verify(f"{head}.{other.rstrip(b'=').decode()}.{sig}", issuer.jwks())


def test_another_issuers_key_does_not_verify(issuer: ServiceAccountIssuer) -> None:
    stranger = ServiceAccountIssuer.create().jwks()
    stranger["keys"][0]["kid"] = issuer.kid
    with pytest.raises(InvalidSignature):
        _verify(issuer.token("ns", "a"), stranger)


def test_jwt_rule_points_istiod_at_the_served_keys(issuer: ServiceAccountIssuer) -> None:
    assert json.loads(issuer.jwt_rule("http://127.0.0.1:1/keys")) == {
        "issuer": issuer.issuer,
        "jwks_uri": "http://127.0.0.1:1/keys",
        "audiences": ["istio-ca"],
    }


def test_jwks_server_serves_the_keys_on_loopback_and_stops(issuer: ServiceAccountIssuer) -> None:
    port = port_outside_ephemeral_range(set())
    with JwksServer(issuer, port) as server, httpx.Client(trust_env=False, timeout=5) as http:
        assert server.url == f"http://127.0.0.1:{port}/keys"
        r = http.get(server.url)
        assert r.status_code == 200
        assert r.json() == issuer.jwks()
        assert http.get(f"http://127.0.0.1:{port}/other").status_code == 404
    with httpx.Client(trust_env=False, timeout=5) as http, pytest.raises(httpx.ConnectError):
        http.get(f"http://127.0.0.1:{port}/keys")
