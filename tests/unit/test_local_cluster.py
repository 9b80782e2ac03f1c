"""harness.backends.local.cluster and topology: what istiod's in-memory cluster holds for the
manifests (pure), and the launcher's build inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.backends.local import cluster, topology
from harness.backends.local.layout import object_filename
from harness.mesh import REPLICA_LABEL

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def _docs() -> list[dict[str, Any]]:
    return [d for f in sorted(MANIFESTS.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def _objects() -> tuple[topology.Topology, dict[tuple[str, str, str], dict[str, Any]]]:
    ports = iter(range(20000, 21000))
    topo = topology.derive(_docs(), block=10, allocate=lambda: next(ports))
    objs = cluster.objects(_docs(), topo, jaeger_address="127.10.4.1")
    by_key = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): cluster.namespaced(o)
        for o in objs
    }
    assert len(by_key) == len(objs), "one object per kind/namespace/name"
    return topo, by_key


def test_every_replica_is_a_ready_pod_on_its_loopback_address_as_injected() -> None:
    topo, objs = _objects()
    for r in topo.replicas:
        pod = objs[("Pod", r.namespace, r.pod)]
        assert pod["status"]["podIP"] == r.address
        assert pod["status"]["podIPs"] == [{"ip": r.address}]
        assert {"type": "Ready", "status": "True"} in pod["status"]["conditions"]
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["serviceAccountName"] == r.service_account
        assert pod["spec"]["nodeName"] == cluster.NODE_NAME
        labels = pod["metadata"]["labels"]
        # the pod template's labels, the injector's and the replica's own (the Sidecar selects it)
        assert {k: labels[k] for k in ("app", "version")} == {k: r.labels[k] for k in ("app", "version")}
        assert labels[cluster.TLS_MODE_LABEL] == "istio"
        assert labels[cluster.CANONICAL_NAME] == r.labels["app"]
        assert labels[cluster.CANONICAL_REVISION] == r.labels["version"]
        assert labels[REPLICA_LABEL] == r.pod
        # owned by a ReplicaSet of its Deployment: Istio names the workload after the Deployment
        (owner,) = pod["metadata"]["ownerReferences"]
        assert owner["kind"] == "ReplicaSet" and owner["controller"] is True
        assert owner["name"] == f"{r.deployment}-{labels['pod-template-hash']}"
        assert pod["metadata"]["generateName"] == owner["name"] + "-"
    assert ("Node", "", cluster.NODE_NAME) in objs


def test_container_ports_carry_the_api_servers_default_protocol() -> None:
    """As stored on a cluster (protocol TCP when unset): the proxy's POD_PORTS, and the Pod istiod
    sees, are the kind cluster's (bench/fidelity.py found ``"protocol": ""`` on local)."""
    topo, objs = _objects()
    ports = [p for r in topo.replicas for c in objs[("Pod", r.namespace, r.pod)]["spec"]["containers"]
             for p in c.get("ports") or []]  # fmt: skip
    assert ports and all(p["protocol"] == "TCP" for p in ports)


def test_pilot_agent_leaves_the_hosts_interfaces_out_of_the_proxys_addresses() -> None:
    """On loopback pilot-agent would add the host's addresses to the proxy's (INSTANCE_IPS): every
    interface but loopback is excluded through Istio's own annotation, for pilot-agent only."""
    out = cluster.podinfo_annotations({"a": "1"}, ["lo", "eth0", "docker0", "eth0"])
    assert out == {"a": "1", cluster.EXCLUDE_INTERFACES: "docker0,eth0"}
    assert cluster.podinfo_annotations(None, ["lo"]) == {}
    assert (
        cluster.downward_api(out).splitlines()[1]
        == 'traffic.sidecar.istio.io/excludeInterfaces="docker0,eth0"'
    )


