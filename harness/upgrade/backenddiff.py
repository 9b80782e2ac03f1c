"""The Envoy configuration of the same mesh on two backends, side by side (pure, no I/O but reading
saved dumps): what the local backend's proxies run against what a Kubernetes cluster's run.

:mod:`.configdiff` compares one proxy with itself before and after an upgrade, so it can drop the
bootstrap and secrets. Here two different proxies of the same role are compared, so the whole
``/config_dump`` is kept (bootstrap, listeners, clusters, routes, secrets) and what must differ by
construction is replaced by a symbol before :func:`.configdiff.diff` runs:

- addresses: the proxy's own address becomes ``<self-ip>``, every other proxy's ``<pod-ip:NS/DEPLOY>``,
  a Service's ClusterIP ``<vip:HOST>`` (learnt from the dump: istiod lists it among the domains of
  the Service's virtual host, ``HOST:PORT``), any other IPv4 literal ``<ip>``;
- names: the proxy's own pod name ``<pod>``, other proxies' ``<pod:NS/DEPLOY>``;
- the proxy's own ports (Envoy admin, pilot-agent status, health and Prometheus listeners, the
  gateway's HTTP port) become ``<admin-port>`` etc. wherever they are a port (``port_value``,
  a listener or route name, a ``host:port``);
- ``version_info``, ``last_updated`` and the xDS nonces are removed; certificates (PEM) are replaced
  by what identifies them: each certificate's URI SANs and whether it is a CA;
- the bootstrap's list of compiled-in extensions is sorted (Envoy lists its registry unordered).

Proxies are paired by role: ``NS/DEPLOYMENT`` (one replica of each Deployment, the first by pod
name on each side; all replicas of a Deployment run the same config up to the substitutions above),
and the ingress gateway. :func:`compare` lists every remaining difference with its Envoy resource
type (``bootstrap``, ``listener``, ``cluster``, ``route``, ``secret``).
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.upgrade.configdiff import Difference, diff

RESOURCE_TYPES = ("bootstrap", "listener", "cluster", "route", "secret")
DROP_KEYS = frozenset({"version_info", "last_updated", "nonce"})
IPV4 = re.compile(r"(?<![\d.])(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?![\d.])")
PEM_KEYS = frozenset({"inline_bytes", "inline_string"})
# Where a proxy keeps its own ports (pilot-agent's metadata; istio's defaults when absent).
OWN_PORTS = (
    ("admin-port", ("PROXY_CONFIG", "proxyAdminPort"), 15000),
    ("agent-status-port", ("PROXY_CONFIG", "statusPort"), 15020),
    ("health-port", ("ENVOY_STATUS_PORT",), 15021),
    ("prometheus-port", ("ENVOY_PROMETHEUS_PORT",), 15090),
)


@dataclass(frozen=True)
class ProxyInfo:
    """One proxy of a saved run (``proxies.json`` of :mod:`bench.fidelity`'s collection)."""

    ref: str  # ns/pod
    namespace: str
    deployment: str
    role: str  # app, client, gateway
    address: str
    file: str = ""

    @property
    def pod(self) -> str:
        return self.ref.split("/", 1)[1]

    @property
    def group(self) -> str:
        """What pairs proxies across backends: the Deployment (``NS/DEPLOYMENT``)."""
        return f"{self.namespace}/{self.deployment}"


@dataclass(frozen=True)
class Symbols:
    """What one proxy's dump holds that differs by construction, and the symbol replacing it."""

    addresses: Mapping[str, str]  # IPv4 -> symbol
    names: Mapping[str, str]  # pod name -> symbol (longest first when applied)
    ports: Mapping[int, str]  # the proxy's own ports -> symbol

    def text(self, value: str) -> str:
        for name in sorted(self.names, key=len, reverse=True):
            if name in value:
                value = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", self.names[name], value)
        value = IPV4.sub(lambda m: self.addresses.get(m.group(1), "<ip>"), value)
        for port, sym in self.ports.items():
            value = re.sub(rf"(?<=[_:.]){port}(?=;|$)", f"<{sym}>", value)
        return value


def _metadata_get(metadata: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = metadata
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _section(dump: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for s in dump.get("configs", []):
        if str(s.get("@type", "")).endswith(f".{kind}"):
            return s  # type: ignore[no-any-return]
    return {}


def bootstrap_of(dump: Mapping[str, Any]) -> Mapping[str, Any]:
    return _section(dump, "BootstrapConfigDump").get("bootstrap", {})  # type: ignore[no-any-return]


def service_vips(dump: Mapping[str, Any]) -> dict[str, str]:
    """ClusterIP -> ``<vip:HOST>``, from the virtual hosts istiod generated (``HOST:PORT`` named,
    the Service's IP among their domains)."""
    out: dict[str, str] = {}
    for r in _section(dump, "RoutesConfigDump").get("dynamic_route_configs", []):
        for vh in (r.get("route_config") or {}).get("virtual_hosts", []):
            host = str(vh.get("name", "")).rsplit(":", 1)[0]
            for d in vh.get("domains", []):
                m = IPV4.fullmatch(str(d).rsplit(":", 1)[0]) if IPV4.match(str(d)) else None
                if m and host and host != "allow_any":
                    out.setdefault(m.group(1), f"<vip:{host}>")
    return out


def _listener_clusters(listener: Mapping[str, Any]) -> set[str]:
    """The clusters a listener's TCP proxies forward to (its filter chains and default chain)."""
    chains = [*listener.get("filter_chains", []), listener.get("default_filter_chain") or {}]
    out = set()
    for chain in chains:
        for f in chain.get("filters", []):
            cluster = (f.get("typed_config") or {}).get("cluster")
            if isinstance(cluster, str):
                out.add(cluster)
    return out


def listener_addresses(dump: Mapping[str, Any]) -> dict[str, str]:
    """The addresses outbound listeners bind, as symbols: a Service's ClusterIP (a TCP Service's
    listener forwards to ``outbound|PORT||HOST``) ``<vip:HOST>``; the address a sidecar binds its
    port-wide outbound listeners on (kind: 0.0.0.0, the traffic captured; local: the replica's own
    egress address, no capture) ``<any>``."""
    out: dict[str, str] = {}
    for item in _section(dump, "ListenersConfigDump").get("dynamic_listeners", []):
        listener = (item.get("active_state") or {}).get("listener") or {}
        if listener.get("traffic_direction") != "OUTBOUND" or "name" not in listener:
            continue
        address = str(((listener.get("address") or {}).get("socket_address") or {}).get("address", ""))
        if not IPV4.fullmatch(address) or listener.get("use_original_dst"):
            continue
        hosts = {c.rsplit("|", 1)[-1] for c in _listener_clusters(listener) if c.startswith("outbound|")}
        if address != "0.0.0.0" and len(hosts) == 1:
            out.setdefault(address, f"<vip:{hosts.pop()}>")
        elif address not in out:
            out[address] = "<any>"
    return out


def gateway_ports(dump: Mapping[str, Any]) -> set[int]:
    """A gateway's HTTP listener ports (its route configurations are named ``http.PORT``)."""
    ports = set()
    for r in _section(dump, "RoutesConfigDump").get("dynamic_route_configs", []):
        name = str((r.get("route_config") or {}).get("name", ""))
        if name.startswith("http.") and name[5:].isdigit():
            ports.add(int(name[5:]))
    return ports


def symbols_for(me: ProxyInfo, everyone: Sequence[ProxyInfo], dump: Mapping[str, Any]) -> Symbols:
    addresses = {"0.0.0.0": "<any>"} | listener_addresses(dump) | service_vips(dump)
    names: dict[str, str] = {}
    for p in sorted(everyone, key=lambda p: p.ref == me.ref):  # the proxy's own names win
        if p.address:
            addresses[p.address] = "<self-ip>" if p.ref == me.ref else f"<pod-ip:{p.group}>"
        names[p.pod] = "<pod>" if p.ref == me.ref else f"<pod:{p.group}>"
    metadata = bootstrap_of(dump).get("node", {}).get("metadata", {})
    ports: dict[int, str] = {}
    for sym, path, default in OWN_PORTS:
        value = _metadata_get(metadata, path)
        ports[int(value) if value not in (None, "") else default] = sym
    if me.role == "gateway":
        for port in gateway_ports(dump):
            ports[port] = "gateway-http-port"
    return Symbols(addresses, names, ports)


def _pem_summary(raw: str, encoded: bool) -> Any:
    """A PEM bundle as what identifies its certificates (URI SANs, CA or not), not their bytes."""
    from cryptography import x509

    try:
        data = base64.b64decode(raw, validate=True) if encoded else raw.encode()
    except ValueError:
        return raw
    if b"-----BEGIN X509 CRL-----" in data:
        return "<certificate revocation list>"
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return raw  # not a certificate (an access log format, say): compared as it is
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        return "<unparsable certificates>"
    out = []
    for c in certs:
        try:
            san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = sorted(san.get_values_for_type(x509.UniformResourceIdentifier))
        except x509.ExtensionNotFound:
            uris = []
        try:
            ca = c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        out.append({"uri_sans": uris, "ca": ca})
    return {"certificates": out}


def _normalise(value: Any, sym: Symbols, key: str = "") -> Any:
    if isinstance(value, Mapping):
        out = {}
        for k, v in sorted(value.items()):
            if k in DROP_KEYS:
                continue
            if k in PEM_KEYS and isinstance(v, str):
                summary = _pem_summary(v, encoded=(k == "inline_bytes"))
                out[k] = _normalise(summary, sym, k) if summary == v else summary
                continue
            out[k] = _normalise(v, sym, k)
        return out
    if isinstance(value, list):
        items = [_normalise(v, sym, key) for v in value]
        if key == "extensions":  # the node's compiled-in extensions: an unordered registry
            items.sort(key=lambda e: json.dumps(e, sort_keys=True))
        return items
    if isinstance(value, str):
        return sym.text(value)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and key
        in ("port_value", "proxyAdminPort", "statusPort", "ENVOY_STATUS_PORT", "ENVOY_PROMETHEUS_PORT")
    ):
        return f"<{sym.ports[value]}>" if value in sym.ports else value
    return value


def resources(dump: Mapping[str, Any], sym: Symbols) -> dict[str, Any]:
    """``{"TYPE/NAME": normalised body}`` for every resource of the dump (see the module docstring).

    The bootstrap is split by its top-level fields (``bootstrap/node``, ``bootstrap/admin``, ...) and
    its static clusters and listeners by name; the routes a listener holds inline (Envoy's
    ``static_route_configs``) are compared as part of that listener.
    """
    out: dict[str, Any] = {}

    def put(kind: str, name: str, body: Any) -> None:
        out[f"{kind}/{sym.text(str(name))}"] = _normalise(body, sym)

    boot = bootstrap_of(dump)
    for k, v in boot.items():
        if k == "static_resources":
            for c in v.get("clusters", []):
                put("bootstrap", f"static_cluster/{c.get('name', '?')}", c)
            for li in v.get("listeners", []):
                put("bootstrap", f"static_listener/{li.get('name', '?')}", li)
            for k2, v2 in v.items():
                if k2 not in ("clusters", "listeners"):
                    put("bootstrap", f"static_resources.{k2}", v2)
        else:
            put("bootstrap", k, v)
    for c in _section(dump, "ClustersConfigDump").get("dynamic_active_clusters", []):
        body = c.get("cluster", {})
        put("cluster", body.get("name", "?"), body)
    for item in _section(dump, "ListenersConfigDump").get("dynamic_listeners", []):
        for state in ("active_state", "warming_state", "draining_state"):
            body = (item.get(state) or {}).get("listener")
            if body is not None:
                suffix = "" if state == "active_state" else f" ({state})"
                put("listener", f"{item.get('name', body.get('name', '?'))}{suffix}", body)
    for r in _section(dump, "RoutesConfigDump").get("dynamic_route_configs", []):
        body = r.get("route_config", {})
        put("route", body.get("name", "?"), body)
    for s in _section(dump, "SecretsConfigDump").get("dynamic_active_secrets", []):
        put("secret", s.get("name", "?"), s.get("secret", {}))
    return dict(sorted(out.items()))


def resource_type(resource: str) -> str:
    return resource.split("/", 1)[0]


@dataclass(frozen=True)
class Pairing:
    pairs: tuple[tuple[str, ProxyInfo, ProxyInfo], ...]  # (group, a's proxy, b's proxy)
    only_a: tuple[str, ...] = ()  # groups with proxies on a only
    only_b: tuple[str, ...] = ()
    replicas: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # group -> (a, b) counts


def pair(a: Iterable[ProxyInfo], b: Iterable[ProxyInfo]) -> Pairing:
    """Pair the proxies of two runs by Deployment (``NS/DEPLOYMENT``): the first replica by pod name."""

    def groups(ps: Iterable[ProxyInfo]) -> dict[str, list[ProxyInfo]]:
        out: dict[str, list[ProxyInfo]] = {}
        for p in sorted(ps, key=lambda p: p.ref):
            out.setdefault(p.group, []).append(p)
        return out

    ga, gb = groups(a), groups(b)
    both = sorted(set(ga) & set(gb))
    return Pairing(
        pairs=tuple((g, ga[g][0], gb[g][0]) for g in both),
        only_a=tuple(sorted(set(ga) - set(gb))),
        only_b=tuple(sorted(set(gb) - set(ga))),
        replicas={g: (len(ga.get(g, [])), len(gb.get(g, []))) for g in sorted(set(ga) | set(gb))},
    )


@dataclass(frozen=True)
class Comparison:
    a: str  # label of side a (e.g. "local")
    b: str
    pairing: Pairing
    differences: tuple[Difference, ...]
    resources: Mapping[str, int]  # resources compared per group (union of both sides)

    def by_type(self) -> dict[str, Counter[str]]:
        """Per resource type: how many resources are only on a, only on b, or changed."""
        out: dict[str, Counter[str]] = {t: Counter() for t in RESOURCE_TYPES}
        word = {"removed": f"only_{self.a}", "added": f"only_{self.b}", "changed": "changed"}
        for d in self.differences:
            out.setdefault(resource_type(d.resource), Counter())[word[d.change]] += 1
        return out

    def as_json(self) -> dict[str, Any]:
        word = {"removed": f"only_{self.a}", "added": f"only_{self.b}", "changed": "changed"}
        grouped: dict[str, list[dict[str, Any]]] = {t: [] for t in RESOURCE_TYPES}
        for d in self.differences:
            entry = {
                "proxy": d.proxy,
                "resource": d.resource.split("/", 1)[1],
                "difference": word[d.change],
                "changed_fields": len(d.paths),
                "paths": [{"path": p.path, self.a: p.before, self.b: p.after} for p in d.paths],
            }
            grouped.setdefault(resource_type(d.resource), []).append(entry)
        return {
            "sides": [self.a, self.b],
            "pairs": [{"role": g, self.a: pa.ref, self.b: pb.ref} for g, pa, pb in self.pairing.pairs],
            f"only_{self.a}": list(self.pairing.only_a),
            f"only_{self.b}": list(self.pairing.only_b),
            "replicas": {g: {self.a: n[0], self.b: n[1]} for g, n in self.pairing.replicas.items()},
            "resources_compared": dict(self.resources),
            "counts": {t: dict(c) for t, c in self.by_type().items()},
            "differences": grouped,
        }


def compare(
    a: tuple[str, Sequence[ProxyInfo]],
    b: tuple[str, Sequence[ProxyInfo]],
    load: Callable[[str, ProxyInfo], Mapping[str, Any]],
) -> Comparison:
    """Every difference between the paired proxies of two runs; ``load(label, proxy)`` gives a dump."""
    (la, pa), (lb, pb) = a, b
    pairing = pair(pa, pb)
    differences: list[Difference] = []
    counts: dict[str, int] = {}
    for group, xa, xb in pairing.pairs:
        da, db = load(la, xa), load(lb, xb)
        ra = resources(da, symbols_for(xa, pa, da))
        rb = resources(db, symbols_for(xb, pb, db))
        counts[group] = len(set(ra) | set(rb))
        differences.extend(diff(group, ra, rb))
    return Comparison(la, lb, pairing, tuple(differences), counts)


def read_run(directory: Path) -> list[ProxyInfo]:
    meta = json.loads((directory / "proxies.json").read_text())
    return [
        ProxyInfo(p["ref"], p["namespace"], p["deployment"], p["role"], p.get("address", ""), p["file"])
        for p in meta["proxies"]
    ]


def compare_dirs(a: Path, b: Path, labels: tuple[str, str] = ("local", "kind")) -> Comparison:
    """Compare the runs saved in two directories (``proxies.json`` plus one dump per proxy)."""
    dirs = dict(zip(labels, (a, b), strict=True))

    def load(label: str, p: ProxyInfo) -> Mapping[str, Any]:
        return json.loads((dirs[label] / p.file).read_text())  # type: ignore[no-any-return]

    return compare((labels[0], read_run(a)), (labels[1], read_run(b)), load)


def render(title: str, doc: Mapping[str, Any]) -> str:
    """A short text summary of :meth:`Comparison.as_json`: counts per type, then each resource."""
    a, b = doc["sides"]
    lines = [f"== {title}: {a} vs {b}, {len(doc['pairs'])} proxy pairs"]
    lines += [f"  only on {a}: {g}" for g in doc[f"only_{a}"]]
    lines += [f"  only on {b}: {g}" for g in doc[f"only_{b}"]]
    for g, n in doc["replicas"].items():
        if n[a] != n[b]:
            lines.append(f"  replicas of {g}: {a} {n[a]}, {b} {n[b]}")
    for t, c in doc["counts"].items():
        lines.append(f"  {t}: " + (", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "no difference"))
    for t, entries in doc["differences"].items():
        for e in entries:
            shown = "; ".join(p["path"] for p in e["paths"][:3])
            more = f" (+{len(e['paths']) - 3})" if len(e["paths"]) > 3 else ""
            lines.append(f"    {t} {e['proxy']} {e['resource']}: {e['difference']} {shown}{more}")
    return "\n".join(lines)
