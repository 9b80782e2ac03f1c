"""A Telemetry naming a provider meshConfig lacks is a validation error naming the defined ones."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.istio.validate import validate_text

TELEMETRY = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
    - providers:
        - name: {name}
      randomSamplingPercentage: 10
"""


def test_known_provider_is_valid() -> None:
    assert len(validate_text(TELEMETRY.format(name="jaeger"), "t.yaml")) == 1


def test_unknown_provider_names_the_defined_ones() -> None:
    with pytest.raises(ConfigError) as e:
        validate_text(TELEMETRY.format(name="zipkin"), "t.yaml")
    (problem,) = e.value.problems
    assert problem.path == "spec.tracing[0].providers[0].name"
    assert "'zipkin'" in problem.message and "jaeger" in problem.fix


def test_the_local_backend_defines_the_providers_validation_accepts() -> None:
    from harness.backends.kube.istio_install import JAEGER_PROVIDER
    from harness.backends.local.jaeger import mesh_providers
    from harness.istio.providers import MESH_PROVIDERS

    assert {p["name"] for p in mesh_providers()} == set(MESH_PROVIDERS) == {JAEGER_PROVIDER}
