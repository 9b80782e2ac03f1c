"""A replica's network drops packets: iptables rules, and why there is no network delay here.

Loss: one rule per replica, ``-m statistic --mode random --probability P -j DROP``, matching TCP
packets to exactly the replica's inbound address, in a chain of its own that ``INPUT`` jumps to:

- local: in the host's network namespace, chain ``MESHPROOF-LOSS-<B>`` for the mesh on
  ``127.B.0.0/16`` (its block is claimed machine-wide, so no other mesh on the machine shares the
  chain or an address), ``INPUT`` jumping to it for ``127.B.0.0/16`` only. The rule matches packets
  to ``127.B.1.k`` except those from ``127.0.0.6``: Envoy's inbound passthrough address, the source
  of the sidecar's own hop to its app (seen with ``ss -tn`` on a local mesh), which in a real pod
  stays on the pod's loopback and never crosses its network.
- kind: inside the pod's network namespace (entered with ``nsenter`` in the kind node container),
  chain ``MESHPROOF-LOSS``, packets arriving on ``eth0`` for the pod's IP.

The rule's own packet counter is the proof that the loss took effect (:func:`dropped`).

Delay: an Envoy-independent network delay needs the ``netem`` qdisc. :func:`netem_missing` tries it
in a throwaway network namespace (never on the host's loopback, which every mesh shares) and
returns the kernel's refusal; this machine's kernel (6.18, no modules) answers
``Error: Specified qdisc kind is unknown.``: delay a replica with its sidecar instead
(``meshproof fault POD --delay-ms``, ``fail_replicas(delay_ms=...)``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness import proc
from harness.errors import BackendError, UserError

__all__ = [
    "LossRule",
    "Runner",
    "dropped",
    "install",
    "local_chain",
    "netem_missing",
    "remove",
    "remove_chain",
]

#: runs an argv (a prefix such as ``docker exec NODE nsenter --net=...`` already applied), unchecked
Runner = Callable[[Sequence[str]], proc.Completed]

KUBE_CHAIN = "MESHPROOF-LOSS"
#: the source address of an inbound sidecar's connections to its app (Istio's inbound passthrough bind)
SIDECAR_TO_APP_SOURCE = "127.0.0.6"


def local_chain(block: int) -> str:
    """The local mesh's chain on ``127.<block>.0.0/16`` (at most 28 characters, iptables' limit)."""
    return f"{KUBE_CHAIN}-{int(block)}"


def host_runner(prefix: Sequence[str] = (), run: proc.Runner = proc.run) -> Runner:
    """Run argvs after ``prefix``, unchecked (the callers read the exit code and stderr)."""

    def go(argv: Sequence[str]) -> proc.Completed:
        return run([*prefix, *argv], timeout=30, check=False)

    return go


def iptables() -> str:
    found = shutil.which("iptables")
    if not found:
        raise UserError(
            "network loss needs iptables on this machine, and it is not on PATH. Fix: install iptables"
        )
    return found


@dataclass(frozen=True)
class LossRule:
    """Drop ``probability`` of the TCP packets to ``address`` (see the module docstring)."""

    chain: str
    address: str
    probability: float
    comment: str  # "meshproof loss ns/pod": names the rule in its chain
    not_source: str = ""  # local: SIDECAR_TO_APP_SOURCE
    in_interface: str = ""  # kind: eth0

    def spec(self) -> list[str]:
        out = ["-d", f"{self.address}/32"]
        if self.not_source:
            out += ["!", "-s", f"{self.not_source}/32"]
        if self.in_interface:
            out += ["-i", self.in_interface]
        out += [
            "-p",
            "tcp",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            f"{self.probability:.6f}",
        ]
        return [*out, "-m", "comment", "--comment", self.comment, "-j", "DROP"]


def _ok(run: Runner, ipt: str, argv: Sequence[str], what: str) -> None:
    r = run([ipt, "-w", *argv])
    if r.returncode != 0:
        raise BackendError(f"{what} failed ({ipt} {' '.join(argv)}): {(r.stderr or r.stdout).strip()}")


def install(run: Runner, ipt: str, rule: LossRule, jump: Sequence[str]) -> None:
    """Create the chain (if missing), make ``INPUT`` jump to it for ``jump`` (once), and make the
    rule named ``rule.comment`` the one given (an earlier one of that name is replaced)."""
    if run([ipt, "-w", "-S", rule.chain]).returncode != 0:
        _ok(run, ipt, ["-N", rule.chain], f"creating chain {rule.chain}")
    if run([ipt, "-w", "-C", "INPUT", *jump, "-j", rule.chain]).returncode != 0:
        _ok(run, ipt, ["-I", "INPUT", "1", *jump, "-j", rule.chain], f"jumping to {rule.chain}")
    _delete_named(run, ipt, rule.chain, rule.comment)
    _ok(run, ipt, ["-A", rule.chain, *rule.spec()], f"adding the loss rule for {rule.address}")


def _delete_named(run: Runner, ipt: str, chain: str, comment: str) -> tuple[int, int]:
    """Delete the rules named ``comment``; returns (deleted, rules left in the chain), (0, 0) if no chain."""
    r = run([ipt, "-w", "-S", chain])
    if r.returncode != 0:
        return 0, 0
    rules = [line for line in r.stdout.splitlines() if line.startswith("-A ")]
    mine = [n for n, line in enumerate(rules, start=1) if f'--comment "{comment}"' in line]
    for n in reversed(mine):  # from the last, so the earlier numbers stay valid
        _ok(run, ipt, ["-D", chain, str(n)], f"deleting the loss rule {comment!r}")
    return len(mine), len(rules) - len(mine)


_COUNTED = re.compile(r'--comment "?(?P<comment>[^"]+?)"? -c (?P<pkts>\d+) \d+')


def dropped(run: Runner, ipt: str, chain: str, comment: str) -> int | None:
    """Packets the rule named ``comment`` has dropped so far; None when it is not installed."""
    r = run([ipt, "-w", "-v", "-S", chain])
    if r.returncode != 0:
        return None
    for line in r.stdout.splitlines():
        m = _COUNTED.search(line)
        if m and m["comment"] == comment:
            return int(m["pkts"])
    return None


def remove(run: Runner, ipt: str, chain: str, comment: str, jump: Sequence[str]) -> int:
    """Delete the rules named ``comment`` from ``chain`` (whatever their probability; none: a no-op);
    with the chain then empty, the chain and ``INPUT``'s jump to it. Returns the rules deleted."""
    deleted, left = _delete_named(run, ipt, chain, comment)
    if not left:
        remove_chain(run, ipt, chain, jump)
    return deleted


def remove_chain(run: Runner, ipt: str, chain: str, jump: Sequence[str]) -> bool:
    """Remove ``chain`` and ``INPUT``'s jump to it, whatever it holds (idempotent); True if it existed."""
    while run([ipt, "-w", "-C", "INPUT", *jump, "-j", chain]).returncode == 0:
        _ok(run, ipt, ["-D", "INPUT", *jump, "-j", chain], f"removing the jump to {chain}")
    if run([ipt, "-w", "-S", chain]).returncode != 0:
        return False
    _ok(run, ipt, ["-F", chain], f"flushing {chain}")
    _ok(run, ipt, ["-X", chain], f"deleting {chain}")
    return True


def netem_missing(run: Runner | None = None) -> str | None:
    """The kernel's answer when the ``netem`` qdisc is unavailable (None when it works), tried on
    the loopback of a throwaway network namespace (``unshare --net``), so no traffic is touched."""
    run = run or host_runner()
    r = run(["unshare", "--net", "sh", "-c", "ip link set lo up && tc qdisc add dev lo root netem delay 1ms"])
    if r.returncode == 0:
        return None
    return (r.stderr or r.stdout).strip() or f"exit {r.returncode}"
