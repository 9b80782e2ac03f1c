"""control-plane-loss's proof of the outage and of the return, and the no-residue check's view of
labels and annotations, over fakes: a backend whose istiod "serves" while a flag says so, and an
Envoy admin per proxy answering ``/stats`` with its ``control_plane.connected_state``."""

from __future__ import annotations

import copy
import dataclasses
import http.server
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import envoy, proxy_stats
from harness.chaos import actions, context, control, objects, residue
from harness.chaos.context import STATE_KEY
from harness.chaos.ledger import Ledger
from harness.errors import BackendError, StateError, WaitTimeout
from harness.mesh import Workload
from tests.e2e import chaos_sabotage

from .test_chaos_units import VS, FakeBackend

ROOT = Path(__file__).resolve().parents[3]
PROXIES = ("sample/web-v1-0", "sample/web-v1-1", "istio-system/gw")


class Admins:
    """One Envoy admin per proxy on 127.0.0.1 (``{url}/{proxy}/stats``). ``gauge[proxy]`` is what its
    ``control_plane.connected_state`` reads (None: the proxy does not expose it); ``script``, when
    set, is called before each read (to change the gauges as reads happen)."""

    def __init__(self) -> None:
        self.gauge: dict[str, int | None] = dict.fromkeys(PROXIES, 1)
        self.reads = 0
        self.script: Any = None
        admins = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                proxy = self.path.split("?")[0].removeprefix("/").removesuffix("/stats").replace("~", "/")
                admins.reads += 1
                if admins.script is not None:
                    admins.script(admins)
                value = admins.gauge.get(proxy)
                body = b"" if value is None else f"{envoy.XDS_CONNECTED}: {value}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def admin_url(self, proxy: str) -> str:
        return f"{self.url}/{proxy.replace('/', '~')}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PlaneBackend(FakeBackend):
    """FakeBackend with a control plane: ``stop`` decides what stopping does."""

    def __init__(self, admins: Admins) -> None:
        super().__init__()
        self.admins = admins
        self.serving = ["istiod (default) accepts connections on its xDS port 127.0.0.1:15010"]
        self.stop = self._really_stop
        self.started = 0

    def _really_stop(self) -> None:
        self.serving = []

    def workloads(self) -> Sequence[Workload]:
        apps = [
            dataclasses.replace(w, proxy_admin_url=self.admins.admin_url(w.ref)) for w in super().workloads()
        ]
        gw = Workload(
            "gw",
            "istio-system",
            "gw",
            {},
            "127.0.0.1",
            "",
            "",
            "",
            self.admins.admin_url("istio-system/gw"),
            role="gateway",
        )
        return [*apps, gw]

    def stop_control_plane(self) -> None:
        self.stop()

    def start_control_plane(self) -> None:
        self.started += 1
        self.serving = ["istiod (default) accepts connections on its xDS port 127.0.0.1:15010"]

    def control_plane_serving(self) -> list[str]:
        return list(self.serving)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[PlaneBackend, Admins, dict[str, str]]]:
    admins = Admins()
    backend = PlaneBackend(admins)
    context.use(tmp_path, backend)  # type: ignore[arg-type]
    yield backend, admins, {STATE_KEY: str(tmp_path)}
    context.forget(tmp_path)
    admins.close()


def disconnect_after(reads: int) -> Any:
    """A script: every proxy's gauge drops to 0 once ``reads`` reads have happened."""

    def script(a: Admins) -> None:
        if a.reads > reads:
            for p in a.gauge:
                a.gauge[p] = 0

    return script


# --------------------------------------------------------------------------- the outage


def test_stop_control_plane_proves_the_outage_holds_it_and_start_proves_the_return(plane: Any) -> None:
    backend, admins, conf = plane
    admins.script = disconnect_after(6)  # the proxies notice a little after istiod is gone
    out = actions.stop_control_plane(outage_s=0.4, configuration=conf)
    assert out["control_plane"] == "stopped"
    assert out["proxies_disconnected"] == len(PROXIES)
    assert out["istiod_gone_s"] <= out["xds_lost_s"]
    assert out["outage_held_s"] >= 0.4  # outage_s is honoured, measured from the proof
    entry = Ledger.of(conf).get("control-plane")
    assert entry is not None and entry.data["outage_proven_at"] > 0

    def reconnect(a: Admins) -> None:
        if backend.serving:
            for p in a.gauge:
                a.gauge[p] = 1

    admins.script = reconnect
    back = actions.start_control_plane(configuration=conf)
    assert backend.started == 1
    assert back["control_plane"] == "running"
    assert back["outage_total_s"] >= 0.4
    assert back["envoy_connected_s"] >= back["reconnected_and_acked_s"]
    assert Ledger.of(conf).entries() == []


