"""harness.backends.kube.load_objects: the in-cluster Locust master/worker objects and what their logs say."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness import proc
from harness.backends.kube.load_objects import (
    DONE_MARK,
    EVENT_MARK,
    EXIT_MARK,
    MASTER_PORT,
    STATS_MARK,
    manifests,
    master_script,
    parse_events,
    parse_master_log,
    target_in_cluster,
    worker_script,
)
from harness.errors import UnsupportedFeature
from harness.load import LoadConfig, RequestRecord


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
    assert cmd.endswith("exec sleep infinity")
    annotations = master["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations["proxy.istio.io/config"]) == {"holdApplicationUntilProxyStarts": True}
    wcmd = worker["spec"]["template"]["spec"]["containers"][0]["command"]
    assert wcmd[:2] == ["sh", "-c"]
    assert "--worker --master-host meshproof-locust-master.other-namespace.svc.cluster.local" in wcmd[2]
    assert "--exit-code-on-error 0 --mp-events -" in wcmd[2]


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


FAKE_WORKER = """#!{python}
import sys
print("[2026-12-01 20:21:40,001] worker/INFO/locust.main: Starting Locust 2.47.0", file=sys.stderr)
print("meshproof-event\\t1000.250000\\t12.500\\t200\\tingress /api/greet\\tpod-a\\tv1\\tmp-1-w1.7.1-1\\t\\t")
print("[2026-12-01 20:21:41,002] worker/INFO/locust.runners: Spawning 8 users", file=sys.stderr)
print("meshproof-event\\t1000.500000\\t3.000\\t503\\tingress /api/greet\\t\\t\\tmp-1-w1.7.2-2\\t\\toverloaded")
sys.exit({code})
"""


@pytest.mark.parametrize(("code", "held"), [(0, True), (1, False)])
def test_the_worker_script_logs_records_then_locusts_exit_and_holds_only_after_exit_0(
    tmp_path: Path, code: int, held: bool
) -> None:
    """A worker's shell, run by a real sh with a stand-in `locust`: a clean exit (its master quit)
    holds the container with a complete log; a failed one ends it (a restart the harness sees)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "locust"
    fake.write_text(FAKE_WORKER.format(python=sys.executable, code=code))
    fake.chmod(0o755)
    script = worker_script().replace("exec sleep infinity", "echo held")
    out = proc.run(
        ["sh", "-c", script], env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, check=False
    )
    assert out.returncode == code
    assert (out.stdout.splitlines()[-1] == "held") is held
    records, exit_code = parse_events(out.stdout + out.stderr)
    assert exit_code == code
    assert records == [
        RequestRecord(1000.25, 12.5, 200, "ingress /api/greet", "pod-a", "v1", "mp-1-w1.7.1-1"),
        RequestRecord(1000.5, 3.0, 503, "ingress /api/greet", "", "", "mp-1-w1.7.2-2", overloaded=True),
    ]


def test_parse_events_of_a_worker_log_as_the_kubelet_serves_it() -> None:
    """The shape of a real worker's log (kind, Locust 2.47.0): Locust's stderr lines between the
    records, a record cut by ``since_seconds`` is not there at all (the kubelet returns whole lines,
    joining the runtime's 16 KiB partial lines), no exit line while Locust runs."""
    log = (
        "[2026-12-01 20:21:45,144] meshproof-locust-worker-976dfd547-8z6db/INFO/locust.main: Starting Locust 2.47.0\n"
        f"{EVENT_MARK}\t1796156506.662172\t91.732\t200\tingress /api/greet\tmicroservice-1-v1-74f46c464f-4h8zx"
        "\tv1\tmp-5a1b-meshproof-locust-worker-976dfd547-8z6db.1.3-17\t\t\n"
        f"{EVENT_MARK}\t1796156506.7\t5.1\t0\tingress /api/greet\t\t\tmp-5a1b-meshproof-locust-worker-976dfd547-8z6db.1.4-18"
        "\tConnectionRefusedError: [Errno 111] Connection refused\t\n"
        f"{EVENT_MARK}\tnot a record\n"
        f"{EXIT_MARK.upper()} 0\n"
    )
    records, code = parse_events(log)
    assert code is None
    assert [(r.status, r.pod, r.failed) for r in records] == [
        (200, "microservice-1-v1-74f46c464f-4h8zx", False),
        (0, "", True),
    ]
    assert records[0].request_id.rsplit("-", 1)[0].endswith("-8z6db.1.3")  # one user: host, pid, user
