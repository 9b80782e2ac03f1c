"""What Istio's Gateway API controller reports on applied Gateways and routes (pure).

After ``apply`` stored a Gateway or a route, Istio's status writers report on it: a Gateway's
``status.conditions`` (Accepted, Programmed), a route's per parent (``status.parents[]``:
Accepted, ResolvedRefs). :func:`judge` reads what the mesh holds (the objects with their status,
:meth:`harness.backends.base.Backend.gateway_api_objects`) for the applied objects and says,
per object, whether Istio has reported on its current generation (``observedGeneration``), and
which of those conditions are not True, verbatim. Nothing here decides acceptance itself: a
condition Istio has not written is waited for, never inferred.

A route's parent that the mesh does not hold (a Gateway that does not exist) gets no report from
any controller; it is noted, not waited for. So is a parent Istio does not report on in time
(the caller's deadline), which the caller names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GROUP = "gateway.networking.k8s.io"
GATEWAY_CONDITIONS = ("Accepted", "Programmed")
ROUTE_CONDITIONS = ("Accepted", "ResolvedRefs")
ROUTE_KINDS = frozenset({"HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute", "UDPRoute"})

#: how to fix a route or Gateway for each reason the Gateway API defines for a False condition
#: (the reasons are the API's, so the fixes are too; any other reason gets the generic fix)
FIXES: Mapping[str, str] = {
    "NoMatchingParent": "name a listener the parent has (parentRefs[].sectionName or port)",
    "NoMatchingListenerHostname": "use hostnames that the parent listener's hostname covers",
    "NotAllowedByListeners": "allow the route's namespace and kind in the listener's allowedRoutes",
    "UnsupportedValue": "use a value the implementation supports (Istio's message names it)",
    "BackendNotFound": "name an existing Service (and port) in backendRefs",
    "RefNotPermitted": "add a ReferenceGrant in the referenced namespace that allows this route",
    "InvalidKind": "refer to a kind Istio supports (a Service)",
    "UnsupportedProtocol": "use a protocol the listener supports",
}


#: what a False condition means for the traffic, per condition type (suites/test_gateway_api.py
#: proves the 500s for an unresolved backend)
EFFECTS: Mapping[str, str] = {
    "Accepted": "Istio does not route by it for that parent",
    "ResolvedRefs": "requests for a backend Istio cannot resolve get a 500 from the gateway",
    "Programmed": "no proxy is programmed with it",
}


@dataclass(frozen=True)
class Refusal:
    """One condition Istio reports not True on an applied object (for a route: for one parent)."""

    kind: str
    namespace: str
    name: str
    path: str  # the field the condition is about, e.g. "spec.parentRefs[0]"
    parent: str  # "" for a Gateway's own condition
    condition: Mapping[str, Any]

    @property
    def text(self) -> str:
        """Istio's condition verbatim: type, status, reason and message."""
        c = self.condition
        return f"{c.get('type')}={c.get('status')}, reason {c.get('reason')}: {c.get('message')}"

    @property
    def fix(self) -> str:
        what = FIXES.get(str(self.condition.get("reason")), "see Istio's message")
        effect = EFFECTS.get(str(self.condition.get("type")), "")
        return (
            f"{what}. The object is stored as it is{f' ({effect})' if effect else ''}: fix the file "
            "and apply it again, or `meshproof delete -f` it"
        )


@dataclass(frozen=True)
class Judgement:
    """What Istio has reported on the applied objects so far."""

    refused: tuple[Refusal, ...] = ()
    #: objects or parents Istio has not reported on for the current generation yet
    pending: tuple[str, ...] = ()
    #: parents nothing will report on (not held by the mesh)
    notes: tuple[str, ...] = ()
    accepted: tuple[str, ...] = field(default=())

    @property
    def done(self) -> bool:
        return not self.pending


def applies_to(body: Mapping[str, Any]) -> bool:
    """A Gateway or route of the Gateway API, which Istio reports on."""
    group = str(body.get("apiVersion", "")).split("/", 1)[0]
    return group == GROUP and (body.get("kind") == "Gateway" or body.get("kind") in ROUTE_KINDS)


