"""Route faults and route policies: change one named http route of a VirtualService, and put it back.

``inject_route_fault`` (undo ``remove_route_fault``) sets a route fault: the VirtualService's own
fault injection (``HTTPFaultInjection``: abort and/or delay) on that route. ``set_route_policy``
(undo ``restore_route_policy``) sets its retries and/or timeout. Both change that one route and
nothing else of the object, remember the route as it was in the ledger, and put it back through the
same pair of helpers (:func:`_change_route`, :func:`_put_route_back`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from harness.chaos import objects
from harness.chaos.context import Configuration
from harness.chaos.ledger import Entry, Ledger, Undo
from harness.errors import UserError

__all__ = [
    "inject_route_fault",
    "remove_route_fault",
    "restore_route_policy",
    "set_route_policy",
]


# --------------------------------------------------------------------------- one http route


def http_route(vs: Mapping[str, Any], route: str) -> tuple[int, dict[str, Any]]:
    """Index and body of the http route named ``route``; UserError listing the names otherwise."""
    routes = list((vs.get("spec") or {}).get("http") or [])
    for i, r in enumerate(routes):
        if isinstance(r, dict) and r.get("name") == route:
            return i, r
    names = ", ".join(str(r.get("name")) for r in routes if isinstance(r, dict) and r.get("name")) or "none"
    raise UserError(
        f"VirtualService {objects.object_key(vs)} has no http route named {route!r} (named routes: {names}). "
        "Fix: name the route in the VirtualService, or use one of the names listed"
    )


def route_fault(
    abort_percent: float, abort_status: int, delay_ms: int, delay_percent: float
) -> dict[str, Any]:
    """The VirtualService ``HTTPFaultInjection`` for the arguments (Istio's field names)."""
    fault: dict[str, Any] = {}
    if abort_percent:
        fault["abort"] = {"percentage": {"value": float(abort_percent)}, "httpStatus": int(abort_status)}
    if delay_ms:
        fault["delay"] = {"percentage": {"value": float(delay_percent)}, "fixedDelay": f"{int(delay_ms)}ms"}
    if not fault:
        raise UserError(
            "inject_route_fault: nothing to inject. Fix: set abort_percent and/or delay_ms (with delay_percent)"
        )
    return fault


def _route_of(
    virtual_service: str, route: str, configuration: Configuration
) -> tuple[dict[str, Any], int, Any]:
    """The running VirtualService ``ns/name``, the index of its http route ``route``, and that route."""
    vs = objects.find_object("VirtualService", virtual_service, configuration)
    if vs is None:
        raise UserError(f"no VirtualService {virtual_service} runs in the mesh. Fix: check `ns/name`")
    index, before_route = http_route(vs, route)
    return vs, index, before_route


def _change_route(
    virtual_service: str,
    route: str,
    found: tuple[dict[str, Any], int, Any],
    change: Mapping[str, Any],
    kind: str,
    configuration: Configuration,
    data: Mapping[str, Any],
) -> float:
    """Apply route ``found`` (:func:`_route_of`) with ``change`` merged in (validated first),
    remembering the route as it was, and ``data``, in the ledger under ``<kind>:<vs>/<route>``;
    returns the propagation seconds."""
    vs, index, before_route = found
    patched = objects.applicable(vs)
    patched["spec"]["http"][index] = {**before_route, **change}
    objects.validate([patched], configuration)
    Ledger.of(configuration).record(
        f"{kind}:{virtual_service}/{route}",
        kind,
        {"virtual_service": virtual_service, "route": route, "before_route": before_route, **data},
    )
    return objects.apply_bodies([patched], kind, configuration)


def _put_route_back(
    kind: str,
    virtual_service: str,
    route: str,
    configuration: Configuration,
    *,
    still_ours: Callable[[Mapping[str, Any], Mapping[str, Any]], bool],
    action: str,
) -> tuple[bool, bool, float]:
    """Undo :func:`_change_route`: put the route back as the ledger remembers it, if ``still_ours(route
    now, ledger data)``; only that route is touched. Returns (ledgered, restored, propagation s)."""
    ledger = Ledger.of(configuration)
    key = f"{kind}:{virtual_service}/{route}"
    entry = ledger.get(key)
    if entry is None:
        return False, False, 0.0
    vs = objects.find_object("VirtualService", virtual_service, configuration)
    restored, seconds = False, 0.0
    if vs is not None:
        routes = list((vs.get("spec") or {}).get("http") or [])
        index = next((i for i, r in enumerate(routes) if r.get("name") == route), None)
        if index is not None and still_ours(routes[index], entry.data):
            body = objects.applicable(vs)
            body["spec"]["http"][index] = copy.deepcopy(dict(entry.data["before_route"]))
            seconds = objects.apply_bodies([body], action, configuration)
            restored = True
    ledger.done(key)
    return True, restored, seconds


# --------------------------------------------------------------------------- route faults


def inject_route_fault(
    virtual_service: str,
    route: str,
    abort_percent: float = 0.0,
    abort_status: int = 503,
    delay_ms: int = 0,
    delay_percent: float = 100.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Inject an abort and/or delay into the http route named ``route`` of VirtualService
    ``virtual_service`` (``ns/name``), and nothing else: the other routes and fields stay as they
    are. The object as it was is remembered in the state dir for :func:`remove_route_fault`."""
    found = _route_of(virtual_service, route, configuration)
    fault = route_fault(abort_percent, abort_status, delay_ms, delay_percent)
    change = {"fault": fault}
    seconds = _change_route(virtual_service, route, found, change, "route-fault", configuration, change)
    return {"virtual_service": virtual_service, "route": route, "fault": fault, "propagation_s": seconds}


def remove_route_fault(
    virtual_service: str, route: str, configuration: Configuration = None
) -> dict[str, Any]:
    """Put the route back as it was before :func:`inject_route_fault`, if it still carries the
    injected fault. Only that route is touched: concurrent edits elsewhere in the object stay."""
    ledgered, restored, seconds = _put_route_back(
        "route-fault",
        virtual_service,
        route,
        configuration,
        still_ours=lambda now, data: now.get("fault") == data["fault"],
        action="route-restore",
    )
    if not ledgered:
        return {"virtual_service": virtual_service, "route": route, "restored": False, "note": "no fault"}
    return {
        "virtual_service": virtual_service,
        "route": route,
        "restored": restored,
        "propagation_s": seconds,
    }


# --------------------------------------------------------------------------- route policies


def set_route_policy(
    virtual_service: str,
    route: str,
    retries: Mapping[str, Any] | None = None,
    timeout: str | None = None,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Set ``retries`` (Istio's HTTPRetry: attempts, retryOn, perTryTimeout) and/or ``timeout`` on
    the http route named ``route`` of ``virtual_service`` (``ns/name``), nothing else; the route as
    it was is remembered for :func:`restore_route_policy`."""
    found = _route_of(virtual_service, route, configuration)
    policy: dict[str, Any] = {}
    if retries is not None:
        policy["retries"] = {k: (int(v) if k == "attempts" else v) for k, v in dict(retries).items()}
    if timeout:
        policy["timeout"] = str(timeout)
    if not policy:
        raise UserError("set_route_policy: nothing to set. Fix: give retries and/or timeout")
    seconds = _change_route(
        virtual_service, route, found, policy, "route-policy", configuration, {"policy": policy}
    )
    return {"virtual_service": virtual_service, "route": route, "policy": policy, "propagation_s": seconds}


def restore_route_policy(
    virtual_service: str, route: str, configuration: Configuration = None
) -> dict[str, Any]:
    """Put the route back as it was before :func:`set_route_policy` (no-op when not set)."""
    _, restored, _ = _put_route_back(
        "route-policy",
        virtual_service,
        route,
        configuration,
        still_ours=lambda now, data: True,  # a policy change is the route's whole shape: always put back
        action="route-policy-restore",
    )
    return {"virtual_service": virtual_service, "route": route, "restored": restored}


def _undo_route_fault(entry: Entry, configuration: Configuration) -> str:
    d = entry.data
    r = remove_route_fault(str(d["virtual_service"]), str(d["route"]), configuration)
    return f"route fault {d['virtual_service']}/{d['route']} removed ({'restored' if r['restored'] else 'unchanged'})"


def _undo_route_policy(entry: Entry, configuration: Configuration) -> str:
    d = entry.data
    restore_route_policy(str(d["virtual_service"]), str(d["route"]), configuration)
    return f"route policy {d['virtual_service']}/{d['route']} restored"


#: the rollback's undo of each ledger kind this family writes (see :func:`harness.chaos.ledger.undo_all`)
UNDO: Mapping[str, Undo] = {"route-fault": Undo(_undo_route_fault), "route-policy": Undo(_undo_route_policy)}
