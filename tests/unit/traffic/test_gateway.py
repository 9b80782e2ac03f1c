"""`meshproof send --gateway NS/NAME`: which Gateway, whether Istio programmed it, where requests go
(harness.traffic.gateway), and the verb end to end against a fake backend and a local HTTP server."""

from __future__ import annotations

import copy
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import harness.backends
from harness.backends.kube.istio_install import GATEWAY_SERVICE
from harness.backends.local.topology import GATEWAY_NAME
from harness.cli import main
from harness.errors import HarnessError, UserError
from harness.mesh import Workload
from harness.traffic.gateway import INGRESS_SERVICE, ingress_service_host, resolve

INGRESS = "istio-ingressgateway.istio-system.svc.cluster.local"
PROGRAMMED = {
    "type": "Programmed",
    "status": "True",
    "reason": "Programmed",
    "message": "Resource programmed, assigned to service(s) istio-ingressgateway.istio-system.svc.cluster.local:80",
    "observedGeneration": 1,
}


def gateway(
    name: str = "web",
    namespace: str = "istio-system",
    *,
    hostname: str | None = "web.example.test",
    conditions: list[dict[str, Any]] | None = None,
    addresses: list[dict[str, str]] | None = None,
    listeners: list[dict[str, Any]] | None = None,
    generation: int = 1,
) -> dict[str, Any]:
    listener: dict[str, Any] = {"name": "http", "port": 80, "protocol": "HTTP"}
    if hostname is not None:
        listener["hostname"] = hostname
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": {
            "gatewayClassName": "istio",
            "addresses": [{"type": "Hostname", "value": INGRESS}] if addresses is None else addresses,
            "listeners": [listener] if listeners is None else listeners,
        },
        "status": {"conditions": [PROGRAMMED] if conditions is None else conditions},
    }


ISTIO_GATEWAY = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "g", "namespace": "s"},
}


def test_both_backends_name_their_ingress_gateway_service_alike() -> None:
    assert INGRESS_SERVICE == GATEWAY_SERVICE == GATEWAY_NAME
    assert ingress_service_host("istio-system") == INGRESS


def test_a_programmed_gateway_on_the_ingress_gateway_is_reached_with_its_listeners_hostname() -> None:
    t = resolve([gateway(), ISTIO_GATEWAY], "istio-system/web", INGRESS)
    assert (t.ref, t.address, t.listener, t.port, t.host, t.note) == (
        "istio-system/web",
        INGRESS,
        "http",
        80,
        "web.example.test",
        "",
    )


def test_a_wildcard_hostname_gets_a_label_and_says_so() -> None:
    t = resolve([gateway(hostname="*.example.test")], "istio-system/web", INGRESS)
    assert t.host == "meshproof.example.test"
    assert "*.example.test" in t.note and "meshproof.example.test" in t.note


def test_a_listener_without_hostname_takes_any_host_and_says_which() -> None:
    t = resolve([gateway(hostname=None)], "istio-system/web", INGRESS)
    assert t.host == "gateway.meshproof.test" and "no hostname" in t.note


def test_an_unknown_gateway_names_the_ones_that_exist() -> None:
    objs = [gateway(), gateway("other", "sample"), ISTIO_GATEWAY]
    with pytest.raises(
        UserError, match=r"no Gateway API Gateway istio-system/nope .*istio-system/web, sample/other\)"
    ):
        resolve(objs, "istio-system/nope", INGRESS)
    with pytest.raises(UserError, match=r"Gateways it holds: none"):
        resolve([ISTIO_GATEWAY], "s/g", INGRESS)  # Istio's own Gateway is not a Gateway API one


@pytest.mark.parametrize("ref", ["web", "istio-system/", "/web", "a/b/c"])
def test_a_malformed_reference_says_how_to_write_it(ref: str) -> None:
    with pytest.raises(UserError, match="NAMESPACE/NAME"):
        resolve([gateway()], ref, INGRESS)


