"""ServiceAccount tokens for the local mesh: the part of Kubernetes that names a pod's ServiceAccount.

On Kubernetes a workload's identity reaches istiod like this: the kubelet projects a
ServiceAccount token into the pod (``./var/run/secrets/tokens/istio-token``, a JWT the API server
signs, subject ``system:serviceaccount:<ns>:<sa>``, audience ``istio-ca``); pilot-agent makes a
key and a CSR and sends both to istiod's CA; istiod verifies the token and signs the CSR for the
SPIFFE ID *it* derives from the token's subject and its own trust domain, whatever the CSR asks.

The local mesh has no API server, so this module plays the API server's part and nothing more:
it signs one token per proxy for the ServiceAccount that proxy's workload runs as, and serves the
public key (a JWKS) on loopback. istiod verifies the tokens with its own OIDC authenticator
(``JWT_RULE``: Istio's documented way of running istiod outside a cluster) instead of Kubernetes'
TokenReview. Every certificate, and the SPIFFE ID in it, comes from istiod's CA.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

# Where pilot-agent reads its token and the root that istiod's serving certificate chains to,
# relative to its working directory (pilot-agent's constants.ThirdPartyJwtPath and
# CitadelCACertPath/root-cert.pem; on Kubernetes the istio-token projection and the
# istio-ca-root-cert ConfigMap are mounted there).
TOKEN_PATH = Path("var/run/secrets/tokens/istio-token")
CA_ROOT_PATH = Path("var/run/secrets/istio/root-cert.pem")
ISSUER = "https://meshproof.local/serviceaccounts"  # ours: istiod only compares it with the token's
AUDIENCE = "istio-ca"  # what pilot-agent's token is for (Istio's default CA audience)
JWKS_PATH = "/keys"


@dataclass(frozen=True)
class ServiceAccountIssuer:
    """Signs ServiceAccount tokens (RS256 JWTs, RFC 7519) and publishes their key as a JWKS."""

    key: rsa.RSAPrivateKey
    issuer: str = ISSUER

    @classmethod
    def create(cls) -> ServiceAccountIssuer:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @property
    def kid(self) -> str:
        n = self.key.public_key().public_numbers().n
        return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()[:16]

    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "alg": "RS256", "use": "sig", "kid": self.kid}]}

    def token(
        self,
        namespace: str,
        service_account: str,
        *,
        audience: str = AUDIENCE,
        valid_for: dt.timedelta = dt.timedelta(days=7),
        now: dt.datetime | None = None,
    ) -> str:
        """A token for ServiceAccount ``namespace/service_account``, as Kubernetes words its claims."""
        t = int((now or dt.datetime.now(dt.UTC)).timestamp())
        claims = {
            "iss": self.issuer,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "aud": [audience],
            "iat": t,
            "nbf": t - 300,
            "exp": t + int(valid_for.total_seconds()),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}},
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def jwt_rule(self, jwks_uri: str, audience: str = AUDIENCE) -> str:
        """istiod's ``JWT_RULE``: trust tokens of this issuer, verified with the key at ``jwks_uri``."""
        return json.dumps({"issuer": self.issuer, "jwks_uri": jwks_uri, "audiences": [audience]})


class JwksServer:
    """The issuer's JWKS on ``http://127.0.0.1:<port>/keys``, served from a thread of this process.

    A context manager: ``start()`` binds and serves, ``stop()`` shuts down and closes the socket.
    """

    def __init__(self, issuer: ServiceAccountIssuer, port: int, host: str = "127.0.0.1") -> None:
        body = json.dumps(issuer.jwks()).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path.split("?", 1)[0] == JWKS_PATH
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
                return

        self._server: ThreadingHTTPServer | None = None
        self._handler = Handler
        self._address = (host, port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._address
        return f"http://{host}:{port}{JWKS_PATH}"

    def start(self) -> Self:
        self._server = ThreadingHTTPServer(self._address, self._handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="jwks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