def test_an_outage_not_seen_fails_with_what_was_last_seen(plane: Any) -> None:
    backend, _admins, conf = plane
    backend.stop = lambda: None  # the stop "succeeds" and istiod keeps serving
    with pytest.raises(WaitTimeout) as e:
        actions.stop_control_plane(outage_s=0, timeout_s=0.5, configuration=conf)
    text = str(e.value)
    assert "\n" not in text
    assert "istiod (default) accepts connections on its xDS port 127.0.0.1:15010" in text
    assert "3 of 3 proxies still connected" in text


def test_a_proxy_still_connected_is_named(plane: Any) -> None:
    _backend, admins, conf = plane

    def all_but_the_gateway(a: Admins) -> None:
        a.gauge.update({"sample/web-v1-0": 0, "sample/web-v1-1": 0})

    admins.script = all_but_the_gateway
    with pytest.raises(
        WaitTimeout,
        match=r"control plane serving: nothing; 1 of 3 proxies still connected \(istio-system/gw\)",
    ):
        actions.stop_control_plane(outage_s=0, timeout_s=0.5, configuration=conf)


def test_istiod_back_during_the_outage_fails_the_action(plane: Any) -> None:
    backend, admins, conf = plane
    admins.script = disconnect_after(0)
    calls = {"n": 0}
    serving = backend.control_plane_serving

    def comes_back() -> list[str]:
        calls["n"] += 1
        return ["istiod pod istio-system/istiod-1 is ready"] if calls["n"] > 3 else serving()

    backend.control_plane_serving = comes_back  # type: ignore[method-assign]
    with pytest.raises(
        BackendError,
        match=r"the outage ended .* into the 30 s asked for: istiod pod istio-system/istiod-1 is ready",
    ):
        actions.stop_control_plane(outage_s=30, timeout_s=5, configuration=conf)


def test_a_proxy_without_the_gauge_is_a_clear_error(plane: Any) -> None:
    _backend, admins, conf = plane
    admins.gauge["istio-system/gw"] = None
    with pytest.raises(
        StateError, match="proxy istio-system/gw does not expose control_plane.connected_state"
    ):
        actions.stop_control_plane(outage_s=0, timeout_s=2, configuration=conf)


def test_start_control_plane_waits_for_every_envoy_to_reconnect(plane: Any) -> None:
    _backend, admins, conf = plane
    admins.gauge["sample/web-v1-1"] = 0  # istiod says synced, this Envoy says its stream is down
    with pytest.raises(WaitTimeout, match=r"1 of 3 proxies still disconnected \(sample/web-v1-1\)"):
        actions.start_control_plane(timeout_s=0.5, configuration=conf)


def test_the_experiment_holds_outage_s_and_pauses_nowhere() -> None:
    doc = yaml.safe_load((ROOT / "experiments/control-plane-loss.yaml").read_text())
    activities = [*doc["method"], *doc["rollbacks"]]
    assert not [a["name"] for a in activities if "pauses" in a]
    stop = next(a for a in doc["method"] if a["provider"].get("func") == "stop_control_plane")
    assert stop["provider"]["arguments"]["outage_s"] == "${outage_s}"
    probe = next(a for a in doc["method"] if a["name"] == "data-plane-serves-without-istiod")
    assert probe["provider"]["arguments"]["window_s"] == "${outage_s}"  # exactly the held outage


def test_envoy_gauge_parsing_and_the_stats_matcher_keeps_it() -> None:
    import re

    text = "control_plane.connected_state: 0\ncontrol_plane.pending_requests: 3\n"
    assert envoy.parse_gauge(text, envoy.XDS_CONNECTED) == 0
    assert envoy.parse_gauge("server.live: 1\n", envoy.XDS_CONNECTED) is None
    # Envoy's safe_regex matches the whole stat name
    assert any(re.fullmatch(r, envoy.XDS_CONNECTED) for r in proxy_stats.INCLUSION_REGEXPS)


def test_a_failed_meshproof_action_fails_the_run() -> None:
    journal = {
        "run": [
            {
                "activity": {
                    "type": "action",
                    "name": "stop-istiod",
                    "provider": {"type": "python", "module": "harness.chaos.actions"},
                },
                "status": "failed",
                "exception": [
                    "Traceback ...\n",
                    "chaoslib.exceptions.ActivityFailed: harness.errors.WaitTimeout: timed out after 60.0s\n",
                ],
            },
            {
                "activity": {
                    "type": "action",
                    "name": "other",
                    "provider": {"type": "python", "module": "x"},
                },
                "status": "failed",
            },
        ]
    }
    assert control.failed_probes(journal) == [
        "stop-istiod: failed: chaoslib.exceptions.ActivityFailed: harness.errors.WaitTimeout: timed out after 60.0s"
    ]


# --------------------------------------------------------------------------- residue