def test_a_gateway_istio_did_not_program_shows_istios_condition_verbatim() -> None:
    failed = {
        "type": "Programmed",
        "status": "False",
        "reason": "AddressNotUsable",
        "message": "Failed to assign to any requested addresses: hostname not found",
        "observedGeneration": 1,
    }
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Resource accepted"}
    with pytest.raises(UserError) as info:
        resolve([gateway(conditions=[accepted, failed])], "istio-system/web", INGRESS)
    assert info.value.exit_code == 2
    assert (
        "Programmed=False (reason AddressNotUsable: Failed to assign to any requested addresses: hostname not found)"
        in str(info.value)
    )


def test_a_gateway_istio_has_not_reported_on_yet_is_a_run_time_failure() -> None:
    with pytest.raises(
        HarnessError, match="has not reported Gateway istio-system/web Programmed for its generation 1"
    ):
        resolve([gateway(conditions=[])], "istio-system/web", INGRESS)
    # a newer generation than the condition observed: Istio's verdict is about the old spec
    with pytest.raises(HarnessError, match="generation 2"):
        resolve([gateway(generation=2)], "istio-system/web", INGRESS)


@pytest.mark.parametrize(
    ("addresses", "seen"),
    [([], "no spec.addresses (Istio's automated deployment)"), ([{"value": "10.0.0.1"}], "['10.0.0.1']")],
)
def test_only_the_manual_deployment_onto_the_ingress_gateway_is_supported(
    addresses: list[dict[str, str]], seen: str
) -> None:
    with pytest.raises(UserError) as info:
        resolve([gateway(addresses=addresses)], "istio-system/web", INGRESS)
    assert seen in str(info.value) and f"value: {INGRESS}" in str(info.value)


def test_a_gateway_without_an_http_listener_on_port_80_is_refused_naming_its_listeners() -> None:
    https = [{"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "web.example.test"}]
    with pytest.raises(UserError, match=r"no HTTP listener on port 80 \(listeners: https HTTPS:443\)"):
        resolve([gateway(listeners=https)], "istio-system/web", INGRESS)


# --------------------------------------------------------------------------- the verb


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        # v1 answers requests for the Gateway's hostname, v2 any other host: the Host decides
        version = "v1" if self.headers.get("Host") == "web.example.test" else "v2"
        body = json.dumps(
            {"version": version, "pod": f"microservice-1-{version}-0", "method": "GET"}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def ingress() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class FakeMesh:
    """What `send --gateway` asks of a backend: the ingress, its workload, the Gateway API objects."""

    def __init__(self, ingress: str, objects: list[dict[str, Any]]) -> None:
        self.ingress, self.objects = ingress, objects

    def ingress_url(self) -> str:
        return self.ingress

    def workload(self, ref: str) -> Workload:
        assert ref == "ingress"
        return Workload(
            name="istio-ingressgateway-0",
            namespace="istio-system",
            deployment="istio-ingressgateway",
            labels={"istio": "ingressgateway"},
            address="127.0.0.1",
            app_url="",
            admin_url="",
            sidecar_url="",
            proxy_admin_url="",
            service_account="istio-ingressgateway-service-account",
            role="gateway",
        )

    def gateway_api_objects(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.objects)


def _attached(monkeypatch: pytest.MonkeyPatch, mesh: FakeMesh) -> None:
    monkeypatch.setattr(harness.backends, "attach", lambda settings: mesh)


def test_send_through_a_gateway_sends_its_hostname_and_prints_the_split(
    ingress: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _attached(monkeypatch, FakeMesh(ingress, [gateway()]))
    assert main(["send", "--gateway", "istio-system/web", "-n", "20", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["versions"] == {"v1": 20}  # every request carried the listener's hostname
    assert doc["gateway"]["host"] == "web.example.test" and doc["gateway"]["address"] == INGRESS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gateway", "istio-system/nope"], "Gateways it holds: istio-system/web"),
        (["--gateway", "istio-system/web", "--from", "sample/client"], "drop --from sample/client"),
        (["--gateway", "istio-system/web", "-H", "Host: x"], "drop -H 'Host: ...'"),
    ],
)
def test_send_through_a_gateway_refuses_bad_input_with_exit_2(
    argv: list[str],
    message: str,
    ingress: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _attached(monkeypatch, FakeMesh(ingress, [gateway()]))
    assert main(["send", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
