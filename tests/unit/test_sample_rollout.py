"""manifests/ carries the graceful-rollout settings a rolling restart of the sample depends on.

Measured on kind (docs/KIND.md, "Why the sample's rolling restart lost requests"): without a
``preStop`` the app got SIGTERM 0.2-0.4 s after its pod was marked for deletion and stopped
listening, while the ingress gateway still routed to the pod up to 1 s later; the pod's sidecar
(a native sidecar, stopped only after the app) answered those requests 503 (``remote connection
failure`` to the app), and ``upgrade-check --backend kind`` failed on them. A ``preStop`` sleep
keeps the app serving until the gateway has dropped the endpoint; the grace period must cover the
sleep, the app's own shutdown and the sidecar's drain after it, or the kubelet kills the pod first.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from harness import paths
from harness.istio.loader import load_paths, load_text
from harness.istio.model import Bundle, Deployment, labels_match

MANIFESTS = paths.MANIFESTS
PRESTOP_SLEEP_S = 10  # the manifests' sleep: 10x the longest routing delay measured (1.0 s)
APP_SHUTDOWN_S = 1  # sample-service/service.js exits at most 0.9 s after SIGTERM (forced exit)
SIDECAR_DRAIN_S = 5  # Istio's default terminationDrainDuration, the sidecar's drain after the app
DEFAULT_GRACE_S = 30  # Kubernetes' default terminationGracePeriodSeconds


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
