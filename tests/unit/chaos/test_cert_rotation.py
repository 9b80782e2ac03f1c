"""Certificate lifetime and rotation (issue #25): shorten_cert_lifetime/restore_cert_lifetime and the
certificates_rotated probe against a fake mesh whose Envoys serve a workload certificate in
``/config_dump?resource=dynamic_active_secrets`` (the shape a real local mesh returned), plus the
duration check, the kube backend's refusal and the supervisor op that restarts one proxy."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.backends.local import supervisor as sup
from harness.chaos import actions, context, control, probes
from harness.chaos.context import STATE_KEY
from harness.chaos.ledger import Ledger
from harness.chaos.load_window import Window
from harness.errors import BackendError, UserError
from harness.mesh import cert_ttl_seconds

from .test_replica_fault import FakeMesh

_KEY = ec.generate_private_key(ec.SECP256R1())


def _pem(serial: int, lifetime_s: float) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=2))
        .not_valid_after(now + dt.timedelta(seconds=lifetime_s))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/sample/sa/web")]
            ),
            critical=False,
        )
        .sign(_KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class CertMesh(FakeMesh):
    """FakeMesh whose proxies hold a certificate: ``set_cert_ttl`` issues one of that lifetime
    (the default 24 h otherwise); ``rotate_every`` reads of a proxy's secrets give it a new serial
    when its lifetime is short (0: never). Every stats read counts one more inbound request."""

    def __init__(self, rotate_every: int = 2) -> None:
        super().__init__(aborts_per_read=0)
        self.ttl: dict[str, str] = {}
        self.serial: dict[str, int] = {}
        self.reads: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.rotate_every = rotate_every
        self.restarts: list[tuple[str, str]] = []

    def set_cert_ttl(self, pod: str, ttl: str) -> dict[str, Any]:
        w = self.workload(pod)
        self.restarts.append((w.ref, ttl))
        if ttl:
            self.ttl[w.ref] = ttl
        else:
            self.ttl.pop(w.ref, None)
        self.serial[w.ref] = self.serial.get(w.ref, 1) + 1
        return {"proxy": w.ref, "secret_ttl": ttl, "restarted": True}

    def transport(self) -> httpx.MockTransport:
        inner = super().transport()

        def handle(request: httpx.Request) -> httpx.Response:
            host = request.url.host
            if host.startswith("envoy-"):
                w = self.workload(host[len("envoy-") :])
                if request.url.params.get("resource") == "dynamic_active_secrets":
                    ttl = self.ttl.get(w.ref)
                    n = self.reads[w.ref] = self.reads.get(w.ref, 0) + 1
                    if ttl and self.rotate_every and n % self.rotate_every == 0:
                        self.serial[w.ref] = self.serial.get(w.ref, 1) + 1
                    life = cert_ttl_seconds(ttl) if ttl else 86400.0
                    raw = base64.b64encode(_pem(self.serial.get(w.ref, 1), life)).decode()
                    doc = {
                        "configs": [
                            {
                                "name": "default",
                                "secret": {"tls_certificate": {"certificate_chain": {"inline_bytes": raw}}},
                            }
                        ]
                    }
                    return httpx.Response(200, text=json.dumps(doc))
                if request.url.path == "/stats":
                    n = self.requests[w.ref] = self.requests.get(w.ref, 0) + 1
                    p = f"http.inbound_{w.address}_3000;"
                    return httpx.Response(
                        200, text=f"{p}.downstream_rq_total: {n}\n{p}.fault.aborts_injected: 0\n"
                    )
            return inner.handler(request)  # type: ignore[no-any-return]

        return httpx.MockTransport(handle)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[CertMesh, dict[str, str]]]:
    mesh = CertMesh()
    context.use(tmp_path, mesh, admin_transport=mesh.transport())  # type: ignore[arg-type]
    yield mesh, {STATE_KEY: str(tmp_path)}
    context.forget(tmp_path)


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A running load whose every window has ``total`` requests and ``errors`` 503s."""
    seen = {"total": 100, "errors": 0}
    monkeypatch.setattr(probes, "_load", lambda name, conf: {"engine": "fake"})

    def window_of(_load: Any, start: float, end: float) -> Window:
        status = {"200": seen["total"] - seen["errors"], "503": seen["errors"]}
        return Window(start, end, total=seen["total"], status={k: v for k, v in status.items() if v})

    monkeypatch.setattr("harness.chaos.load_window.window_of", window_of)
    return seen


