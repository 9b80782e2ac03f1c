"""harness.load.kube: the in-cluster Locust master/worker objects and the report from Locust's stats."""

from __future__ import annotations

import pytest

from harness.errors import UserError
from harness.load import LoadConfig, PhaseMark
from harness.load.kube import MASTER_PORT, manifests, report_from_locust_stats, target_in_cluster


def test_manifests_master_and_workers_sidecar_injected_in_other_namespace() -> None:
    docs = manifests(LoadConfig(users=40, processes=3), target_in_cluster(), run_id="mp-abc")
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds == [
        ("ConfigMap", "meshproof-locust"),
        ("Service", "meshproof-locust-master"),
        ("Deployment", "meshproof-locust-master"),
        ("Deployment", "meshproof-locust-worker"),
    ]
    assert {d["metadata"]["namespace"] for d in docs} == {"other-namespace"}
    cm, svc, master, worker = docs
    assert "class MeshproofShape" in cm["data"]["locustfile.py"] and "def users_at" in cm["data"]["shapes.py"]
    assert svc["spec"]["ports"][0]["port"] == MASTER_PORT
    for d in (master, worker):
        pod = d["spec"]["template"]
        assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
        assert d["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert worker["spec"]["replicas"] == 3
    cmd = master["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "--master" in cmd and "--expect-workers 3" in cmd and "--users 40" in cmd
    assert "--mp-ingress http://microservice-1.sample.svc.cluster.local:3000" in cmd
    assert "--mp-stop-file /tmp/stop" in cmd and cmd.endswith("IngressUser; sleep infinity")
    wargs = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (
        wargs[wargs.index("--master-host") + 1] == "meshproof-locust-master.other-namespace.svc.cluster.local"
    )


def test_manifests_refuse_the_mesh_user_class() -> None:
    with pytest.raises(UserError, match="its own sidecar"):
        manifests(LoadConfig(user_class="mesh"), target_in_cluster(), run_id="x")


def test_report_from_locust_stats_splits_phases_at_seconds() -> None:
    stats = [
        {
            "name": "ingress /api/greet",
            "num_requests": 60,
            "num_failures": 6,
            "num_reqs_per_sec": {"1000": 10, "1001": 20, "1002": 30},
            "num_fail_per_sec": {"1002": 6},
            "response_times": {"10": 50, "200": 10},
        }
    ]
    phases = [PhaseMark("load", 1000.0, 1002.0), PhaseMark("fault", 1002.0, 1003.0)]
    r = report_from_locust_stats(
        LoadConfig(), target_in_cluster(), stats, phases, started_at=1000.0, ended_at=1003.0
    )
    assert (r.requests, r.failures) == (60, 6)
    assert [(p.name, p.requests, p.failures) for p in r.phases] == [("load", 30, 0), ("fault", 30, 6)]
    assert [s.requests for s in r.series] == [10, 20, 30]
    assert r.latency.p50_ms == 10.0 and r.latency.p99_ms == 200.0
