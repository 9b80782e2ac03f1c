"""The meshproof Chaos Toolkit control: preflight before, no-residue verdict after.

Declare it once at the top of an experiment::

    controls:
      - name: meshproof
        provider: {type: python, module: harness.chaos.control}

``before_experiment_control``
    undoes what an earlier, killed run left in the ledger, checks every reference of the
    experiment's meshproof activities against the running mesh (pods, VirtualService routes,
    DestinationRules, YAML files: one clear line and the run is interrupted *before* the method
    starts), and records the pre-experiment baseline for the no-residue check.
``after_experiment_control``
    (after the rollbacks) undoes anything still in the ledger, runs the no-residue check
    (:mod:`harness.chaos.residue`) and fails the journal when it finds residue, when a meshproof
    action in the method failed or when a meshproof probe in the method did not hold. The findings go into ``journal["meshproof"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from harness.chaos.context import Configuration, mesh
from harness.errors import MeshproofError, UserError

logger = logging.getLogger("chaostoolkit")

MODULES = ("harness.chaos.actions", "harness.chaos.probes")


def activities(experiment: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, activity) for the hypothesis and the method, in the order they run. (Rollbacks are
    not checked: undoing what was never done is a no-op.)"""
    ssh = experiment.get("steady-state-hypothesis") or {}
    for i, a in enumerate(ssh.get("probes") or []):
        yield f"steady-state-hypothesis.probes[{i}]", a
    for i, a in enumerate(experiment.get("method") or []):
        yield f"method[{i}]", a