def _key(o: Mapping[str, Any], default_ns: str = "default") -> tuple[str, str, str]:
    meta = o.get("metadata") or {}
    return str(o.get("kind")), str(meta.get("namespace") or default_ns), str(meta.get("name"))


def _current(
    conditions: Sequence[Mapping[str, Any]], generation: Any, wanted: Sequence[str]
) -> dict[str, Any]:
    """The ``wanted`` conditions written for ``generation`` (missing ones are absent)."""
    return {
        str(c.get("type")): c
        for c in conditions
        if c.get("type") in wanted and c.get("observedGeneration") == generation
    }


def _same_parent(ref: Mapping[str, Any], reported: Mapping[str, Any], route_ns: str) -> bool:
    """The status entry is the one for this parentRef (kind, namespace, name, section and port;
    the group only tells a Gateway from a Service, which the kind already does)."""

    def norm(r: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            r.get("kind") or "Gateway",
            r.get("namespace") or route_ns,
            r.get("name"),
            r.get("sectionName"),
            r.get("port"),
        )

    return norm(ref) == norm(reported)


def _parent_text(ref: Mapping[str, Any], route_ns: str) -> str:
    kind = ref.get("kind") or "Gateway"
    text = f"{kind} {ref.get('namespace') or route_ns}/{ref.get('name')}"
    extra = [f"section {ref['sectionName']}"] if ref.get("sectionName") else []
    extra += [f"port {ref['port']}"] if ref.get("port") is not None else []
    return text + (f" ({', '.join(extra)})" if extra else "")


def judge(applied: Sequence[Mapping[str, Any]], held: Sequence[Mapping[str, Any]]) -> Judgement:
    """Istio's report on each of ``applied`` (Gateways and routes; others are ignored) in ``held``."""
    index = {_key(o): o for o in held}
    refused: list[Refusal] = []
    pending: list[str] = []
    notes: list[str] = []
    accepted: list[str] = []
    for body in applied:
        if not applies_to(body):
            continue
        kind, ns, name = _key(body)
        ref = f"{kind} {ns}/{name}"
        stored = index.get((kind, ns, name))
        if stored is None:
            pending.append(f"{ref}: not held by the mesh yet")
            continue
        generation = (stored.get("metadata") or {}).get("generation")
        status = stored.get("status") or {}
        if kind == "Gateway":
            seen = _current(status.get("conditions") or [], generation, GATEWAY_CONDITIONS)
            if len(seen) < len(GATEWAY_CONDITIONS):
                pending.append(f"{ref}: {', '.join(sorted(set(GATEWAY_CONDITIONS) - set(seen)))}")
                continue
            bad = [c for c in seen.values() if c.get("status") != "True"]
            refused += [Refusal(kind, ns, name, "spec", "", c) for c in bad]
            if not bad:
                accepted.append(ref)
            continue
        all_good = True
        for i, parent in enumerate((stored.get("spec") or {}).get("parentRefs") or []):
            where = _parent_text(parent, ns)
            if (parent.get("kind") or "Gateway") == "Gateway" and (
                "Gateway",
                parent.get("namespace") or ns,
                parent.get("name"),
            ) not in index:
                notes.append(f"{ref}: no {where} in the mesh, so nothing reports on the route for it")
                all_good = False
                continue
            report = next(
                (
                    p
                    for p in status.get("parents") or []
                    if _same_parent(parent, p.get("parentRef") or {}, ns)
                ),
                None,
            )
            seen = _current((report or {}).get("conditions") or [], generation, ROUTE_CONDITIONS)
            if len(seen) < len(ROUTE_CONDITIONS):
                pending.append(f"{ref} for {where}: {', '.join(sorted(set(ROUTE_CONDITIONS) - set(seen)))}")
                all_good = False
                continue
            for c in seen.values():
                if c.get("status") != "True":
                    path = (
                        f"spec.parentRefs[{i}]" if c.get("type") == "Accepted" else "spec.rules[].backendRefs"
                    )
                    refused.append(Refusal(kind, ns, name, path, where, c))
                    all_good = False
        if all_good:
            accepted.append(ref)
    return Judgement(tuple(refused), tuple(pending), tuple(notes), tuple(accepted))
