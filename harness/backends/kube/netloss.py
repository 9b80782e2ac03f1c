"""A replica's network drops packets on Kubernetes: the loss rule of :mod:`harness.netfault` inside the
pod's own network namespace, entered from the kind node container that runs it.

``docker exec NODE crictl pods`` finds the pod's sandbox, ``crictl inspectp`` names its network
namespace, and ``docker exec NODE nsenter --net=<path> iptables ...`` runs the rule there, for packets
arriving on ``eth0`` for the pod's IP (chain ``MESHPROOF-LOSS``). An existing cluster gives meshproof
no shell on its nodes: refused, with one line, before anything changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from harness import netfault, proc
from harness.errors import BackendError, UserError
from harness.mesh import Workload

__all__ = ["Runner", "dropped", "pod_network", "set_loss"]

Runner = netfault.Runner
#: INPUT jumps to the chain for packets arriving on the pod's network interface
JUMP = ["-i", "eth0"]


def pod_network(
    w: Workload,
    pod: Callable[[], Mapping[str, Any] | None],
    *,
    kind: bool,
    backend: str,
    docker: str,
    run: proc.Runner,
) -> Runner:
    """A runner inside the network namespace of replica ``w`` (``pod`` reads its Pod object)."""
    if w.role == "gateway":
        raise UserError(f"network loss: {w.ref} is the ingress gateway. Fix: name an app replica")
    if not kind:
        raise UserError(
            f"network loss on {w.ref} needs a shell on its node to enter the pod's network namespace, "
            f"which the {backend} backend does not have. Fix: run it on kind or local, or fail the "
            "replica through its sidecar (meshproof fault POD --status/--delay-ms)"
        )
    node = str(((pod() or {}).get("spec") or {}).get("nodeName") or "")
    if not node or not docker:
        raise BackendError(
            f"network loss: cannot reach {w.ref}'s node ({node or 'not scheduled'}, docker {docker or 'missing'})"
        )
    on_node = netfault.host_runner([docker, "exec", node], run)
    sandboxes = on_node(
        ["crictl", "pods", "--namespace", w.namespace, "--name", f"^{w.name}$", "--state", "ready", "-q"]
    )
    ids = sandboxes.stdout.split()
    if sandboxes.returncode != 0 or len(ids) != 1:
        raise BackendError(
            f"network loss: crictl on node {node} finds {ids or sandboxes.stderr.strip()!r} for {w.ref}"
        )
    inspect = on_node(["crictl", "inspectp", ids[0]])
    try:
        spaces = json.loads(inspect.stdout)["info"]["runtimeSpec"]["linux"]["namespaces"]
        netns = next(str(n["path"]) for n in spaces if n.get("type") == "network" and n.get("path"))
    except (ValueError, KeyError, TypeError, StopIteration) as e:
        raise BackendError(
            f"network loss: no network namespace for {w.ref} in crictl inspectp on {node}"
        ) from e
    return netfault.host_runner([docker, "exec", node, "nsenter", f"--net={netns}"], run)


def _rule(w: Workload, probability: float = 0.0) -> netfault.LossRule:
    return netfault.LossRule(
        chain=netfault.KUBE_CHAIN,
        address=w.address,
        probability=probability,
        comment=f"meshproof loss {w.ref}",
        in_interface="eth0",
    )


def set_loss(run: Runner, w: Workload, probability: float) -> dict[str, Any]:
    """Install the loss rule (``probability`` 0: remove it, and the chain with the last rule)."""
    rule = _rule(w, probability)
    if probability <= 0:
        return {"pod": w.ref, "removed": netfault.remove(run, "iptables", rule.chain, rule.comment, JUMP)}
    netfault.install(run, "iptables", rule, JUMP)
    return {"pod": w.ref, "chain": rule.chain, "rule": " ".join(rule.spec()), "netns": "the pod's"}


def dropped(run: Runner, w: Workload) -> int | None:
    rule = _rule(w)
    return netfault.dropped(run, "iptables", rule.chain, rule.comment)
