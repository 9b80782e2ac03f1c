"""A replica's network: drop a share of the packets arriving for it, prove it, and take it back.

``drop_packets`` (undo ``restore_network``) installs an iptables rule for exactly the replica's
address (:mod:`harness.netfault`; local: in the host's namespace, in the mesh's own chain; kind: in
the pod's network namespace; existing clusters: refused). ``delay_network`` is the latency half of
the same game day: it needs the kernel's ``netem`` qdisc, and refuses with the kernel's own answer
where there is none (this machine), naming the alternative, the replica's sidecar delay.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from harness.chaos.actions.common import NotYet, pods_of, prove, restore_each
from harness.chaos.context import Configuration, mesh
from harness.chaos.ledger import Entry, Ledger, Undo
from harness.errors import UnsupportedFeature, UserError

__all__ = [
    "delay_network",
    "drop_packets",
    "restore_network",
]


def drop_packets(
    pods: str | Sequence[str],
    probability: float = 0.3,
    proof_from: str = "ingress",
    proof_path: str = "/api/greet",
    proof_timeout_s: float = 30.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Make each replica's network drop ``probability`` of the TCP packets arriving for it, and prove
    it before the method goes on: the rule's own packet counter must move within ``proof_timeout_s``
    while requests go from ``proof_from`` to ``proof_path`` (batches of 10; ``proof_from`` "": the
    traffic already flowing), or the action fails with the count seen."""
    probability = float(probability)
    if not 0.0 < probability <= 1.0:
        raise UserError(f"drop_packets: probability {probability:g} must be in (0, 1]")
    backend = mesh(configuration)
    workloads = [backend.workload(p) for p in pods_of(pods)]  # unknown pods fail before anything changes
    # the gateway, no iptables, a backend that cannot reach the pod's network: refused before any change
    before = {w.ref: backend.network_dropped(w.ref) or 0 for w in workloads}
    ledger = Ledger.of(configuration)
    evidence = []
    for w in workloads:
        ledger.record(f"network-loss:{w.ref}", "network-loss", {"pod": w.ref, "probability": probability})
        rule = backend.set_network_loss(w.ref, probability)
        evidence.append(
            {
                **rule,
                "proof": _proven(
                    backend, w.ref, before[w.ref], proof_from, proof_path, float(proof_timeout_s)
                ),
            }
        )
    return {"pods": [w.ref for w in workloads], "probability": probability, "evidence": evidence}


def _proven(backend: Any, ref: str, before: int, source: str, path: str, timeout_s: float) -> dict[str, Any]:
    from harness.traffic.client import Sampler

    seen: dict[str, Any] = {"dropped": 0}
    t0 = time.monotonic()
    with Sampler(timeout=30.0) if source else nullcontext() as sampler:

        def moved() -> bool:
            now = backend.network_dropped(ref)
            seen["dropped"] = (now or 0) - before
            if now is not None and seen["dropped"] > 0:
                return True
            if sampler is not None:
                sampler.sample(backend, source=source, path=path, n=10, concurrency=2)
            raise NotYet(
                f"{ref}'s loss rule dropped {seen['dropped']} packets"
                if now is not None
                else f"{ref} has no loss rule"
            )

        prove(
            moved,
            what=f"the packet loss to take effect on {ref}'s network (its rule's packet counter moving)",
            timeout_s=timeout_s,
            failure=lambda: (
                f"drop_packets: the loss on {ref}'s network did not take effect within {timeout_s:g} s: its rule "
                f"dropped {seen['dropped']} packets ({f'traffic from {source} to {path}' if source else 'the traffic already flowing'})"
            ),
        )
    return {**seen, "proven_s": round(time.monotonic() - t0, 3)}


def restore_network(pods: str | Sequence[str], configuration: Configuration = None) -> dict[str, Any]:
    """Remove each replica's packet loss (no-op when there is none); says how many packets it dropped."""

    def undo(backend: Any, ref: str) -> dict[str, Any]:
        dropped = backend.network_dropped(ref)
        backend.set_network_loss(ref, 0.0)
        return {"pod": ref, "dropped": dropped}

    return {"restored": restore_each(pods, configuration, "network-loss", undo)}


def delay_network(
    pods: str | Sequence[str], delay_ms: int = 100, configuration: Configuration = None
) -> dict[str, Any]:
    """Delay the packets of a replica's network by ``delay_ms``: needs the kernel's ``netem`` qdisc.
    Tried first (in a throwaway network namespace); without it the action fails before any change
    with the kernel's answer and the alternative (the replica's sidecar delay). With netem it still
    refuses: a network delay is not implemented, as no machine meshproof is tested on has netem."""
    from harness import netfault

    workloads = [mesh(configuration).workload(p) for p in pods_of(pods)]
    missing = netfault.netem_missing()
    why = f"the kernel has no netem qdisc ({missing})" if missing else "network delay is not implemented"
    raise UnsupportedFeature(
        f"delay_network: cannot delay {', '.join(w.ref for w in workloads)} by {int(delay_ms)} ms on the network: "
        f"{why}. Fix: delay the replica through its sidecar (fail_replicas with delay_ms, or "
        f"meshproof fault POD --delay-ms {int(delay_ms)})"
    )


def _undo_loss(entry: Entry, configuration: Configuration) -> str:
    restore_network(str(entry.data["pod"]), configuration)
    return f"packet loss on {entry.data['pod']}'s network removed"


#: the rollback's undo of each ledger kind this family writes (see :func:`harness.chaos.ledger.undo_all`)
UNDO: Mapping[str, Undo] = {"network-loss": Undo(_undo_loss)}
