"""The cluster upgrade check's refusals (bad input: exit 2, nothing created) and its Ctrl-C decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.errors import UserError
from harness.settings import Settings
from harness.upgrade import kube, kubecheck
from harness.upgrade.local import UpgradeConfig


def istiod(rev: str, image: str) -> dict[str, Any]:
    labels = {"app": "istiod", **({"istio.io/rev": rev} if rev != "default" else {})}
    return {
        "metadata": {"name": "istiod" if rev == "default" else f"istiod-{rev}", "labels": labels},
        "spec": {"template": {"spec": {"containers": [{"name": "discovery", "image": image}]}}},
    }


class FakeApi:
    """A cluster with the given istiod Deployments; records every write (there must be none)."""

    def __init__(self, deployments: list[dict[str, Any]]) -> None:
        self.deployments = deployments
        self.writes: list[Any] = []
        self.closed = False

    def server_version(self) -> str:
        return "v1.37.2"

    def list(
        self, api_version: str, kind: str, namespace: str = "", selector: str = ""
    ) -> list[dict[str, Any]]:
        return list(self.deployments) if kind == "Deployment" else []

    def apply(self, obj: Any, field_manager: str = "meshproof") -> Any:
        self.writes.append(obj)
        return obj

    def delete(self, ref: Any, **kw: Any) -> bool:
        self.writes.append(ref)
        return True

    def close(self) -> None:
        self.closed = True


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(backend="existing", state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", **kw)


def check(
    tmp_path: Path, api: FakeApi, *, context: str = "kind-a", contexts: list[str] | None = None
) -> None:
    made: list[tuple[str, str]] = []

    def factory(kubeconfig: str, ctx: str) -> FakeApi:
        made.append((kubeconfig, ctx))
        return api

    up = kubecheck.KubeUpgrade(
        settings(tmp_path, kube_context=context),
        UpgradeConfig("1.30-dev", "1.31-dev", mode="canary"),
        expected_of=lambda label: None,  # type: ignore[arg-type,return-value]
        contexts=lambda _kc: ["kind-a", "kind-b"] if contexts is None else contexts,
        api_factory=factory,
    )
    try:
        up.run()
    finally:
        assert api.writes == []  # nothing created, whatever the refusal
        assert not (tmp_path / "state").exists()  # not even the state dir or a report


def one_line(e: pytest.ExceptionInfo[UserError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_code == 2
    return msg


def test_a_context_that_does_not_exist_is_refused_before_connecting(tmp_path: Path) -> None:
    api = FakeApi([istiod("default", "meshproof.local/pilot:1.30-dev")])
    with pytest.raises(UserError) as e:
        check(tmp_path, api, context="kind-nope")
    msg = one_line(e)
    assert "'kind-nope' is not a context" in msg and "kind-a, kind-b" in msg and "Fix:" in msg
    assert not api.closed  # never connected


def test_a_kubeconfig_without_contexts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="has no contexts") as e:
        check(tmp_path, FakeApi([]), context="", contexts=[])
    one_line(e)


def test_a_cluster_without_istio_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        check(tmp_path, FakeApi([]))
    msg = one_line(e)
    assert "context kind-a runs no Istio" in msg and "Fix: install Istio 1.30-dev first" in msg


def test_a_cluster_on_another_release_than_from_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        check(tmp_path, FakeApi([istiod("default", "meshproof.local/pilot:1.31-dev")]))
    msg = one_line(e)
    assert "runs Istio 1.31-dev (default runs 1.31-dev), not --from 1.30-dev" in msg
    assert "Fix: --from 1.31-dev" in msg


def test_a_cluster_with_two_revisions_is_refused(tmp_path: Path) -> None:
    api = FakeApi(
        [
            istiod("default", "meshproof.local/pilot:1.30-dev"),
            istiod("1-31-dev", "meshproof.local/pilot:1.31-dev"),
        ]
    )
    with pytest.raises(UserError) as e:
        check(tmp_path, api)
    assert "several Istio revisions (1-31-dev runs 1.31-dev, default runs 1.30-dev)" in one_line(e)


def test_the_cluster_on_from_gives_its_revision() -> None:
    api = FakeApi([istiod("1-30-dev", "docker.io/istio/pilot:1.30.2-distroless")])
    assert kubecheck.check_cluster(api, "1.30-dev", "1.31-dev", "context x") == "1-30-dev"


def test_proxies_are_keyed_by_deployment_and_index_so_a_restart_keeps_their_keys() -> None:
    from harness.mesh import Workload

    def w(ns: str, dep: str, pod: str) -> Workload:
        return Workload(
            name=pod, namespace=ns, deployment=dep, labels={}, address="", app_url="", admin_url="",
            sidecar_url="", proxy_admin_url=f"http://{pod}",
        )  # fmt: skip

    before = kubecheck.stable_keys([w("s", "v1", "v1-b"), w("s", "v1", "v1-a"), w("g", "gw", "gw-x")])
    after = kubecheck.stable_keys([w("s", "v1", "v1-z"), w("s", "v1", "v1-y"), w("g", "gw", "gw-q")])
    assert list(before) == list(after) == ["g/gw#0", "s/v1#0", "s/v1#1"]
    assert before["s/v1#0"].name == "v1-a"


# ---- Ctrl-C -----------------------------------------------------------------------------------------

DEPLOYMENTS = {"sample": ["v1", "v2"], "other": ["client"]}


def canary(tag: str = "") -> kube.KubePlan:
    return kube.plan(
        "1.30-dev",
        "1.31-dev",
        "canary",
        ["other", "sample"],
        DEPLOYMENTS,
        istioctl_to="/to/istioctl",
        when="t0",
        rev_from="default",
        kubeconfig="/k",
        context="kind-x",
        tag=tag,
    )


def recover(p: kube.KubePlan, started: int) -> kube.Recovery:
    return kube.recovery(
        p,
        started,
        rev_from="default",
        labels_before={"sample": {"istio-injection": "enabled"}, "other": {"istio-injection": "enabled"}},
        deployments=DEPLOYMENTS,
        when="t1",
    )


def test_plan_on_an_install_without_revision_removes_default_and_passes_the_cluster() -> None:
    p = canary()
    assert [s.name for s in p.steps][-1] == "remove default"
    assert p.steps[-1].argv == (
        "/to/istioctl", "uninstall", "--revision", "default", "--skip-confirmation",
        "--kubeconfig", "/k", "--context", "kind-x",
    )  # fmt: skip
    assert p.steps[0].argv[-4:-2] == ("--context", "kind-x")


def test_ctrl_c_before_the_canary_exists_leaves_from_untouched() -> None:
    rec = recover(canary(), -1)
    assert (rec.revision, rec.release, rec.steps) == ("default", "1.30-dev", ())
    assert "left on revision default (Istio 1.30-dev)" in rec.message()


def test_ctrl_c_during_the_canary_install_uninstalls_it() -> None:
    rec = recover(canary(), 0)
    assert rec.revision == "default"
    assert [s.argv[1:4] for s in rec.steps] == [("uninstall", "--revision", "1-31-dev")]
    assert rec.steps[0].argv[-2:] == ("--context", "kind-x")


def test_ctrl_c_puts_the_gateway_back_on_from_before_uninstalling_the_canary() -> None:
    """Seen on kind: the canary's install took the ingress gateway over, and `istioctl uninstall
    --revision 1-31-dev` removed it ('You are about to remove the following gateways'). FROM's own
    install runs first, so the gateway is FROM's again when TO's revision goes."""
    from_install = (
        "/from/istioctl",
        "install",
        "--skip-confirmation",
        "--filename",
        "/s/istio-operator-1.30-dev.yaml",
    )
    rec = kube.recovery(
        canary(), 1, rev_from="default", labels_before={}, deployments=DEPLOYMENTS, when="t1",
        reinstall_from=from_install,
    )  # fmt: skip
    assert [s.name for s in rec.steps] == [
        "namespace other back to default",
        "control-plane 1.30-dev again",
        "remove 1-31-dev",
    ]
    assert rec.steps[1].argv == from_install


def test_ctrl_c_after_a_namespace_moved_moves_it_back_then_uninstalls_the_canary() -> None:
    p = canary()
    assert p.steps[1].namespace == "other"
    rec = recover(p, 1)  # "namespace other" had started: it may have moved
    assert [s.name for s in rec.steps] == ["namespace other back to default", "remove 1-31-dev"]
    back = rec.steps[0].apply
    assert back[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "other", "labels": {"istio-injection": "enabled"}},
    }
    assert [b["metadata"]["name"] for b in back[1:]] == ["client"]
    assert "1 namespace(s) had moved" in rec.why


def test_ctrl_c_once_from_is_being_removed_goes_forward_to_to() -> None:
    p = canary()
    rec = recover(p, len(p.steps) - 1)
    assert (rec.revision, rec.release) == ("1-31-dev", "1.31-dev")
    assert rec.steps == (p.steps[-1],)  # the removal again: FROM may be half gone


def test_ctrl_c_after_a_tag_moved_moves_the_tag_back() -> None:
    p = canary(tag="prod-stable")
    rec = recover(p, 2)  # install, tag, namespace other
    assert rec.steps[0].argv[1:6] == ("tag", "set", "prod-stable", "--revision", "default")
    assert all(b["kind"] == "Deployment" for b in rec.steps[1].apply)  # no relabel with a tag


def test_ctrl_c_in_place_has_one_revision_and_undoes_nothing() -> None:
    p = kube.plan("1.30-dev", "1.31-dev", "in-place", ["sample"], DEPLOYMENTS, istioctl_to="i", when="t")
    rec = recover(p, 1)
    assert rec.steps == () and rec.revision == "default"


def test_the_recovery_steps_run_when_the_cluster_stays(tmp_path: Path) -> None:
    """_interrupted carries the decision out (existing backend: the cluster is the user's)."""
    p = canary()
    ran: list[list[str]] = []

    class Api:
        applied: list[Any] = []

        def list(self, api_version: str, kind: str, namespace: str = "") -> list[Any]:
            return []  # no pod left terminating

        def apply(self, obj: Any, field_manager: str = "meshproof") -> Any:
            self.applied.append(obj)
            return obj

        def get(self, ref: Any) -> Any:
            if ref.kind == "Namespace":
                return {"metadata": {"name": ref.name, "labels": {"istio-injection": "enabled"}}}
            return {"metadata": {"generation": 1}, "spec": {"replicas": 1},
                    "status": {"observedGeneration": 1, "updatedReplicas": 1, "replicas": 1, "availableReplicas": 1}}  # fmt: skip

    class Mesh:
        api = Api()

    said: list[str] = []
    up = kubecheck.KubeUpgrade(
        settings(tmp_path),
        UpgradeConfig("1.30-dev", "1.31-dev", mode="canary"),
        said.append,
        expected_of=lambda label: None,  # type: ignore[arg-type,return-value]
    )
    up._interrupted(
        Mesh(),
        p,
        2,
        "default",
        {"sample": {"istio-injection": "enabled"}, "other": {"istio-injection": "enabled"}},
        DEPLOYMENTS,
        "t1",
        lambda argv, timeout: ran.append(argv),
    )
    assert [a[1:4] for a in ran] == [["uninstall", "--revision", "1-31-dev"]]
    kinds = [(b["kind"], b["metadata"]["name"]) for b in Mesh.api.applied]
    assert kinds == [
        ("Namespace", "other"),
        ("Deployment", "client"),
        ("Namespace", "sample"),
        ("Deployment", "v1"),
        ("Deployment", "v2"),
    ]
    assert said[-1].startswith("interrupted: the cluster is left on revision default (Istio 1.30-dev)")


def test_the_cli_refuses_a_missing_context_in_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import kubernetes.config  # noqa: F401 - imported before KUBECONFIG changes, as in a full test run

    from harness.cli import main

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: kind-a\n"
        "clusters: [{name: a, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: a, user: {}}]\n"
        "contexts: [{name: kind-a, context: {cluster: a, user: a}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    state = tmp_path / "state"
    argv = ["upgrade-check", "--backend", "existing", "--kube-context", "kind-gone", "--state", str(state)]
    assert main([*argv, "--from", "1.30-dev", "--to", "1.31-dev", "--no-suites"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'kind-gone' is not a context" in err and "kind-a" in err and "Traceback" not in err
    assert not state.exists()


def test_the_canarys_control_plane_services_are_reviewed_differences_and_nothing_else() -> None:
    """The differences the first kind canary run (1.30-dev -> 1.31-dev) found, one of each kind,
    are covered; a workload's cluster or a gateway listener's other change is not; in place: none."""
    from harness.upgrade.configdiff import Difference, PathChange, classify

    allow = kubecheck.cluster_allowances("canary")
    assert kubecheck.cluster_allowances("in-place") == ()
    tag = "filter_chains[0].filters[envoy.filters.network.http_connection_manager].typed_config.tracing.custom_tags[4].literal.value"
    host = "virtual_hosts[istiod-1-31-dev.istio-system.svc.cluster.local:15010].domains[0]"
    seen = [
        Difference("p", "cluster/outbound|15012||istiod-1-31-dev.istio-system.svc.cluster.local", "added"),
        Difference("p", "cluster/outbound|443||istiod.istio-system.svc.cluster.local", "removed"),
        Difference("p", "cluster/outbound|15014||istiod-revision-tag-default.istio-system.svc.cluster.local", "removed"),
        Difference("p", "listener/10.96.77.149_15012", "added"),
        Difference("p", "listener/10.96.168.201_443", "removed"),
        Difference("p", "route/15010", "changed", (PathChange(host, None, '"istiod-1-31-dev"'),)),
        Difference("gw", "listener/0.0.0.0_8080", "changed", (PathChange(tag, '"latest"', '"1-31-dev"'),)),
    ]  # fmt: skip
    allowed, unexpected = classify(seen, allow)
    assert unexpected == [] and len(allowed) == len(seen)
    not_the_canarys = [
        Difference("p", "cluster/outbound|3000||microservice-1.sample.svc.cluster.local", "removed"),
        Difference("gw", "listener/10.96.0.20_443", "changed", (PathChange("x", "1", "2"),)),
        Difference("gw", "listener/0.0.0.0_8080", "changed", (PathChange("filter_chains[0].x", "1", "2"),)),
        Difference("p", "route/15010", "changed", (PathChange("virtual_hosts[jaeger:15010].x", "1", "2"),)),
    ]  # fmt: skip
    allowed, unexpected = classify(not_the_canarys, allow)
    assert allowed == [] and len(unexpected) == len(not_the_canarys)


def test_istioctl_says_what_it_said_and_its_failure_names_the_whole_log(tmp_path: Path) -> None:
    from harness.errors import CommandFailed

    said: list[str] = []
    script = tmp_path / "istioctl"
    script.write_text(
        "#!/bin/sh\necho '  /__\\\\'\necho 'There are still 9 proxies pointing to the control plane revision default'\n"
        'if [ "$1" = fail ]; then echo "Error: failed to uninstall" >&2; exit 1; fi\n'
    )
    script.chmod(0o755)
    kubecheck._run_verbatim(said.append, tmp_path, [str(script), "uninstall"], timeout=30)
    assert "  istioctl: There are still 9 proxies pointing to the control plane revision default" in said
    assert not any("/__" in line for line in said)  # the banner
    with pytest.raises(CommandFailed) as e:
        kubecheck._run_verbatim(said.append, tmp_path, [str(script), "fail"], timeout=30)
    assert "Error: failed to uninstall" in str(e.value)
    assert f"istioctl's whole output: {tmp_path / 'istioctl-2.log'}" in e.value.__notes__
    assert "Error: failed to uninstall" in (tmp_path / "istioctl-2.log").read_text()
