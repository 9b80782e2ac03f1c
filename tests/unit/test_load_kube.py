"""harness.load.kube: the in-cluster Locust master/worker objects and the report from Locust's stats."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness import proc
from harness.errors import UnsupportedFeature
from harness.load import LoadConfig, PhaseMark
from harness.load.kube import (
    DONE_MARK,
    EXIT_MARK,
    MASTER_PORT,
    STATS_MARK,
    manifests,
    master_script,
    parse_master_log,
    report_from_locust_stats,
    target_in_cluster,
)


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
    assert svc["spec"]["selector"] == {"app": "meshproof-locust", "role": "master", "meshproof/run": "mp-abc"}
    for d in (master, worker):
        pod = d["spec"]["template"]
        assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
        assert d["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert worker["spec"]["replicas"] == 3
    cmd = master["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "--master" in cmd and "--expect-workers 3" in cmd and "--users 40" in cmd
    # A web UI on the pod's loopback (read through a port-forward), not --headless; Locust quits itself.
    assert "--autostart --autoquit 5 --web-host 127.0.0.1 --web-port 8089" in cmd and "--headless" not in cmd
    assert "--mp-ingress http://istio-ingressgateway.istio-system.svc.cluster.local:80" in cmd
    assert "--mp-split-stats" in cmd and cmd.endswith("exec sleep infinity")
    annotations = master["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations["proxy.istio.io/config"]) == {"holdApplicationUntilProxyStarts": True}
    wargs = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (
        wargs[wargs.index("--master-host") + 1] == "meshproof-locust-master.other-namespace.svc.cluster.local"
    )


def test_targets_in_cluster_by_user_class() -> None:
    assert target_in_cluster("mesh").service_url == "http://microservice-1.sample.svc.cluster.local:3000"
    docs = manifests(LoadConfig(user_class="mesh"), target_in_cluster("mesh"), run_id="x")
    assert (
        "--mp-ingress http://microservice-1.sample.svc.cluster.local:3000"
        in (docs[2]["spec"]["template"]["spec"]["containers"][0]["command"][2])
    )
    with pytest.raises(UnsupportedFeature, match="--user-class ingress or --user-class mesh"):
        target_in_cluster("both")
    with pytest.raises(UnsupportedFeature, match="its own sidecar"):
        manifests(LoadConfig(user_class="both"), target_in_cluster(), run_id="x")


FAKE_LOCUST = """#!{python}
import json, sys
args = sys.argv[1:]
out = args[args.index("--json-file") + 1]
if "--mp-header" in args:
    print("header", args[args.index("--mp-header") + 1])
json.dump([{{"name": "ingress /", "num_reqs_per_sec": {{"1000": 3}}}}], open(out + ".json", "w"), indent=4)
print("Shutting down (exit code {code})")
sys.exit({code})
"""


@pytest.mark.parametrize("code", [0, 2])
def test_the_master_script_logs_locusts_exit_code_and_stats_on_one_line(tmp_path: Path, code: int) -> None:
    """The master's shell, run by a real sh with a stand-in `locust`: what the harness reads back."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "locust"
    fake.write_text(FAKE_LOCUST.format(python=sys.executable, code=code))
    fake.chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    config = LoadConfig(headers={"x-test": 'it\'s "quoted"'})
    script = master_script(
        config, target_in_cluster(), "mp-1", json_file=str(tmp_path / "locust"), hold="echo held"
    )
    out = proc.run(["sh", "-c", script], env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert out.stdout.splitlines()[-1] == "held"
    assert 'header {"x-test": "it\'s \\"quoted\\""}' in out.stdout
    done = parse_master_log(out.stdout)
    assert done is not None and done.exit_code == code
    assert done.stats == [{"name": "ingress /", "num_reqs_per_sec": {"1000": 3}}]
    assert f"Shutting down (exit code {code})" in done.log and EXIT_MARK not in done.log


def test_parse_master_log_while_running_and_without_stats() -> None:
    assert parse_master_log("Starting Locust 2.47.0\nAll users spawned\n") is None
    # Locust has exited, the stats line is being written: not done yet (seen in the rehearsal).
    assert parse_master_log(f'Shutting down (exit code 0)\n{EXIT_MARK} 0\n{STATS_MARK} [{{"na') is None
    done = parse_master_log(
        f"Traceback (most recent call last):\nSyntaxError\n{EXIT_MARK} 1\n{STATS_MARK} \n{DONE_MARK}\n"
    )
    assert done is not None and (done.exit_code, done.stats) == (1, None) and done.log.endswith("SyntaxError")


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


def test_split_stats_give_status_versions_pods_and_sheds_per_phase() -> None:
    def entry(key: str, per_sec: dict[str, int], failing: bool) -> dict[str, object]:
        return {
            "name": f"ingress /api/greet #{key}",
            "num_requests": sum(per_sec.values()),
            "num_failures": sum(per_sec.values()) if failing else 0,
            "num_reqs_per_sec": per_sec,
            "num_fail_per_sec": per_sec if failing else {},
            "response_times": {"10": sum(per_sec.values())},
        }

    stats = [
        entry('[200,"v1","pod-a",0]', {"1000": 10, "1001": 10, "1002": 4}, False),
        entry('[200,"v2","pod-b",0]', {"1002": 6}, False),
        entry('[503,"","",1]', {"1002": 5}, True),
        {"name": "ingress /api/greet", "num_requests": 1, "num_reqs_per_sec": {"1000": 1}},  # unsplit
    ]
    phases = [PhaseMark("load", 1000.0, 1002.0), PhaseMark("fault", 1002.0, 1003.0)]
    r = report_from_locust_stats(
        LoadConfig(), target_in_cluster(), stats, phases, started_at=1000.0, ended_at=1003.0
    )
    load, fault = r.phases
    assert dict(r.by_status) == {200: 30, 503: 5} and r.requests == 36
    assert (load.requests, dict(load.by_status), dict(load.versions)) == (21, {200: 20}, {"v1": 20})
    assert dict(fault.by_status) == {200: 10, 503: 5} and fault.failures == 5 and fault.overloaded == 5
    assert dict(fault.versions) == {"v1": 4, "v2": 6} and dict(fault.pods) == {"pod-a": 4, "pod-b": 6}
