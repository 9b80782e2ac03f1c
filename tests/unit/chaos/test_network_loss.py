"""A replica's network drops packets (issue #25): the iptables rules of :mod:`harness.netfault` against
a fake iptables that keeps chains and counters, the drop_packets/restore_network actions and the
packet_loss_hidden probe against a fake mesh, the netem refusal of delay_network, and the kube
backend's refusal on an existing cluster and its nsenter into the pod's network namespace on kind."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness import netfault, proc
from harness.chaos import actions, context, control, probes
from harness.chaos.actions import network
from harness.chaos.context import STATE_KEY
from harness.chaos.ledger import Ledger
from harness.chaos.load_window import Window
from harness.errors import BackendError, UnsupportedFeature, UserError

from .test_replica_fault import FakeMesh


class FakeIptables:
    """Chains of rules with packet counters, answering the subset of iptables netfault uses."""

    def __init__(self) -> None:
        self.chains: dict[str, list[list[str]]] = {"INPUT": []}
        self.counts: dict[str, int] = {}  # rule comment -> packets
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> proc.Completed:
        argv = list(argv)
        self.calls.append(argv)
        assert argv[:2] == ["iptables", "-w"], argv
        args = argv[2:]
        verbose = args[0] == "-v"
        if verbose:
            args = args[1:]
        op, chain, rest = args[0], args[1], args[2:]

        def done(rc: int = 0, out: str = "", err: str = "") -> proc.Completed:
            return proc.Completed(tuple(argv), rc, out, err)

        if op != "-N" and chain not in self.chains:
            return done(1, err="iptables: No chain/target/match by that name.")
        rules = self.chains.get(chain, [])
        if op == "-N":
            if chain in self.chains:
                return done(1, err="iptables: Chain already exists.")
            self.chains[chain] = []
        elif op == "-S":
            lines = [f"-N {chain}"]
            for r in rules:
                text = " ".join(shlex.quote(a) if " " in a else a for a in r).replace("'", '"')
                counted = f" -c {self.counts.get(self._comment(r), 0)} 0" if verbose else ""
                lines.append(f"-A {chain} {text.replace(' -j ', counted + ' -j ')}")
            return done(out="\n".join(lines) + "\n")
        elif op == "-C":
            return done(0 if rest in rules else 1)
        elif op in ("-A", "-I"):
            rule = rest[1:] if op == "-I" else rest
            rules.insert(0, rule) if op == "-I" else rules.append(rule)
        elif op == "-D":
            if len(rest) == 1 and rest[0].isdigit():
                rules.pop(int(rest[0]) - 1)
            elif rest in rules:
                rules.remove(rest)
            else:
                return done(1, err="iptables: Bad rule")
        elif op == "-F":
            rules.clear()
        elif op == "-X":
            if any(chain in r for c in self.chains.values() for r in c):
                return done(1, err="iptables: Too many links.")
            del self.chains[chain]
        return done()

    @staticmethod
    def _comment(rule: list[str]) -> str:
        return rule[rule.index("--comment") + 1] if "--comment" in rule else ""


RULE = netfault.LossRule(
    chain="MESHPROOF-LOSS-9",
    address="127.9.1.1",
    probability=0.3,
    comment="meshproof loss sample/web-v1-0",
    not_source="127.0.0.6",
)
JUMP = ["-d", "127.9.0.0/16"]


def test_the_rule_matches_exactly_the_replicas_address_and_not_its_sidecars_hop_to_its_app() -> None:
    spec = RULE.spec()
    assert spec[:5] == ["-d", "127.9.1.1/32", "!", "-s", "127.0.0.6/32"]
    assert spec[spec.index("--probability") + 1] == "0.300000"
    assert spec[-2:] == ["-j", "DROP"]
    assert netfault.local_chain(255) == "MESHPROOF-LOSS-255" and len(netfault.local_chain(255)) <= 28


def test_install_count_and_remove_leave_nothing_behind() -> None:
    ipt = FakeIptables()
    netfault.install(ipt, "iptables", RULE, JUMP)
    netfault.install(ipt, "iptables", RULE, JUMP)  # idempotent: one jump, one rule
    assert ipt.chains["INPUT"] == [[*JUMP, "-j", RULE.chain]]
    assert ipt.chains[RULE.chain] == [RULE.spec()]
    assert netfault.dropped(ipt, "iptables", RULE.chain, RULE.comment) == 0
    ipt.counts[RULE.comment] = 42
    assert netfault.dropped(ipt, "iptables", RULE.chain, RULE.comment) == 42
    assert netfault.dropped(ipt, "iptables", RULE.chain, "meshproof loss sample/other") is None
    other = netfault.LossRule(RULE.chain, "127.9.1.2", 0.5, "meshproof loss sample/web-v1-1", "127.0.0.6")
    netfault.install(ipt, "iptables", other, JUMP)
    assert netfault.remove(ipt, "iptables", RULE.chain, RULE.comment, JUMP) == 1
    assert ipt.chains[RULE.chain] == [other.spec()]  # the other replica's loss stays
    assert netfault.remove(ipt, "iptables", RULE.chain, other.comment, JUMP) == 1
    assert set(ipt.chains) == {"INPUT"} and ipt.chains["INPUT"] == []  # last rule: chain and jump gone
    assert netfault.remove(ipt, "iptables", RULE.chain, RULE.comment, JUMP) == 0  # a no-op now


def test_a_new_probability_replaces_the_rule_and_down_removes_the_whole_chain() -> None:
    ipt = FakeIptables()
    netfault.install(ipt, "iptables", RULE, JUMP)
    higher = netfault.LossRule(RULE.chain, RULE.address, 1.0, RULE.comment, RULE.not_source)
    netfault.install(ipt, "iptables", higher, JUMP)
    assert ipt.chains[RULE.chain] == [higher.spec()]
    assert netfault.remove_chain(ipt, "iptables", RULE.chain, JUMP) is True
    assert set(ipt.chains) == {"INPUT"} and ipt.chains["INPUT"] == []
    assert netfault.remove_chain(ipt, "iptables", RULE.chain, JUMP) is False


def test_netem_missing_returns_the_kernels_answer() -> None:
    seen: list[Sequence[str]] = []

    def no_netem(argv: Sequence[str]) -> proc.Completed:
        seen.append(argv)
        return proc.Completed(tuple(argv), 2, "", "Error: Specified qdisc kind is unknown.\n")

    assert netfault.netem_missing(no_netem) == "Error: Specified qdisc kind is unknown."
    assert seen[0][:2] == ["unshare", "--net"]  # never on the host's own loopback
    assert netfault.netem_missing(lambda a: proc.Completed(tuple(a), 0, "", "")) is None


# --------------------------------------------------------------------------- the actions


class LossMesh(FakeMesh):
    """FakeMesh whose replicas' networks take a loss rule; every counter read finds ``per_read``
    more packets dropped while a rule is in place."""

    def __init__(self, per_read: int = 7) -> None:
        super().__init__()
        self.loss: dict[str, float] = {}
        self.packets: dict[str, int] = {}
        self.per_read = per_read

    def set_network_loss(self, pod: str, probability: float) -> dict[str, Any]:
        w = self.workload(pod)
        if probability <= 0:
            self.loss.pop(w.ref, None)
            return {"pod": w.ref, "removed": 1}
        self.loss[w.ref] = probability
        return {"pod": w.ref, "chain": "MESHPROOF-LOSS-9", "rule": f"-d {w.address}/32 ..."}

    def network_dropped(self, pod: str) -> int | None:
        w = self.workload(pod)
        if w.role == "gateway":  # as the backends refuse it
            raise UserError(f"network loss: {w.ref} is the ingress gateway. Fix: name an app replica")
        ref = w.ref
        if ref not in self.loss:
            return None
        self.packets[ref] = self.packets.get(ref, 0) + self.per_read
        return self.packets[ref]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[LossMesh, dict[str, str]]]:
    mesh = LossMesh()
    context.use(tmp_path, mesh, admin_transport=mesh.transport())  # type: ignore[arg-type]
    yield mesh, {STATE_KEY: str(tmp_path)}
    context.forget(tmp_path)


def test_drop_packets_proves_the_rules_counter_moved_and_the_rollback_removes_it(
    fake: tuple[LossMesh, dict[str, str]],
) -> None:
    mesh, conf = fake
    out = actions.drop_packets(["sample/web-v1-0"], probability=0.3, proof_from="", configuration=conf)
    assert mesh.loss == {"sample/web-v1-0": 0.3}
    assert out["evidence"][0]["proof"]["dropped"] > 0
    assert [e.kind for e in Ledger.of(conf).entries()] == ["network-loss"]
    undone, failed = actions.undo_all(conf)
    assert failed == [] and undone == ["packet loss on sample/web-v1-0's network removed"]
    assert mesh.loss == {} and Ledger.of(conf).entries() == []
    assert actions.restore_network("sample/web-v1-0", configuration=conf) == {"restored": []}  # a no-op


def test_a_loss_that_drops_nothing_fails_with_the_count_seen(fake: tuple[LossMesh, dict[str, str]]) -> None:
    mesh, conf = fake
    mesh.per_read = 0
    with pytest.raises(BackendError, match=r"did not take effect within 0.3 s: its rule dropped 0 packets"):
        actions.drop_packets("sample/web-v1-0", proof_from="", proof_timeout_s=0.3, configuration=conf)
    assert [e.kind for e in Ledger.of(conf).entries()] == ["network-loss"]  # the rollback still removes it
    actions.rollback_all(conf)
    assert mesh.loss == {}


@pytest.mark.parametrize("p", [0, -0.1, 1.5])
def test_a_probability_outside_0_1_fails_before_any_change(
    fake: tuple[LossMesh, dict[str, str]], p: float
) -> None:
    mesh, conf = fake
    with pytest.raises(UserError, match="probability"):
        actions.drop_packets("sample/web-v1-0", probability=p, configuration=conf)
    assert mesh.loss == {} and Ledger.of(conf).entries() == []


def test_a_victim_the_backend_refuses_leaves_nothing_in_the_ledger(
    fake: tuple[LossMesh, dict[str, str]],
) -> None:
    mesh, conf = fake
    with pytest.raises(UserError, match="is the ingress gateway"):
        actions.drop_packets(["sample/web-v1-0", "sample/ingress-0"], configuration=conf)
    assert mesh.loss == {} and Ledger.of(conf).entries() == []


def test_preflight_refuses_bad_loss_victims_probabilities_and_a_network_delay_before_the_method(
    fake: tuple[LossMesh, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _mesh, conf = fake
    monkeypatch.setattr(netfault, "netem_missing", lambda run=None: "Error: Specified qdisc kind is unknown.")

    def act(func: str, **arguments: Any) -> dict[str, Any]:
        provider = {"type": "python", "module": "harness.chaos.actions", "func": func, "arguments": arguments}
        return {"type": "action", "name": func, "provider": provider}

    experiment = {
        "method": [
            act("drop_packets", pods=["sample/web-v1-0"], probability=0.3),
            act("drop_packets", pods=["sample/ingress-0"]),
            act("drop_packets", pods=["sample/web-v1-1"], probability=1.5),
            act("delay_network", pods=["sample/web-v1-1"], delay_ms=50),
        ]
    }
    problems = control.preflight(experiment, conf)
    assert [p.split(":")[0] for p in problems] == [
        "method[1] (drop_packets)",
        "method[2] (drop_packets)",
        "method[3] (delay_network)",
    ], problems
    assert "no netem qdisc" in problems[2]


def test_delay_network_refuses_with_the_kernels_answer_and_the_alternative(
    fake: tuple[LossMesh, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _mesh, conf = fake
    monkeypatch.setattr(netfault, "netem_missing", lambda run=None: "Error: Specified qdisc kind is unknown.")
    with pytest.raises(UnsupportedFeature) as e:
        network.delay_network("sample/web-v1-0", delay_ms=50, configuration=conf)
    assert "no netem qdisc (Error: Specified qdisc kind is unknown.)" in str(e.value)
    assert "meshproof fault POD --delay-ms 50" in str(e.value) and "\n" not in str(e.value)
    assert Ledger.of(conf).entries() == []


def test_packet_loss_hidden_judges_the_counts_since_the_mark(
    fake: tuple[LossMesh, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh, conf = fake
    seen = {"total": 400, "errors": 0}
    monkeypatch.setattr(probes, "_load", lambda name, c: {"engine": "fake"})

    def window_of(_load: Any, start: float, end: float) -> Window:
        status = {"200": seen["total"] - seen["errors"], "503": seen["errors"]}
        return Window(
            start,
            end,
            total=seen["total"],
            status={k: v for k, v in status.items() if v},
            latencies_ms=(5.0, 6.0, 210.0),
        )

    monkeypatch.setattr("harness.chaos.load_window.window_of", window_of)
    probes.mark_network_loss("sample/web-v1-0", configuration=conf)
    mesh.loss["sample/web-v1-0"] = 0.3
    out = probes.packet_loss_hidden("sample/web-v1-0", min_dropped=20, within_s=5, configuration=conf)
    assert out["holds"] and out["dropped"] >= 20 and out["load"]["max_ms"] == 210.0
    seen["errors"] = 5  # 5 of 400 = 1.25% > 1%
    out = probes.packet_loss_hidden("sample/web-v1-0", min_dropped=20, within_s=5, configuration=conf)
    assert not out["holds"] and out["why_not"] == ["the load saw 5 errors of 400 (ratio 0.0125 > 0.01)"]
    mesh.per_read = 0  # a rule that stopped dropping: no evidence the loss lasted
    seen["errors"] = 0
    probes.mark_network_loss("sample/web-v1-0", configuration=conf)
    out = probes.packet_loss_hidden("sample/web-v1-0", min_dropped=20, within_s=0.5, configuration=conf)
    assert not out["holds"] and "dropped 0 packets (at least 20)" in out["why_not"][0]


# --------------------------------------------------------------------------- kube


def _kube(cls: Any, run: Any = None) -> Any:
    from harness.backends.kube.backend import KubeBackend
    from harness.backends.kube.cluster import MeshRecord
    from harness.mesh import Workload
    from harness.settings import Settings

    cluster = cls(
        Settings(backend=cls.name),
        MeshRecord(Path("backend.json")),  # never written here
        say=lambda _m: None,
        which=lambda tool: f"/usr/bin/{tool}",
        run=run,
        sample_dir=Path("sample-service"),
    )

    class One(KubeBackend):
        def __init__(self) -> None:
            self.name = cls.name
            self.cluster = cluster

        def workload(self, ref: str) -> Any:
            return Workload("web-v1-abc", "sample", "web-v1", {}, "10.244.0.7", "", "", "", "http://envoy")

        @property
        def api(self) -> Any:
            return type("Api", (), {"get": lambda self, ref: {"spec": {"nodeName": "mp-control-plane"}}})()

    return One()


def test_an_existing_cluster_refuses_before_any_change() -> None:
    from harness.backends.kube.cluster import ExistingCluster

    with pytest.raises(UserError, match=r"needs a shell on its node .* existing backend does not have"):
        _kube(ExistingCluster).set_network_loss("sample/web-v1-abc", 0.3)


def test_on_kind_the_rule_goes_into_the_pods_network_namespace() -> None:
    from harness.backends.kube.kindcluster import KindCluster

    ipt = FakeIptables()
    calls: list[list[str]] = []

    def run(argv: Sequence[str], *, timeout: float = 0, check: bool = True) -> proc.Completed:
        argv = list(argv)
        calls.append(argv)
        assert argv[:3] == ["/usr/bin/docker", "exec", "mp-control-plane"]
        rest = argv[3:]
        if rest[:2] == ["crictl", "pods"]:
            return proc.Completed(tuple(argv), 0, "sandbox1\n", "")
        if rest[:2] == ["crictl", "inspectp"]:
            spec = {
                "linux": {
                    "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]
                }
            }
            return proc.Completed(tuple(argv), 0, json.dumps({"info": {"runtimeSpec": spec}}), "")
        assert rest[:2] == ["nsenter", "--net=/var/run/netns/cni-1"], rest
        return ipt(rest[2:])

    kube = _kube(KindCluster, run)
    kube.set_network_loss("sample/web-v1-abc", 0.3)
    assert ipt.chains["INPUT"] == [["-i", "eth0", "-j", "MESHPROOF-LOSS"]]
    (rule,) = ipt.chains["MESHPROOF-LOSS"]
    assert rule[:4] == ["-d", "10.244.0.7/32", "-i", "eth0"]
    assert kube.network_dropped("sample/web-v1-abc") == 0
    kube.set_network_loss("sample/web-v1-abc", 0)
    assert set(ipt.chains) == {"INPUT"} and ipt.chains["INPUT"] == []


def test_local_down_removes_the_meshs_chain_whatever_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meshproof down` (and the mesh fixture's teardown) removes the chain of the mesh's block, so an
    interrupted run whose rollback never ran leaves no rule; another mesh's chain stays."""
    from harness.backends.local.backend import LocalBackend
    from harness.settings import Settings

    ipt = FakeIptables()
    netfault.install(ipt, "iptables", RULE, JUMP)  # block 9: this mesh
    other = netfault.LossRule("MESHPROOF-LOSS-12", "127.12.1.1", 0.3, "meshproof loss sample/x", "127.0.0.6")
    netfault.install(ipt, "iptables", other, ["-d", "127.12.0.0/16"])
    monkeypatch.setattr(netfault, "host_runner", lambda prefix=(), run=None: ipt)
    monkeypatch.setattr("shutil.which", lambda tool: "iptables")
    backend = LocalBackend(Settings(state_dir=tmp_path))
    backend.layout.plan.parent.mkdir(parents=True, exist_ok=True)
    backend.layout.plan.write_text(json.dumps({"block": 9}))
    backend.down()
    assert "MESHPROOF-LOSS-9" not in ipt.chains
    assert ipt.chains["INPUT"] == [["-d", "127.12.0.0/16", "-j", "MESHPROOF-LOSS-12"]]
    assert ipt.chains["MESHPROOF-LOSS-12"] == [other.spec()]
