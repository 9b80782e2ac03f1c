"""The supervisor's teardown asks each running pilot-agent to quit without draining (Istio's
``POST /quitquitquit``) before it terminates the children."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import httpx

from harness.backends.local import topology as topo
from harness.backends.local.supervisor import ProxySpec, Supervisor


def _spec(pod: str, status_port: int) -> ProxySpec:
    return ProxySpec(
        pod=pod,
        namespace="sample",
        service_account="sa",
        address="127.1.0.1",
        labels={},
        ports=topo.ProxyPorts(admin=1, agent_status=status_port, envoy_status=2, prometheus=3),
        kind="sidecar",
        istio="1.31-dev",
        revision="default",
    )


def test_quits_each_running_agent_and_skips_exited_ones() -> None:
    seen: list[tuple[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url)))
        if request.url.port == 15022:
            raise httpx.ConnectError("refused")  # an agent that does not answer: terminated anyway
        return httpx.Response(200, text="OK")

    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    refusing = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    specs = {s.key: s for s in (_spec("a-0", 15020), _spec("b-0", 15021), _spec("c-0", 15022))}
    sup = SimpleNamespace(
        proxy_specs=specs,
        children={"proxy-sample.a-0": running, "proxy-sample.b-0": exited, "proxy-sample.c-0": refusing},
        http=httpx.Client(transport=httpx.MockTransport(answer)),
    )
    try:
        Supervisor._quit_proxies(sup)  # type: ignore[arg-type]
    finally:
        running.kill()
        refusing.kill()
        running.wait()
        refusing.wait()
    assert seen == [
        ("POST", "http://127.0.0.1:15020/quitquitquit"),
        ("POST", "http://127.0.0.1:15022/quitquitquit"),
    ]
