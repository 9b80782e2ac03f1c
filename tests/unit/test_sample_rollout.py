"""manifests/ carries the graceful-rollout settings a rolling restart of the sample depends on.

Measured on kind (docs/KIND.md, "Why the sample's rolling restart lost requests"): without a
``preStop`` the app got SIGTERM 0.1-0.4 s after its pod was marked for deletion and stopped
listening, while the ingress gateway still routed to the pod for 0.5-5 s (the longer at a load
average of ~140); the pod's sidecar (a native sidecar, stopped only after the app) answered those
requests 503 (``remote connection failure`` to the app), and ``upgrade-check --backend kind``
failed on them. A ``preStop`` sleep keeps the app serving until the gateway has dropped the
endpoint; the grace period must cover the sleep, the app's own shutdown and the sidecar's drain
after it, or the kubelet kills the pod first. At a load average of ~100 the probes (1 s default
timeout) timed out while the app served: the liveness probe restarted a serving app (503s until
it listened again) and the lone v2 replica went unready, leaving the gateway no v2 host (503 no
healthy upstream); the probes wait 5 s.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from harness import paths
from harness.istio.loader import load_paths, load_text
from harness.istio.model import Bundle, Deployment, labels_match

MANIFESTS = paths.MANIFESTS
PRESTOP_SLEEP_S = 15  # the manifests' sleep: 3x the longest routing after deletion measured (5 s)
APP_SHUTDOWN_S = 1  # sample-service/service.js exits at most 0.9 s after SIGTERM (forced exit)
SIDECAR_DRAIN_S = 5  # Istio's default terminationDrainDuration, the sidecar's drain after the app
DEFAULT_GRACE_S = 30  # Kubernetes' default terminationGracePeriodSeconds
PROBE_TIMEOUT_S = 5  # probes through the agent timed out at the default 1 s on a starved node


def routed_deployments(bundle: Bundle) -> list[tuple[Any, Deployment]]:
    """(document, Deployment) of every Deployment in a namespace with sidecar injection (the ones
    ``upgrade-check`` restarts) whose pods a Service of the bundle selects."""
    services = bundle.services()
    meshed = {n.name for n in bundle.namespaces() if n.injection_enabled}
    out = []
    for doc in bundle.of_kind("Deployment"):
        dep = Deployment.from_document(doc)
        if dep.namespace in meshed and any(
            s.namespace == dep.namespace and s.selector and labels_match(s.selector, dep.labels)
            for s in services
        ):
            out.append((doc, dep))
    return out


def rollout_problems(bundle: Bundle) -> list[str]:
    """Why a routed Deployment's replaced pod could stop serving while it is still routed to."""
    problems = []
    for doc, _ in routed_deployments(bundle):
        pod = doc.spec.get("template", {}).get("spec", {})
        sleeps = []
        for c in pod.get("containers") or []:
            sleep = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
            seconds = sleep.get("seconds")
            if not isinstance(seconds, int) or seconds < PRESTOP_SLEEP_S:
                problems.append(
                    f"{doc.ref}: container {c.get('name')}: lifecycle.preStop.sleep.seconds is {seconds}, "
                    f"needs at least {PRESTOP_SLEEP_S}"
                )
            else:
                sleeps.append(seconds)
            for probe in ("readinessProbe", "livenessProbe"):
                timeout = (c.get(probe) or {}).get("timeoutSeconds", 1)
                if c.get(probe) and timeout < PROBE_TIMEOUT_S:
                    problems.append(
                        f"{doc.ref}: container {c.get('name')}: {probe}.timeoutSeconds is {timeout}, "
                        f"needs at least {PROBE_TIMEOUT_S}"
                    )
        grace = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
        need = max(sleeps, default=PRESTOP_SLEEP_S) + APP_SHUTDOWN_S + SIDECAR_DRAIN_S
        if not isinstance(grace, int) or grace <= need:
            problems.append(f"{doc.ref}: terminationGracePeriodSeconds is {grace}, needs more than {need}")
    return problems


def sample_with(change: Any) -> Bundle:
    """manifests/10-sample.yaml with ``change(deployment body)`` applied to microservice-1-v1."""
    docs = list(yaml.safe_load_all((MANIFESTS / "10-sample.yaml").read_text()))
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "microservice-1-v1":
            change(d)
    namespaces = load_paths([MANIFESTS / "00-namespaces.yaml"])
    return Bundle(namespaces + load_text(yaml.safe_dump_all(docs), file="10-sample.yaml"))


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return Bundle(load_paths([MANIFESTS]))


def test_every_routed_deployment_keeps_serving_until_it_is_unrouted(bundle: Bundle) -> None:
    assert sorted(dep.name for _, dep in routed_deployments(bundle)) == [
        "microservice-1-v1",
        "microservice-1-v2",
    ]
    assert rollout_problems(bundle) == []


def test_a_deployment_without_the_prestop_sleep_is_named() -> None:
    def drop(d: dict[str, Any]) -> None:
        del d["spec"]["template"]["spec"]["containers"][0]["lifecycle"]

    assert rollout_problems(sample_with(drop)) == [
        "Deployment/sample/microservice-1-v1: container microservice-1: lifecycle.preStop.sleep.seconds is None, "
        f"needs at least {PRESTOP_SLEEP_S}"
    ]


def test_a_grace_period_the_sleep_and_drain_do_not_fit_in_is_named() -> None:
    def shorten(d: dict[str, Any]) -> None:
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = PRESTOP_SLEEP_S

    need = PRESTOP_SLEEP_S + APP_SHUTDOWN_S + SIDECAR_DRAIN_S
    assert rollout_problems(sample_with(shorten)) == [
        f"Deployment/sample/microservice-1-v1: terminationGracePeriodSeconds is {PRESTOP_SLEEP_S}, needs more than {need}"
    ]


def test_a_probe_with_the_default_timeout_is_named() -> None:
    def default(d: dict[str, Any]) -> None:
        del d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["timeoutSeconds"]

    assert rollout_problems(sample_with(default)) == [
        "Deployment/sample/microservice-1-v1: container microservice-1: livenessProbe.timeoutSeconds is 1, "
        f"needs at least {PROBE_TIMEOUT_S}"
    ]
