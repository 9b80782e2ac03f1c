"""The supervisor's teardown: each running proxy's Envoy is asked to quit (its admin
``POST /quitquitquit``; its pilot-agent then exits without the drain SIGTERM would start), and what is
left of the supervisor's process group is killed last (tests/e2e/test_local_lifecycle.py: an agent
told to quit could exit before its Envoy, which then outlived the mesh)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import httpx

from harness import proc
from harness.backends.local import topology as topo
from harness.backends.local.supervisor import ProxySpec, Supervisor

SLEEP = [sys.executable, "-c", "import time; time.sleep(30)"]


def _spec(pod: str, admin_port: int) -> ProxySpec:
    return ProxySpec(
        pod=pod,
        namespace="sample",
        service_account="sa",
        address="127.1.0.1",
        labels={},
        ports=topo.ProxyPorts(admin=admin_port, agent_status=1, envoy_status=2, prometheus=3),
        kind="sidecar",
        istio="1.31-dev",
        revision="default",
    )


def test_quits_each_running_envoy_and_returns_the_agents_that_accepted() -> None:
    seen: list[tuple[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url)))
        if request.url.port == 15022:
            raise httpx.ConnectError("refused")  # a proxy that does not answer: terminated anyway
        if request.url.port == 15023:
            return httpx.Response(404, text="invalid path")
        return httpx.Response(200, text="OK")

    running, refusing, answering_404 = (subprocess.Popen(SLEEP) for _ in range(3))
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    specs = [_spec("a-0", 15020), _spec("b-0", 15021), _spec("c-0", 15022), _spec("d-0", 15023)]
    children = (running, exited, refusing, answering_404)
    sup = SimpleNamespace(
        proxy_specs={s.key: s for s in specs},
        children={s.child: p for s, p in zip(specs, children, strict=True)},
        http=httpx.Client(transport=httpx.MockTransport(answer)),
    )
    try:
        accepted = Supervisor._quit_proxies(sup)  # type: ignore[arg-type]
    finally:
        for p in (running, refusing, answering_404):
            p.kill()
            p.wait()
    assert seen == [
        ("POST", "http://127.0.0.1:15020/quitquitquit"),
        ("POST", "http://127.0.0.1:15022/quitquitquit"),
        ("POST", "http://127.0.0.1:15023/quitquitquit"),
    ]
    assert accepted == [running]  # the teardown waits for these to exit before any SIGTERM


LEADER = """
import subprocess, sys, time
from harness.backends.local.supervisor import kill_own_group
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
killed = kill_own_group()
child.wait()
print(killed == [child.pid], child.returncode, flush=True)
"""


def test_kill_own_group_kills_the_rest_of_its_group_when_it_leads_it() -> None:
    leader = subprocess.run(
        [sys.executable, "-c", LEADER], capture_output=True, text=True, timeout=60, start_new_session=True
    )
    assert leader.returncode == 0, leader.stderr
    child, verdict = leader.stdout.splitlines()
    assert verdict == "True -9"  # the leader's child, and only it, was SIGKILLed
    assert not proc.pid_alive(int(child))


def test_kill_own_group_does_nothing_in_a_group_it_does_not_lead() -> None:
    # a child of this test process stays in this test's group, whose leader it is not
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from harness.backends.local.supervisor import kill_own_group; print(kill_own_group())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
