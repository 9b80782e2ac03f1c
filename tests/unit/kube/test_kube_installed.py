"""Discovering someone else's Istio (backend existing) over the fake cluster: revisions, injection
webhooks and tags, the ingress gateway in any namespace, tracing providers; bad revisions."""

from __future__ import annotations

import pytest

from harness.backends.kube import installed
from harness.errors import UserError

from .fakes import FakeCluster


def test_discovers_a_revision_its_injector_a_gateway_elsewhere_and_no_tracing() -> None:
    found = installed.discover(FakeCluster(revision="1-31", gateway_namespace="istio-ingress", tracing=False))
    assert found.revisions == ("1-31",) and found.injecting == ("1-31",)
    assert found.gateways == ("istio-ingress/istio-ingressgateway-7f9-xyz12",)
    assert found.tracing == {"1-31": ()}
    assert installed.choose_revision(found, "", "ctx") == "1-31"
    assert installed.injection_labels("1-31") == {"istio.io/rev": "1-31"}


def test_a_gateway_pod_that_is_running_but_not_ready_is_not_a_gateway() -> None:
    api = FakeCluster(revision="1-31", gateway_namespace="istio-ingress")
    pod = api.objects[("", "Pod", "istio-ingress", "istio-ingressgateway-7f9-xyz12")]
    pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    found = installed.discover(api)
    assert found.gateways == () and found.unready_gateways == (
        "istio-ingress/istio-ingressgateway-7f9-xyz12",
    )


def test_the_default_revision_uses_istio_injection_and_reads_the_istio_configmap() -> None:
    found = installed.discover(FakeCluster())
    assert found.revisions == ("default",) and found.tracing == {"default": ("jaeger",)}
    assert installed.injection_labels(installed.choose_revision(found, "", "")) == {
        "istio-injection": "enabled"
    }


def test_a_revision_tag_counts_as_installed() -> None:
    api = FakeCluster(revision="1-31")
    api._put(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {
                "name": "istio-revision-tag-prod",
                "labels": {"istio.io/rev": "1-31", "istio.io/tag": "prod"},
            },
            "webhooks": [{"name": "rev.namespace.sidecar-injector.istio.io"}],
        }
    )
    found = installed.discover(api)
    assert found.tags == {"prod": "1-31"} and found.injecting == ("1-31",)
    assert installed.choose_revision(found, "prod", "ctx") == "prod"


def test_a_revision_that_is_not_installed_is_one_line() -> None:
    found = installed.discover(FakeCluster(revision="1-31"))
    with pytest.raises(UserError) as e:
        installed.choose_revision(found, "1-30", "kind-theirs")
    msg = str(e.value)
    assert "'1-30' is not installed in context kind-theirs (revisions: 1-31" in msg and "\n" not in msg
    assert "Fix: pass --revision" in msg


def test_several_revisions_without_a_default_tag_need_one_named() -> None:
    found = installed.InstalledIstio(revisions=("1-30", "1-31"))
    with pytest.raises(UserError, match="several Istio revisions"):
        installed.choose_revision(found, "", "")
    tagged = installed.InstalledIstio(revisions=("1-30", "1-31"), tags={"default": "1-31"})
    assert installed.choose_revision(tagged, "", "") == "default"


def test_tracing_providers_are_the_kinds_that_export_spans() -> None:
    mesh = "extensionProviders:\n- name: z\n  zipkin: {service: z}\n- name: authz\n  envoyExtAuthzHttp: {service: a}\n"
    assert installed.tracing_providers(mesh) == ("z",)
    assert installed.tracing_providers(": not yaml [") == ()


def test_the_test_summary_names_each_skip_reason_once_with_its_count() -> None:
    from harness.cli.testrun import Case, skip_reasons

    why = "tracing suite skipped: no tracing provider in the mesh config of Istio revision 1-31"
    cases = [Case(f"t::{i}", "skipped", 0.0, f"Skipped: {why}", ()) for i in range(3)]
    cases += [Case("r::a", "passed", 1.0, "", ()), Case("r::b", "skipped", 0.0, "", ())]
    assert skip_reasons(cases) == {why: 3, "(no reason given)": 1}


def test_meshproofs_pod_templates_get_the_suites_stats_matcher_as_a_proxy_config_annotation() -> None:
    """The cluster's mesh config is the user's (Istio trims Envoy's stats by default: on the hand-installed
    cluster no outbound cluster counter was exposed): meshproof's own pods carry Istio's per-workload
    proxy.istio.io/config instead, merged with what the manifest already sets there."""
    import json

    from harness.proxy_stats import proxy_stats_matcher

    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "sample"},
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true"}
                }
            }
        },
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "sample"},
        "spec": {},
    }
    matcher = {"proxyStatsMatcher": proxy_stats_matcher()}
    out = installed.with_proxy_config([dep, svc], matcher)
    config = json.loads(out[0]["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"])
    assert config == {"holdApplicationUntilProxyStarts": True, **matcher}
    assert out[1] == svc and "annotations" in dep["spec"]["template"]["metadata"]  # copies; input unchanged
    assert dep["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"].startswith("hold")