def _ours(activity: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    provider = activity.get("provider") or {}
    if provider.get("type") != "python" or provider.get("module") not in MODULES:
        return None
    return str(provider.get("func")), dict(provider.get("arguments") or {})


def preflight(experiment: Mapping[str, Any], configuration: Configuration = None) -> list[str]:
    """Problems with the references of the experiment's meshproof activities, one line each.

    ``configuration`` is the experiment's loaded configuration: ``${key}`` templates in the
    arguments are substituted from it first, as Chaos Toolkit will."""
    from chaoslib import substitute

    from harness.chaos.actions.routes import http_route
    from harness.chaos.objects import file_objects, find_object, object_key
    from harness.mesh import cert_ttl_seconds

    problems: list[str] = []
    backend = mesh(configuration)
    applied: dict[str, dict[str, Any]] = {}  # objects an earlier apply_resource of the method puts in place

    def lookup(kind: str, ref: str) -> dict[str, Any] | None:
        ns, _, name = ref.rpartition("/")
        return applied.get(f"{kind}/{ns or 'default'}/{name}") or find_object(kind, ref, configuration)

    for where, activity in activities(experiment):
        ours = _ours(activity)
        if ours is None:
            continue
        func, args = ours
        args = dict(substitute(args, dict(configuration or {}), None))
        name = activity.get("name", func)
        try:
            pods = args.get("pods", args.get("pod"))
            for pod in [pods] if isinstance(pods, str) else list(pods or []):
                w = backend.workload(str(pod))
                if func == "shorten_cert_lifetime" or (
                    func == "fail_replicas" and str(args.get("via", "sidecar")) == "sidecar"
                ):
                    _check_victim(w, configuration)  # no sidecar, the gateway, no inbound HTTP: exit 2
                if func == "drop_packets":  # the gateway, no iptables, an existing cluster: exit 2
                    backend.network_dropped(w.ref)
            if func == "shorten_cert_lifetime":
                cert_ttl_seconds(str(args.get("ttl", "20s")))
            if func == "drop_packets" and not 0.0 < float(args.get("probability", 0.3)) <= 1.0:
                raise UserError(f"probability {args.get('probability')} must be in (0, 1]")
            if func == "delay_network":
                from harness.chaos.actions.network import delay_network

                delay_network(pods or [], int(args.get("delay_ms", 100)), configuration)
            if "victim" in args:
                backend.workload(str(args["victim"]))
            if "caller" in args:
                backend.workload(str(args["caller"]))
            if "virtual_service" in args:
                vs = lookup("VirtualService", str(args["virtual_service"]))
                if vs is None:
                    raise UserError(f"no VirtualService {args['virtual_service']} runs in the mesh")
                if "route" in args:
                    http_route(vs, str(args["route"]))
            dr = args.get("destination_rule")
            if dr and lookup("DestinationRule", str(dr)) is None:
                raise UserError(f"no DestinationRule {dr} runs in the mesh")
            if func in ("apply_resource", "remove_resource") or (
                func == "restore_resources" and args.get("path")
            ):
                objs = file_objects(str(args["path"]))
                if func == "apply_resource":
                    applied.update({object_key(o): o for o in objs})
        except MeshproofError as e:
            problems.append(f"{where} ({name}): {str(e).splitlines()[0]}")
    return problems


def _check_victim(w: Any, configuration: Configuration) -> None:
    from harness import sidecar_fault
    from harness.chaos.context import admin_http

    with admin_http(configuration) as http:
        sidecar_fault.check_victim(http, w)


def configure_control(**kwargs: Any) -> None:
    """Nothing to configure (Chaos Toolkit calls this when it loads the control)."""


def before_experiment_control(
    context: Mapping[str, Any], configuration: Configuration = None, secrets: Any = None, **kwargs: Any
) -> None:
    from chaoslib.exceptions import InterruptExecution

    from harness.chaos import actions, residue

    try:
        undone, failed = actions.undo_all(configuration)
        for u in undone:
            logger.warning(f"meshproof: undid what an earlier run left: {u}")
        if failed:
            raise InterruptExecution("meshproof: could not undo an earlier run: " + "; ".join(failed))
        problems = preflight(context, configuration)
        if problems:
            raise InterruptExecution("meshproof: bad experiment: " + " | ".join(problems))
        residue.snapshot(configuration)
    except MeshproofError as e:
        raise InterruptExecution(f"meshproof: {str(e).splitlines()[0]}") from e


def after_experiment_control(
    context: Mapping[str, Any],
    state: dict[str, Any],
    configuration: Configuration = None,
    secrets: Any = None,
    **kwargs: Any,
) -> None:
    from harness.chaos import actions, residue

    report: dict[str, Any] = {}
    try:
        undone, failed = actions.undo_all(configuration)
        report["undone_after_rollbacks"] = undone
        report["undo_failed"] = failed
        found = residue.check(configuration)
        report["residue"] = found.as_json()
        # a probe cut off by an interruption failed for that reason: the run stays "interrupted"
        report["during"] = [] if state.get("status") == "interrupted" else failed_probes(state)
        if failed or not found.clean or report["during"]:
            state["status"] = "failed"
    except Exception as e:  # noqa: BLE001 - Chaos Toolkit would swallow it: fail the journal instead
        report["error"] = f"{type(e).__name__}: {e}"
        state["status"] = "failed"
    state["meshproof"] = report


def failed_probes(journal: Mapping[str, Any]) -> list[str]:
    """Method activities of ours that failed, and method probes of ours whose evidence says the
    property did not hold. (Chaos Toolkit carries on after a failed action and still calls the
    run completed; an experiment whose injection failed, or could not be proven, tested nothing.)"""
    out = []
    for run in journal.get("run") or []:
        activity = run.get("activity") or {}
        ours = _ours(activity)
        if ours is None:
            continue
        output = run.get("output")
        if run.get("status") != "succeeded":
            out.append(f"{activity.get('name')}: {run.get('status')}: {_last_line(run.get('exception'))}")
        elif activity.get("type") == "probe" and isinstance(output, dict) and output.get("holds") is False:
            out.append(f"{activity.get('name')}: did not hold")
    return out


def _last_line(exception: Any) -> str:
    """The last line of Chaos Toolkit's formatted exception (the error itself), at most 300 chars."""
    lines = exception if isinstance(exception, list) else [str(exception or "")]
    text = "".join(str(x) for x in lines).strip().splitlines()
    return text[-1][:300] if text else ""