def test_services_get_a_cluster_ip_and_the_api_servers_defaults() -> None:
    topo, objs = _objects()
    svc = objs[("Service", "sample", "microservice-1")]
    assert svc["spec"]["clusterIP"].startswith("127.10.5.")
    assert svc["spec"]["clusterIPs"] == [svc["spec"]["clusterIP"]]
    assert svc["spec"]["type"] == "ClusterIP"
    (port,) = svc["spec"]["ports"]
    assert port == {
        "name": "http",
        "port": 3000,
        "targetPort": 3000,
        "appProtocol": "http",
        "protocol": "TCP",
    }
    ips = [o["spec"]["clusterIP"] for k, o in objs.items() if k[0] == "Service"]
    assert len(ips) == len(set(ips)), "every Service has its own ClusterIP"


def test_the_ingress_gateway_is_installed_as_istio_installs_it() -> None:
    topo, objs = _objects()
    gw = topo.gateway
    assert gw is not None
    svc = objs[("Service", "istio-system", "istio-ingressgateway")]
    assert svc["spec"]["selector"] == {"istio": "ingressgateway"}
    # the Gateway's server port 80 targets the local port the router listens on
    assert {p["port"]: p["targetPort"] for p in svc["spec"]["ports"]} == dict(gw.port_map)
    pod = objs[("Pod", "istio-system", gw.pod)]
    assert pod["status"]["podIP"] == gw.address
    assert pod["spec"]["serviceAccountName"] == gw.service_account
    assert ("ServiceAccount", "istio-system", gw.service_account) in objs


def test_namespaces_and_service_accounts_as_a_cluster_has_them() -> None:
    _, objs = _objects()
    for ns in ("default", "kube-system", "istio-system", "sample", "trusted-namespace", "other-namespace"):
        assert objs[("Namespace", "", ns)]["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns
        assert ("ServiceAccount", ns, "default") in objs
    assert objs[("Namespace", "", "sample")]["metadata"]["labels"]["istio-injection"] == "enabled"
    assert ("ServiceAccount", "sample", "microservice-1") in objs
    # cluster-scoped objects carry no namespace
    assert "namespace" not in objs[("Namespace", "", "sample")]["metadata"]


def test_the_one_istio_object_the_local_backend_adds_is_a_sidecar_per_replica() -> None:
    topo, objs = _objects()
    assert not any(k[0] in ("ServiceEntry", "WorkloadEntry") for k in objs)
    assert [s["metadata"]["name"] for s in topo.sidecars] == [r.pod for r in topo.replicas]
    r = topo.replicas[0]
    sidecar = topo.sidecars[0]
    assert sidecar["spec"]["workloadSelector"]["labels"] == {REPLICA_LABEL: r.pod}
    assert {i["bind"] for i in sidecar["spec"]["ingress"]} == {r.address}
    assert {e["bind"] for e in sidecar["spec"]["egress"]} == {r.egress_address}
    # the user's configuration goes to istiod unchanged
    assert [d["kind"] for d in topo.config] == [d["kind"] for d in _docs() if topology.is_config(d)]


def test_a_gateway_api_gateway_on_the_ingress_service_adds_its_listener_ports() -> None:
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "istio-system"},
        "spec": {
            "gatewayClassName": "istio",
            "addresses": [{"type": "Hostname", "value": topology.GATEWAY_HOST}],
            "listeners": [{"name": "alt", "port": 8080, "protocol": "HTTP"}],
        },
    }
    elsewhere = {**gateway, "spec": {**gateway["spec"], "addresses": []}}
    ports = iter(range(20000, 21000))
    topo = topology.derive([*_docs(), gateway], block=10, allocate=lambda: next(ports))
    assert topo.gateway is not None and set(topo.gateway.port_map) == {80, 8080}
    ports = iter(range(20000, 21000))
    topo = topology.derive([*_docs(), elsewhere], block=10, allocate=lambda: next(ports))
    assert topo.gateway is not None and set(topo.gateway.port_map) == {80}


def test_object_files_tell_a_gateway_api_gateway_from_an_istio_gateway() -> None:
    meta = {"name": "gw", "namespace": "sample"}
    istio = object_filename({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": meta})
    k8s = object_filename({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": meta})
    assert istio == "Gateway.sample.gw.yaml"
    assert k8s != istio
    assert object_filename({"apiVersion": "v1", "kind": "Pod", "metadata": meta}) == "Pod.sample.gw.yaml"
