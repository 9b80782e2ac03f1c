"""The HTTP clients the harness reads its own processes with (Envoy admin, istiod, Jaeger, Locust).

Creating an ``httpx.Client`` builds a TLS context and, verifying by default, loads the CA bundle
into it: about 29 ms of CPU per client, whether or not it ever speaks TLS (every client here talks
plain HTTP to loopback). Every client :func:`client` makes shares one context, built once per
process the way httpx builds its default one with ``trust_env`` off (certifi's bundle), so
verification is unchanged wherever a client does reach an ``https`` URL. httpx is imported only
when a client is made (attaching to a mesh for ``meshproof send`` needs none).
"""

from __future__ import annotations

import functools
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one verifying TLS context of this process (what ``httpx.Client(trust_env=False)`` builds)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def client(**kwargs: Any) -> httpx.Client:
    """``httpx.Client(trust_env=False, **kwargs)`` on the shared TLS context."""
    import httpx

    return httpx.Client(verify=tls_context(), trust_env=False, **kwargs)