def test_residue_names_a_changed_label_and_annotation(fake_objects: Any) -> None:
    backend, conf = fake_objects
    residue.snapshot(conf)
    meta = backend.objects["VirtualService/sample/web"]["metadata"]
    meta["labels"] = {"chaos-residue": "x"}
    meta["annotations"] = {"example.com/owner": "game-day"}
    found = residue.check(conf)
    assert found.problems == (
        "Istio object changed: VirtualService/sample/web: "
        'metadata.annotations added ({"example.com/owner": "game-day"}); '
        'metadata.labels added ({"chaos-residue": "x"})',
    )
    meta["labels"] = {"chaos-residue": "y", "team": "a"}
    residue.snapshot(conf)
    meta["labels"] = {"chaos-residue": "z"}
    meta["annotations"]["example.com/owner"] = "other"
    assert residue.check(conf).problems == (
        "Istio object changed: VirtualService/sample/web: "
        'metadata.annotations["example.com/owner"]: "game-day" -> "other"; '
        'metadata.labels["chaos-residue"]: "y" -> "z"; '
        'metadata.labels.team removed (was "a")',
    )


def test_server_managed_metadata_is_not_residue(fake_objects: Any) -> None:
    backend, conf = fake_objects
    meta = backend.objects["VirtualService/sample/web"]["metadata"]
    meta.update(
        resourceVersion="10",
        uid="u1",
        generation=1,
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "meshproof"}],
        annotations={"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
    )
    backend.objects["VirtualService/sample/web"]["status"] = {"observedGeneration": 1}
    residue.snapshot(conf)
    meta.update(
        resourceVersion="12",
        uid="u2",
        generation=2,
        creationTimestamp="2026-01-02T00:00:00Z",
        managedFields=[{"manager": "meshproof", "time": "later"}],
        annotations={"kubectl.kubernetes.io/last-applied-configuration": "{other}"},
        labels={},
    )
    backend.objects["VirtualService/sample/web"]["status"] = {"observedGeneration": 2}
    assert residue.check(conf).clean
    # everything else of the metadata counts
    meta["finalizers"] = ["example.com/hold"]
    assert residue.check(conf).problems == (
        'Istio object changed: VirtualService/sample/web: metadata.finalizers added (["example.com/hold"])',
    )


def test_restore_brings_back_labels_when_the_spec_is_unchanged(fake_objects: Any, tmp_path: Path) -> None:
    backend, conf = fake_objects
    relabelled = copy.deepcopy(VS)
    relabelled["metadata"]["labels"] = {"chaos-residue": "x"}
    f = tmp_path / "relabel.yaml"
    f.write_text(yaml.safe_dump(relabelled))
    actions.apply_resource(str(f), configuration=conf)
    assert backend.objects["VirtualService/sample/web"]["metadata"]["labels"] == {"chaos-residue": "x"}
    out = actions.restore_resources(str(f), configuration=conf)
    assert out["restored"] == ["restored VirtualService/sample/web"]
    assert "labels" not in backend.objects["VirtualService/sample/web"]["metadata"]


def test_negative_control_a_sabotaged_rollback_leaves_named_residue(
    fake_objects: Any, tmp_path: Path
) -> None:
    """Negative control: the rollback drops the ledger entry without undoing the relabel, so
    nothing but the no-residue check can see it, and it must, naming object and field."""
    backend, conf = fake_objects
    residue.snapshot(conf)
    relabelled = copy.deepcopy(VS)
    relabelled["metadata"]["labels"] = {"chaos-residue": "sabotaged"}
    f = tmp_path / "relabel.yaml"
    f.write_text(yaml.safe_dump(relabelled))
    actions.apply_resource(str(f), configuration=conf)
    chaos_sabotage.restore_resources_skipping_undo(str(f), configuration=conf)
    assert actions.undo_all(conf) == ([], [])  # the ledger no longer knows
    found = residue.check(conf)
    assert found.problems == (
        'Istio object changed: VirtualService/sample/web: metadata.labels added ({"chaos-residue": "sabotaged"})',
    )


@pytest.fixture
def fake_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeBackend, dict[str, str]]]:
    monkeypatch.setattr(objects, "validate", lambda bodies, configuration: None)
    backend = FakeBackend()
    context.use(tmp_path, backend)  # type: ignore[arg-type]
    yield backend, {STATE_KEY: str(tmp_path)}
    context.forget(tmp_path)


def test_field_changes_paths() -> None:
    assert objects.field_changes({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == ["a[1].b: 2 -> 3"]
    assert objects.field_changes({"a": [1]}, {"a": [1, 2]}) == ["a: 2 items, was 1"]
    assert objects.field_changes({"x.y/z": 1}, {}) == ['["x.y/z"] removed (was 1)']
    assert objects.field_changes(1, 1) == []
