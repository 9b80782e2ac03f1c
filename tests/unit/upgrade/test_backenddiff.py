"""The same mesh's Envoy configuration on two backends (pure): normalisation and pairing on small
fake dumps shaped like Envoy's /config_dump."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from harness.upgrade import backenddiff as bd

T = "type.googleapis.com/envoy.admin.v3."


def pem(uri: str) -> str:
    """A fresh self-signed certificate naming ``uri`` (new key and serial on every call)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def dump(
    *,
    pod: str,
    ns: str,
    ip: str,
    vip: str,
    db_vip: str,
    bind: str,
    admin: int,
    peer_ip: str,
    timeout: str = "0s",
    extra_cluster: bool = False,
    spiffe: str = "spiffe://cluster.local/ns/sample/sa/app",
    stamp: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    """One sidecar's dump: what differs by construction is a parameter."""
    host = "svc.sample.svc.cluster.local"
    extensions = [{"name": "b", "category": "x"}, {"name": "a", "category": "x"}]
    if admin % 2:
        extensions.reverse()  # Envoy lists its registry in no fixed order
    listener = {
        "name": f"{bind}_3000",
        "traffic_direction": "OUTBOUND",
        "address": {"socket_address": {"address": bind, "port_value": 3000}},
        "filter_chains": [
            {"filters": [{"name": "hcm", "typed_config": {"stat_prefix": f"outbound_{bind}_3000;"}}]}
        ],
    }
    tcp = {
        "name": f"{db_vip}_5432",
        "traffic_direction": "OUTBOUND",
        "address": {"socket_address": {"address": db_vip, "port_value": 5432}},
        "filter_chains": [
            {"filters": [{"name": "tcp", "typed_config": {"cluster": f"outbound|5432||db.{ns}.svc"}}]}
        ],
    }
    clusters = [{"name": f"outbound|3000||{host}", "connect_timeout": "10s"}]
    if extra_cluster:
        clusters.append({"name": "outbound|53||kube-dns.kube-system.svc.cluster.local"})
    return {
        "configs": [
            {
                "@type": T + "BootstrapConfigDump",
                "last_updated": stamp,
                "bootstrap": {
                    "node": {
                        "id": f"sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local",
                        "metadata": {"NAME": pod, "PROXY_CONFIG": {"proxyAdminPort": admin}},
                        "extensions": extensions,
                    },
                    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
                },
            },
            {
                "@type": T + "ClustersConfigDump",
                "version_info": stamp,
                "dynamic_active_clusters": [
                    {"version_info": stamp, "last_updated": stamp, "cluster": c} for c in clusters
                ],
            },
            {
                "@type": T + "ListenersConfigDump",
                "dynamic_listeners": [
                    {"name": li["name"], "active_state": {"version_info": stamp, "listener": li}}
                    for li in (listener, tcp)
                ],
            },
            {
                "@type": T + "RoutesConfigDump",
                "dynamic_route_configs": [
                    {
                        "version_info": stamp,
                        "route_config": {
                            "name": "3000",
                            "virtual_hosts": [
                                {
                                    "name": f"{host}:3000",
                                    "domains": [host, f"{vip}:3000"],
                                    "routes": [
                                        {"route": {"cluster": f"outbound|3000||{host}", "timeout": timeout}},
                                        {"match": {"headers": [{"exact": peer_ip}]}},
                                    ],
                                }
                            ],
                        },
                    }
                ],
            },
            {
                "@type": T + "SecretsConfigDump",
                "dynamic_active_secrets": [
                    {
                        "name": "default",
                        "version_info": stamp,
                        "secret": {
                            "name": "default",
                            "tls_certificate": {
                                "certificate_chain": {
                                    "inline_bytes": base64.b64encode(pem(spiffe).encode()).decode()
                                }
                            },
                        },
                    }
                ],
            },
        ]
    }


LOCAL = [
    bd.ProxyInfo("sample/app-0", "sample", "app", "app", "127.10.1.1", "a0"),
    bd.ProxyInfo("sample/app-1", "sample", "app", "app", "127.10.1.2", "a1"),
    bd.ProxyInfo("other/client-0", "other", "client", "client", "127.10.1.3", "c0"),
]
KIND = [
    bd.ProxyInfo("sample/app-7d9f-x2x", "sample", "app", "app", "10.244.0.9", "a0"),
    bd.ProxyInfo("sample/app-7d9f-abc", "sample", "app", "app", "10.244.0.7", "a1"),
    bd.ProxyInfo("other/client-5c-q", "other", "client", "client", "10.244.0.8", "c0"),
]


def local_dump(**kw: Any) -> dict[str, Any]:
    args = {"pod": "app-0", "ns": "sample", "ip": "127.10.1.1", "vip": "127.10.5.3", "db_vip": "127.10.5.4", "bind": "127.10.2.1",
            "admin": 20000, "peer_ip": "127.10.1.3"} | kw  # fmt: skip
    return dump(**args)


def kind_dump(**kw: Any) -> dict[str, Any]:
    args = {"pod": "app-7d9f-abc", "ns": "sample", "ip": "10.244.0.7", "vip": "10.96.4.4", "db_vip": "10.96.7.7", "bind": "0.0.0.0",
            "admin": 15000, "peer_ip": "10.244.0.8", "stamp": "2026-02-02T00:00:00Z"} | kw  # fmt: skip
    return dump(**args)


def compare(local: dict[str, Any] | None = None, kind: dict[str, Any] | None = None) -> bd.Comparison:
    """Both runs; ``local``/``kind`` replace the dump of the paired app replica (the rest: defaults)."""
    given = {"local": local, "kind": kind}
    make = {"local": local_dump, "kind": kind_dump}

    def load(label: str, p: bd.ProxyInfo) -> dict[str, Any]:
        paired = p.pod in ("app-0", "app-7d9f-abc")
        return (
            given[label] if paired and given[label] else make[label](pod=p.pod, ip=p.address, ns=p.namespace)
        )

    return bd.compare(("local", LOCAL), ("kind", KIND), load)


def test_what_differs_by_construction_is_normalised_away() -> None:
    """Addresses, pod names, ports, ClusterIPs (learnt from the routes and TCP listeners), the
    outbound bind address, versions, timestamps, certificate bytes and the extensions' order."""
    c = compare(local_dump(), kind_dump())
    assert c.differences == ()
    keys = bd.resources(local_dump(), bd.symbols_for(LOCAL[0], LOCAL, local_dump()))
    assert "listener/<any>_3000" in keys
    assert "listener/<vip:db.sample.svc>_5432" in keys
    assert keys["bootstrap/node"]["id"] == "sidecar~<self-ip>~<pod>.sample~sample.svc.cluster.local"
    assert keys["bootstrap/admin"]["address"]["socket_address"]["port_value"] == "<admin-port>"
    chain = keys["secret/default"]["tls_certificate"]["certificate_chain"]["inline_bytes"]
    assert chain == {"certificates": [{"uri_sans": ["spiffe://cluster.local/ns/sample/sa/app"], "ca": False}]}


def test_a_real_difference_is_listed_under_its_resource_type() -> None:
    c = compare(local_dump(timeout="15s"), kind_dump(extra_cluster=True))
    doc = c.as_json()
    assert doc["counts"]["route"] == {"changed": 1}
    assert doc["counts"]["cluster"] == {"only_kind": 1}
    assert doc["counts"]["listener"] == {}
    (route,) = doc["differences"]["route"]
    assert route["proxy"] == "sample/app" and route["resource"] == "3000"
    assert [p["path"] for p in route["paths"]] == [
        "virtual_hosts[svc.sample.svc.cluster.local:3000].routes[0].route.timeout"
    ]
    assert route["paths"][0]["local"] == '"15s"' and route["paths"][0]["kind"] == '"0s"'
    (cluster,) = doc["differences"]["cluster"]
    assert cluster["resource"] == "outbound|53||kube-dns.kube-system.svc.cluster.local"
    assert cluster["difference"] == "only_kind"
    assert "route sample/app 3000: changed" in bd.render("t", doc)


def test_the_certificates_identity_is_compared_not_hidden() -> None:
    """Negative control of the certificate normalisation: another SPIFFE ID is a difference."""
    c = compare(local_dump(), kind_dump(spiffe="spiffe://cluster.local/ns/sample/sa/other"))
    (d,) = c.differences
    assert d.resource == "secret/default"
    assert d.paths[0].path.endswith("certificates[0].uri_sans[0]")


def test_an_address_no_symbol_explains_is_not_equated_with_another() -> None:
    """A peer's address maps to its Deployment; an unknown one stays distinguishable from it."""
    c = compare(local_dump(), kind_dump(peer_ip="10.1.2.3"))
    (d,) = c.differences
    (p,) = d.paths
    assert p.before == '"<pod-ip:other/client>"' and p.after == '"<ip>"'


def test_pairing_by_deployment_first_replica_by_name_and_what_is_on_one_side_only() -> None:
    gw = bd.ProxyInfo("istio-system/gw-1", "istio-system", "gw", "gateway", "10.244.0.2")
    p = bd.pair(LOCAL, [*KIND[:2], gw])
    assert [(g, a.pod, b.pod) for g, a, b in p.pairs] == [("sample/app", "app-0", "app-7d9f-abc")]
    assert p.only_a == ("other/client",)
    assert p.only_b == ("istio-system/gw",)
    assert p.replicas["sample/app"] == (2, 2)


def test_same_pod_name_in_two_namespaces_keeps_the_proxys_own_symbol() -> None:
    """Local pods of two Deployments named alike in different namespaces (client-0) both exist."""
    twins = [
        bd.ProxyInfo("a/client-0", "a", "client", "client", "127.10.1.5"),
        bd.ProxyInfo("b/client-0", "b", "client", "client", "127.10.1.6"),
    ]
    sym = bd.symbols_for(twins[0], twins, {"configs": []})
    assert sym.text("sidecar~127.10.1.5~client-0.a~a.svc.cluster.local") == (
        "sidecar~<self-ip>~<pod>.a~a.svc.cluster.local"
    )


def test_compare_dirs_reads_a_saved_run(tmp_path: Path) -> None:
    for side, infos, make in (("local", LOCAL, local_dump), ("kind", KIND, kind_dump)):
        d = tmp_path / side
        d.mkdir()
        entries = [
            {"ref": p.ref, "namespace": p.namespace, "deployment": p.deployment, "role": p.role,
             "address": p.address, "file": f"{i}.json"}
            for i, p in enumerate(infos)
        ]  # fmt: skip
        (d / "proxies.json").write_text(json.dumps({"proxies": entries}))
        for i, p in enumerate(infos):
            (d / f"{i}.json").write_text(json.dumps(make(pod=p.pod, ip=p.address, ns=p.namespace)))
    c = bd.compare_dirs(tmp_path / "local", tmp_path / "kind")
    assert [g for g, _, _ in c.pairing.pairs] == ["other/client", "sample/app"]
    doc = c.as_json()
    assert doc["pairs"][1] == {"role": "sample/app", "local": "sample/app-0", "kind": "sample/app-7d9f-abc"}
    # only the proxies' own addresses differ from the fixture's defaults: nothing remains
    assert all(not v for v in doc["counts"].values()), doc["counts"]


@pytest.mark.parametrize("raw", ["not base64!", base64.b64encode(b"%h %t").decode()])
def test_inline_bytes_that_are_not_certificates_are_compared_as_they_are(raw: str) -> None:
    sym = bd.Symbols({}, {}, {})
    assert bd.resources(
        {
            "configs": [
                {
                    "@type": T + "SecretsConfigDump",
                    "dynamic_active_secrets": [{"name": "s", "secret": {"x": {"inline_bytes": raw}}}],
                }
            ]
        },  # fmt: skip
        sym,
    ) == {"secret/s": {"x": {"inline_bytes": raw}}}