def test_durations_like_secret_ttl_takes_and_a_floor() -> None:
    assert cert_ttl_seconds("20s") == 20.0
    assert cert_ttl_seconds("1m30s") == 90.0
    assert cert_ttl_seconds("1h") == 3600.0
    for bad in ("20", "abc", "1.5s", "-20s", ""):
        with pytest.raises(UserError, match="not a duration"):
            cert_ttl_seconds(bad)
    with pytest.raises(UserError, match="shorter than 10 s"):
        cert_ttl_seconds("5s")


def test_shorten_proves_the_short_certificate_and_the_undo_restores_the_default(fake: Any) -> None:
    mesh, conf = fake
    out = actions.shorten_cert_lifetime("sample/web-v1-0", ttl="20s", configuration=conf)
    (ev,) = out["evidence"]
    assert ev["certificate"]["remaining_s"] <= 20.0
    assert Ledger.of(conf).get("cert-ttl:sample/web-v1-0") is not None
    assert mesh.restarts == [("sample/web-v1-0", "20s")]
    done, failed = actions.undo_all(conf)
    assert not failed and done == ["certificate lifetime of sample/web-v1-0 restored"]
    assert mesh.restarts[-1] == ("sample/web-v1-0", "")
    assert Ledger.of(conf).entries() == []
    assert actions.restore_cert_lifetime("sample/web-v1-0", configuration=conf) == {"restored": []}


def test_a_lifetime_that_did_not_take_effect_fails_with_the_certificate_seen(fake: Any) -> None:
    mesh, conf = fake
    mesh.set_cert_ttl = lambda pod, ttl: {"restarted": False}  # the proxy keeps its 24 h certificate
    with pytest.raises(BackendError, match=r"did not get a certificate of lifetime 20s within 0.5 s"):
        actions.shorten_cert_lifetime("sample/web-v1-0", ttl="20s", proof_timeout_s=0.5, configuration=conf)


def test_bad_victims_fail_before_anything_changes(fake: Any) -> None:
    mesh, conf = fake
    for pod, reason in (
        ("sample/nomesh-0", "not in the mesh"),
        ("sample/ingress-0", "ingress gateway"),
        ("sample/client-0", "no inbound HTTP listener"),
    ):
        with pytest.raises(UserError, match=reason):
            actions.shorten_cert_lifetime(pod, ttl="20s", configuration=conf)
    with pytest.raises(UserError, match="shorter than"):
        actions.shorten_cert_lifetime("sample/web-v1-0", ttl="2s", configuration=conf)
    assert mesh.restarts == [] and Ledger.of(conf).entries() == []


def test_rotations_are_new_serials_with_traffic_after_the_last(fake: Any, load: dict[str, int]) -> None:
    mesh, conf = fake
    actions.shorten_cert_lifetime("sample/web-v1-0", ttl="20s", configuration=conf)
    mark = probes.mark_certificate("sample/web-v1-0", configuration=conf)
    out = probes.certificates_rotated("sample/web-v1-0", rotations=2, within_s=10, configuration=conf)
    assert out["holds"], out
    serials = [r["serial"] for r in out["rotations"]]
    assert len(set(serials)) == 2 and mark["serial"] not in serials
    assert out["victim_requests_after_last_rotation"] >= 1


