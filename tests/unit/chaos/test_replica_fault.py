"""Replica faults through the victim's own sidecar (harness.sidecar_fault, fail_replicas via sidecar),
against a fake mesh whose "istiod" hands each proxy the fault of the EnvoyFilters selecting it and
whose Envoys count aborts as the stats say. The shapes of the config dump and the stats are those a
real local mesh returned (inbound listener ``127.10.1.2_3000``, stat prefix ``inbound_...;``)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness import sidecar_fault
from harness.chaos import actions, context, objects
from harness.chaos.context import STATE_KEY
from harness.chaos.ledger import Ledger
from harness.errors import BackendError, UserError
from harness.mesh import REPLICA_LABEL, AppFault, Workload, find_workload

EMPTY_FAULT = {"@type": sidecar_fault.HTTP_FAULT_TYPE}


def listeners_dump(address: str, inbound_fault: dict[str, Any] | None) -> str:
    """A sidecar's dynamic_listeners: one outbound HCM, and an inbound one when ``inbound_fault``
    is not None (a client has no inbound HTTP listener)."""

    def hcm(direction: str, prefix: str, fault: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": f"{address}_3000",
            "traffic_direction": direction,
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": sidecar_fault.HCM,
                            "typed_config": {
                                "@type": sidecar_fault.HCM_TYPE,
                                "stat_prefix": prefix,
                                "http_filters": [
                                    {"name": sidecar_fault.FAULT_FILTER, "typed_config": fault},
                                    {"name": "envoy.filters.http.router"},
                                ],
                            },
                        }
                    ]
                }
            ],
        }

    configs = [{"active_state": {"listener": hcm("OUTBOUND", f"outbound_{address}_3000;", EMPTY_FAULT)}}]
    if inbound_fault is not None:
        configs.append(
            {"active_state": {"listener": hcm("INBOUND", f"inbound_{address}_3000;", inbound_fault)}}
        )
    return json.dumps({"configs": configs})


class FakeMesh:
    """Workloads, Istio objects, and proxies that run what the EnvoyFilters selecting them say.

    ``istiod``: ``honest`` (a filter reaches the proxies its selector matches), ``ignores`` (it
    reaches none), ``everyone`` (it reaches every sidecar: a broken scope). ``aborts_per_read``:
    how many requests each stats read finds aborted since the last (0: the fault never bites)."""

    name = "fake"

    def __init__(self, istiod: str = "honest", aborts_per_read: int = 1) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.istiod = istiod
        self.aborts_per_read = aborts_per_read
        self.aborts: dict[str, int] = {}
        self.applied = 0
        self.admin_faults: set[str] = set()
        self.draining = 0  # listener_manager.total_filter_chains_draining of every proxy

    def workloads(self) -> Sequence[Workload]:
        def w(name: str, i: int, role: str = "app", admin: bool = True) -> Workload:
            return Workload(
                name=name,
                namespace="sample",
                deployment=name.rsplit("-", 1)[0],
                labels={"app": "web", REPLICA_LABEL: name},
                address=f"127.9.1.{i}",
                app_url="",
                admin_url=f"http://app-{name}" if role == "app" else "",
                sidecar_url="",
                proxy_admin_url=f"http://envoy-{name}" if admin else "",
                role=role,
            )

        return [
            w("web-v1-0", 1),
            w("web-v1-1", 2),
            w("client-0", 3, role="client"),
            w("nomesh-0", 4, admin=False),
            w("ingress-0", 5, role="gateway"),
        ]

    def workload(self, ref: str) -> Workload:
        return find_workload(self.workloads(), ref)

    def istio_objects(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for o in self.objects.values()]

    def apply(self, paths: Sequence[Path]) -> float:
        for p in paths:
            for d in yaml.safe_load_all(p.read_text()):
                self.objects[objects.object_key(d)] = d
        self.applied += 1
        return 0.01

    def delete(self, paths: Sequence[Path]) -> float:
        for p in paths:
            for d in yaml.safe_load_all(p.read_text()):
                self.objects.pop(objects.object_key(d))
        return 0.01

    def inject_fault(self, pod: str, fault: AppFault) -> dict[str, Any]:
        w = self.workload(pod)
        if fault.via == "sidecar":
            return sidecar_fault.inject(
                self, httpx.Client(transport=self.transport()), w, fault, settle_s=0.3
            )
        self.admin_faults.add(w.ref)
        return {"pod": w.ref, "via": "app"}

    def clear_fault(self, pod: str) -> None:
        w = self.workload(pod)
        sidecar_fault.clear(self, w)
        self.admin_faults.discard(w.ref)

    def wait_synced(self, timeout: float) -> float:
        return 0.0

    def ejections(self) -> dict[str, dict[str, list[str]]]:
        return {}

    # ---- the fake proxies
    def _fault_of(self, w: Workload) -> dict[str, Any]:
        fault = dict(EMPTY_FAULT)
        for o in self.objects.values():
            if o.get("kind") != "EnvoyFilter" or self.istiod == "ignores":
                continue
            selector = o["spec"]["workloadSelector"]["labels"]
            if self.istiod == "everyone" or all(w.labels.get(k) == v for k, v in selector.items()):
                fault.update(o["spec"]["configPatches"][0]["patch"]["value"]["typed_config"])
        return fault

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            host = request.url.host
            if host.startswith("app-"):
                name = host[len("app-") :]
                return httpx.Response(200, json={"active": f"sample/{name}" in self.admin_faults})
            w = self.workload(host[len("envoy-") :])
            if request.url.path == "/config_dump":
                inbound = None if w.role == "client" else self._fault_of(w)
                return httpx.Response(200, text=listeners_dump(w.address, inbound))
            if request.url.path == "/stats":
                faulted = "abort" in self._fault_of(w)
                n = self.aborts[w.ref] = self.aborts.get(w.ref, 0) + (self.aborts_per_read if faulted else 0)
                p = f"http.inbound_{w.address}_3000;"
                o = f"http.outbound_{w.address}_3000;"
                text = (
                    f"{p}.downstream_rq_total: {n}\n{p}.fault.aborts_injected: {n}\n"
                    f"{p}.fault.delays_injected: 0\n{o}.fault.aborts_injected: 7\n"
                    f"{o}.downstream_rq_total: 9\n"
                    f"{sidecar_fault.DRAINING}: {self.draining}\n"
                )
                return httpx.Response(200, text=text)
            return httpx.Response(404)

        return httpx.MockTransport(handle)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeMesh, dict[str, str]]]:
    mesh = FakeMesh()
    context.use(tmp_path, mesh, admin_transport=mesh.transport())  # type: ignore[arg-type]
    yield mesh, {STATE_KEY: str(tmp_path)}
    context.forget(tmp_path)


# --------------------------------------------------------------------------- the EnvoyFilter


def test_the_envoy_filter_selects_only_the_replica_and_merges_into_the_inbound_fault_filter() -> None:
    w = FakeMesh().workload("sample/web-v1-0")
    ef = sidecar_fault.envoy_filter(w, AppFault(status=503, rate=0.25, delay_ms=150))
    assert ef["metadata"]["name"] == "meshproof-fault-web-v1-0"
    assert ef["spec"]["workloadSelector"] == {"labels": {REPLICA_LABEL: "web-v1-0"}}
    (patch,) = ef["spec"]["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER" and patch["match"]["context"] == "SIDECAR_INBOUND"
    assert patch["patch"]["operation"] == "MERGE"
    value = patch["patch"]["value"]["typed_config"]
    share = {"numerator": 250000, "denominator": "MILLION"}
    assert value["abort"] == {"http_status": 503, "percentage": share}
    assert value["delay"] == {"fixed_delay": "0.150s", "percentage": share}
    with pytest.raises(UserError, match="needs a status and/or a delay"):
        sidecar_fault.http_fault(AppFault(status=None, delay_ms=0))


def test_the_inbound_fault_is_read_from_the_config_dump() -> None:
    merged = {
        **EMPTY_FAULT,
        "delay": {"fixed_delay": "0.150s", "percentage": {"numerator": 250000, "denominator": "MILLION"}},
        "abort": {"http_status": 503, "percentage": {"numerator": 250000, "denominator": "MILLION"}},
    }
    (found,) = sidecar_fault.parse_inbound_faults(listeners_dump("127.10.1.2", merged))
    assert (found.listener, found.stat_prefix) == ("127.10.1.2_3000", "inbound_127.10.1.2_3000;")
    assert (found.abort_status, found.delay_ms, found.ppm) == (503, 150, 250000)
    assert sidecar_fault.matches(found, AppFault(status=503, rate=0.25, delay_ms=150))
    assert not sidecar_fault.matches(found, AppFault(status=503, rate=0.25))  # the delay differs
    assert not sidecar_fault.matches(found, AppFault(status=503, rate=1.0, delay_ms=150))  # the share
    (idle,) = sidecar_fault.parse_inbound_faults(listeners_dump("127.10.1.2", EMPTY_FAULT))
    assert not idle.active and idle.describe() == "127.10.1.2_3000: no fault"


# --------------------------------------------------------------------------- inject / clear


def test_inject_proves_the_fault_on_the_victim_only_and_clear_removes_it() -> None:
    mesh = FakeMesh()
    with httpx.Client(transport=mesh.transport()) as http:
        w = mesh.workload("sample/web-v1-0")
        out = sidecar_fault.inject(mesh, http, w, AppFault(status=503, rate=1.0))
        assert out["via"] == "sidecar" and out["envoy_filter"] == "sample/meshproof-fault-web-v1-0"
        assert out["old_chains_draining"] == 0
        assert out["sidecar"] == ["127.9.1.1_3000: abort 503 for 100.0000%"]
        assert out["scope"] == "no other of 2 sidecars runs it"  # web-v1-1 and client-0
        assert sidecar_fault.active_anywhere(mesh) == ["sample/meshproof-fault-web-v1-0"]
        counts = sidecar_fault.inbound_counts(http, w)
        # the inbound HCM's counters only: the outbound one's 7 aborts and 9 requests are not the victim's
        assert counts.aborts == counts.requests >= 1
        assert sidecar_fault.clear(mesh, w, http) is True
        assert sidecar_fault.active_anywhere(mesh) == []
        assert sidecar_fault.clear(mesh, w) is False  # nothing left: a no-op


def test_inject_does_not_wait_out_the_old_filter_chains_drain_timer() -> None:
    # Istio's drainDuration (45 s by default) keeps the old chain "draining" long after its
    # connections closed; waiting for it let an outlier experiment's method run past the ejection
    # time (the victim came back, still failing). The proof is the victim's fault counters instead.
    mesh = FakeMesh()
    mesh.draining = 1  # never ends within this test
    with httpx.Client(transport=mesh.transport()) as http:
        w = mesh.workload("sample/web-v1-0")
        out = sidecar_fault.inject(mesh, http, w, AppFault(status=503, rate=1.0))
        assert out["old_chains_draining"] == 1
        assert sidecar_fault.active_anywhere(mesh) == ["sample/meshproof-fault-web-v1-0"]
        assert sidecar_fault.clear(mesh, w) is True  # without http: no drain wait


@pytest.mark.negative
def test_negative_a_filter_istiod_does_not_apply_fails_with_the_evidence_and_is_removed() -> None:
    mesh = FakeMesh(istiod="ignores")
    with httpx.Client(transport=mesh.transport()) as http, pytest.raises(BackendError) as e:
        sidecar_fault.inject(mesh, http, mesh.workload("web-v1-0"), AppFault(status=503), settle_s=0.3)
    assert "did not take effect" in str(e.value)
    assert "the sidecar of sample/web-v1-0 does not run the fault: 127.9.1.1_3000: no fault" in str(e.value)
    assert "\n" not in str(e.value)
    assert mesh.objects == {}  # removed again


@pytest.mark.negative
def test_negative_a_filter_that_reaches_other_proxies_fails_the_scope_check() -> None:
    mesh = FakeMesh(istiod="everyone")
    with httpx.Client(transport=mesh.transport()) as http, pytest.raises(BackendError) as e:
        sidecar_fault.inject(mesh, http, mesh.workload("web-v1-0"), AppFault(status=503), settle_s=0.3)
    assert "other proxies run it too: sample/web-v1-1" in str(e.value)
    assert mesh.objects == {}


@pytest.mark.parametrize(
    ("pod", "reason"),
    [
        ("ingress-0", "is the ingress gateway"),
        ("nomesh-0", r"is not in the mesh \(no sidecar\)"),
        ("client-0", "has no inbound HTTP listener"),
    ],
)
def test_bad_victims_fail_before_anything_is_applied(pod: str, reason: str) -> None:
    mesh = FakeMesh()
    with httpx.Client(transport=mesh.transport()) as http, pytest.raises(UserError, match=reason):
        sidecar_fault.inject(mesh, http, mesh.workload(pod), AppFault(status=503))
    assert mesh.applied == 0


# --------------------------------------------------------------------------- the chaos action


def test_fail_replicas_via_sidecar_proves_the_counters_moved_and_is_undone(fake: Any) -> None:
    mesh, conf = fake
    out = actions.fail_replicas(["sample/web-v1-0"], status=503, proof_from="", configuration=conf)
    (ev,) = out["evidence"]
    assert ev["via"] == "sidecar" and ev["proof"]["aborts_injected"]["aborts"] >= 1
    assert [e.kind for e in Ledger.of(conf).entries()] == ["replica-fault"]
    done, failed = actions.undo_all(conf)
    assert not failed and done == ["fault on sample/web-v1-0 cleared"]
    assert mesh.objects == {} and Ledger.of(conf).entries() == []


@pytest.mark.negative
def test_negative_a_fault_whose_counters_never_move_fails_the_action_in_one_line(fake: Any) -> None:
    mesh, conf = fake
    mesh.aborts_per_read = 0  # the filter is in place, yet no request is ever aborted
    with pytest.raises(BackendError) as e:
        actions.fail_replicas(
            ["sample/web-v1-0"], status=503, proof_from="", proof_timeout_s=0.5, configuration=conf
        )
    msg = str(e.value)
    assert "\n" not in msg
    assert "the sidecar fault on sample/web-v1-0 did not take effect within 0.5 s" in msg
    assert "0 aborts_injected" in msg and "the traffic already flowing" in msg
    # the ledger still holds it, so the rollback removes the filter
    assert [e.kind for e in Ledger.of(conf).entries()] == ["replica-fault"]
    actions.undo_all(conf)
    assert mesh.objects == {}


def test_fail_replicas_via_app_is_proven_by_the_admin_endpoint(fake: Any) -> None:
    mesh, conf = fake
    out = actions.fail_replicas(["web-v1-1"], status=500, via="app", configuration=conf)
    assert out["evidence"][0]["proof"] == {"admin_fault": {"active": True}}
    assert [e.kind for e in Ledger.of(conf).entries()] == ["app-fault"]
    actions.clear_replica_faults(["web-v1-1"], configuration=conf)
    assert not mesh.admin_faults and Ledger.of(conf).entries() == []


def test_fail_replicas_bad_arguments_are_user_errors(fake: Any) -> None:
    _, conf = fake
    with pytest.raises(UserError, match="via 'proxy' is not one of sidecar, app"):
        actions.fail_replicas(["web-v1-0"], via="proxy", configuration=conf)
    with pytest.raises(UserError, match="nothing to inject"):
        actions.fail_replicas(["web-v1-0"], status=None, configuration=conf)
    with pytest.raises(UserError, match=r"rate 0 must be in \(0, 1\]"):
        actions.fail_replicas(["web-v1-0"], rate=0, configuration=conf)
    with pytest.raises(UserError, match="not in the mesh"):
        actions.fail_replicas(["nomesh-0"], configuration=conf)
    assert Ledger.of(conf).entries() == []
