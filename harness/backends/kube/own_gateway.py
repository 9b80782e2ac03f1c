"""meshproof's own ingress gateway on an existing cluster (backend ``existing``).

The cluster's own ingress gateway is the user's: a Gateway of the manifests selecting it
(``istio: ingressgateway``, port 80, any host) would add a server to it, and its Envoy keeps the
statistics the user's mesh config names, not the counters the suites read. So on ``existing``
meshproof runs a gateway of its own, the way Istio's "Installing Gateways" documents it: a
Deployment whose pod is injected by the chosen revision with its ``gateway`` template (annotation
``inject.istio.io/templates: gateway``, image ``auto``) in a namespace of meshproof's, with a
ServiceAccount and a Service (port 80 -> the proxy's 8080, as istioctl's gateway Service maps it).

Its pods carry :data:`OWN_LABEL` as well, and the Gateways meshproof applies select it: a Gateway
whose selector is exactly ``istio: ingressgateway`` gets :data:`OWN_LABEL` added
(:func:`select_own`), so none of them matches the user's gateway pods. Everything here is created by
``up`` and recorded like every other object, and ``down`` deletes it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from harness.backends.kube.istio_install import GATEWAY_SERVICE

NAMESPACE = "meshproof-ingress"
SERVICE_ACCOUNT = "istio-ingressgateway-service-account"
ISTIO_SELECTOR = {"istio": "ingressgateway"}  # what the manifests' Gateways select
OWN_LABEL = ("meshproof.dev/ingress", "true")
LABELS = {**ISTIO_SELECTOR, "app": GATEWAY_SERVICE, OWN_LABEL[0]: OWN_LABEL[1]}
SELECTOR = ",".join(f"{k}={v}" for k, v in {**ISTIO_SELECTOR, OWN_LABEL[0]: OWN_LABEL[1]}.items())
HTTP_TARGET_PORT = 8080  # the gateway template runs Envoy unprivileged


def objects(namespace: str = NAMESPACE, selector: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Namespace (labelled for injection: the backend relabels it for the revision), ServiceAccount,
    Deployment and Service of the gateway; its pods carry ``selector`` (default: ``istio:
    ingressgateway`` and :data:`OWN_LABEL`; a pytest-xdist worker's copy: labels of its own,
    :mod:`harness.backends.kube.workercopy`)."""
    selector = dict(selector) if selector is not None else {**ISTIO_SELECTOR, OWN_LABEL[0]: OWN_LABEL[1]}
    labels = {**LABELS, **selector}
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"istio-injection": "enabled"}},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": GATEWAY_SERVICE, "namespace": namespace, "labels": dict(labels)},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": dict(selector)},
                "template": {
                    "metadata": {
                        "annotations": {"inject.istio.io/templates": "gateway"},
                        "labels": {**labels, "sidecar.istio.io/inject": "true"},
                    },
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        # "auto" has no tag, so Kubernetes would default the policy to Always when
                        # the Deployment is created, before injection names the proxy's real image
                        # (which a kind cluster may hold only as a loaded image)
                        "containers": [
                            {"name": "istio-proxy", "image": "auto", "imagePullPolicy": "IfNotPresent"}
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": GATEWAY_SERVICE, "namespace": namespace, "labels": dict(labels)},
            "spec": {
                "type": "ClusterIP",
                "selector": dict(selector),
                "ports": [
                    {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
                    {"name": "http2", "port": 80, "targetPort": HTTP_TARGET_PORT, "protocol": "TCP"},
                ],
            },
        },
    ]


def select_own(
    objs: Sequence[Mapping[str, Any]], selector: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Copies of ``objs`` whose Istio Gateways selecting exactly ``istio: ingressgateway`` select
    meshproof's own gateway instead (:data:`OWN_LABEL` added; or ``selector``, a worker's gateway);
    every other object unchanged."""
    own = dict(selector) if selector is not None else {**ISTIO_SELECTOR, OWN_LABEL[0]: OWN_LABEL[1]}
    out = []
    for obj in objs:
        o = copy.deepcopy(dict(obj))
        spec = o.get("spec") or {}
        if (
            o.get("kind") == "Gateway"
            and str(o.get("apiVersion", "")).startswith("networking.istio.io/")
            and spec.get("selector") == ISTIO_SELECTOR
        ):
            spec["selector"] = dict(own)
        out.append(o)
    return out