def test_negative_no_rotation_or_errors_under_load_fail_for_that_reason(
    fake: Any, load: dict[str, int]
) -> None:
    mesh, conf = fake
    mesh.rotate_every = 0  # a long lifetime: the serial never changes
    actions.shorten_cert_lifetime("sample/web-v1-0", ttl="1h", configuration=conf)
    probes.mark_certificate("sample/web-v1-0", configuration=conf)
    out = probes.certificates_rotated("sample/web-v1-0", rotations=2, within_s=0.5, configuration=conf)
    assert not out["holds"]
    assert out["why_not"][0].startswith("0 of 2 rotations seen on sample/web-v1-0's Envoy within 0.5 s")
    mesh.rotate_every, load["errors"] = 2, 3
    out = probes.certificates_rotated("sample/web-v1-0", rotations=2, within_s=10, configuration=conf)
    assert not out["holds"] and out["why_not"] == ["the load saw 3 errors of 100 (at most 0)"]


def test_the_kube_backend_refuses_before_any_change() -> None:
    from harness.backends.kube.backend import KubeBackend

    class One(KubeBackend):
        def __init__(self) -> None:
            self.name = "kind"

        def workload(self, ref: str) -> Any:
            return type("W", (), {"ref": ref})()

    with pytest.raises(UserError, match=r"proxy.istio.io/config.*SECRET_TTL: 20s"):
        One().set_cert_ttl("sample/web-v1-0", "20s")


def test_the_supervisor_replaces_only_that_proxy_and_passes_secret_ttl(tmp_path: Path) -> None:
    s = sup.Supervisor.__new__(sup.Supervisor)
    spec = sup.ProxySpec(
        pod="web-v1-0",
        namespace="sample",
        service_account="web",
        address="127.9.1.1",
        labels={},
        ports=sup.topo.ProxyPorts(1, 2, 3, 4),
        kind="sidecar",
        istio="1.x",
        revision="default",
    )
    s.proxy_specs = {spec.key: spec}
    s.events = []
    replaced: list[dict[str, Any]] = []
    s._replace_proxy = lambda old, **changes: replaced.append(changes) or {"ready_s": 0.1}  # type: ignore[method-assign]
    s.status = lambda *a, **k: None  # type: ignore[method-assign]
    assert s.op_proxy_cert_ttl({"proxy": spec.key, "ttl": "20s"})["restarted"] is True
    assert replaced == [{"secret_ttl": "20s"}]
    s.proxy_specs[spec.key] = sup.replace(spec, secret_ttl="20s")
    assert s.op_proxy_cert_ttl({"proxy": spec.key, "ttl": "20s"})["restarted"] is False
    assert sup.PLAN_OPS["proxy-cert-ttl"] == "op_proxy_cert_ttl"


def _activity(func: str, **arguments: Any) -> dict[str, Any]:
    module = "harness.chaos.probes" if func == "certificates_rotated" else "harness.chaos.actions"
    provider = {"type": "python", "module": module, "func": func, "arguments": arguments}
    return {"type": "action", "name": func, "provider": provider}


def test_preflight_refuses_bad_victims_and_lifetimes_before_the_method(fake: Any) -> None:
    mesh, conf = fake
    experiment = {
        "method": [
            _activity("shorten_cert_lifetime", pods=["sample/web-v1-0"], ttl="20s"),
            _activity("shorten_cert_lifetime", pods=["sample/nomesh-0"], ttl="20s"),
            _activity("shorten_cert_lifetime", pods=["sample/web-v1-1"], ttl="20"),
            _activity("fail_replicas", pods=["sample/client-0"], delay_ms=100),
            _activity("certificates_rotated", victim="sample/ghost"),
        ]
    }
    problems = control.preflight(experiment, conf)
    assert [p.split(":")[0] for p in problems] == [
        f"method[{i}] ({f})"
        for i, f in (
            (1, "shorten_cert_lifetime"),
            (2, "shorten_cert_lifetime"),
            (3, "fail_replicas"),
            (4, "certificates_rotated"),
        )
    ]
    assert "sample/nomesh-0 is not in the mesh (no sidecar)" in problems[0]
    assert "'20' is not a duration" in problems[1]
    assert "no inbound HTTP listener" in problems[2]
    assert "sample/ghost" in problems[3]
    assert mesh.restarts == []
