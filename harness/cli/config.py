"""Verbs that take Istio/Kubernetes YAML: ``apply``, ``delete``, ``validate``."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from harness import httpclient
from harness.cli.output import Output, plural
from harness.errors import ConfigError, ConfigProblem, WaitTimeout
from harness.settings import Settings

if TYPE_CHECKING:
    from harness.backends.base import Backend
    from harness.istio.model import Bundle


def cmd_apply(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    return _apply_or_delete(args, settings, out, delete=False)


def cmd_delete(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    return _apply_or_delete(args, settings, out, delete=True)


def _apply_or_delete(args: argparse.Namespace, settings: Settings, out: Output, *, delete: bool) -> int:
    from harness.backends import attach
    from harness.istio.loader import load_paths
    from harness.istio.validate import validate_paths

    files: list[Path] = args.files
    backend = attach(settings)
    # Validate in the context of what the mesh runs, so references to subsets, gateways and
    # services defined elsewhere resolve.
    bundle = validate_paths(
        files, bundle_context=_running_config(backend, settings), istio_version=settings.istio_version
    )
    for w in bundle.warnings:
        out.warn(str(w))
    documents = len(load_paths(files))
    require_documents(files, documents)
    seconds = backend.delete(files) if delete else backend.apply(files)
    verb = "deleted" if delete else "applied"
    doc: dict[str, object] = {
        "action": verb,
        "files": [str(f) for f in files],
        "documents": documents,
        "propagation_s": round(seconds, 3),
    }
    if not args.json:
        out.print(
            f"{verb} {plural(documents, 'document')} from {', '.join(map(str, files))}; "
            f"every proxy had the change after {seconds:.2f} s"
        )
    try:
        accepted = () if delete else await_istio_conditions(backend, files, out)
    except ConfigError as e:
        if not args.json:
            raise
        out.json({**doc, "problems": [asdict(p) for p in e.problems]})
        return e.exit_code
    if args.json:
        out.json({**doc, "accepted": list(accepted)} if accepted else doc)
    elif accepted:
        out.print(f"Istio reports every condition True on: {', '.join(accepted)}")
    return 0


#: how long ``apply`` waits for Istio to report on the Gateway API objects it applied
CONDITIONS_TIMEOUT_S = 60.0


def await_istio_conditions(
    backend: Backend, files: list[Path], out: Output, timeout: float = CONDITIONS_TIMEOUT_S
) -> tuple[str, ...]:
    """Wait until Istio reported on every applied Gateway and route (its conditions for the current
    generation: a Gateway's Accepted and Programmed, a route's Accepted and ResolvedRefs per
    parent); a condition that is not True is an error naming the file, the object, the field and
    Istio's condition verbatim (exit 2). Returns the objects Istio reported every condition True on.
    """
    from harness import wait
    from harness.istio.conditions import Judgement, applies_to, judge
    from harness.istio.loader import load_paths

    docs = [d for d in load_paths(files) if applies_to(d.body)]
    if not docs:
        return ()
    bodies = [d.body for d in docs]

    last: list[Judgement] = []

    def reported() -> Judgement | None:
        judgement = judge(bodies, backend.gateway_api_objects())
        last[:] = [judgement]
        return judgement if judgement.done else None

    what = "Istio's conditions on the applied Gateway API objects, for their current generation"
    hint = "`meshproof status` shows the conditions Istio has written so far"
    try:
        judgement = wait.until(reported, what=what, timeout=timeout, interval=0.3, hint=hint)
    except WaitTimeout as e:
        if not last:
            raise
        missing = "; ".join(last[0].pending)
        raise WaitTimeout(what, timeout, f"Istio has not reported on {missing}", hint) from e
    for note in judgement.notes:
        out.warn(note)
    if judgement.refused:
        where = {(d.kind, d.namespace or "default", d.name): d for d in docs}
        raise ConfigError(
            [
                ConfigProblem(
                    (doc := where[(r.kind, r.namespace, r.name)]).file,
                    doc.index,
                    r.path,
                    f"Istio's condition{f' for {r.parent}' if r.parent else ''}: {r.text}",
                    r.fix,
                    r.kind,
                    r.name,
                )
                for r in judgement.refused
            ]
        )
    return judgement.accepted


def _manifests_context(args: argparse.Namespace, settings: Settings) -> Bundle | None:
    """``--manifests DIR`` given: its objects are the context cross-references resolve in."""
    from harness.istio.loader import load_paths
    from harness.istio.model import Bundle

    if getattr(args, "manifests", None) is None:
        return None
    return Bundle(load_paths([settings.manifests]))


def cmd_validate(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.istio.validate import validate_paths

    try:
        context = _manifests_context(args, settings)
        bundle = validate_paths(args.files, bundle_context=context, istio_version=settings.istio_version)
        documents = len(bundle)
        if context is not None:
            from harness.istio.loader import load_paths

            documents = len(load_paths(args.files))
        require_documents(args.files, documents)
    except ConfigError as e:
        if not args.json:
            raise
        out.json({"valid": False, "documents": None, "problems": [asdict(p) for p in e.problems]})
        return e.exit_code
    if args.json:
        out.json(
            {
                "valid": True,
                "documents": documents,
                "problems": [],
                "warnings": [asdict(w) for w in bundle.warnings],
                "infos": [asdict(i) for i in bundle.infos],
            }
        )
        return 0
    for w in bundle.warnings:
        out.warn(str(w))
    out.print(f"{plural(documents, 'document')} valid")
    return 0


def require_documents(files: list[Path], documents: int) -> None:
    """ConfigError (exit 2, one line per path) when the files hold no YAML document at all."""
    if documents == 0:
        raise ConfigError(
            [
                ConfigProblem(
                    str(f),
                    0,
                    "",
                    "holds no YAML documents (only empty documents or comments)",
                    "pass the file or directory of the Istio/Kubernetes objects you meant",
                )
                for f in files
            ]
        )


def cmd_explain(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    """Per object of the files: what the mesh will do (route proportions, authz decisions, mTLS
    modes; outlier detection and pool limits as the running mesh's Envoy runs them; an HTTPRoute's
    rules, with Istio's conditions when the running mesh holds it)."""

    from harness import envoy
    from harness.backends import attach
    from harness.errors import StateError
    from harness.istio.explain import explain
    from harness.istio.loader import load_paths
    from harness.istio.validate import validate_paths

    backend: Backend | None
    try:
        backend = attach(settings)
    except StateError:
        backend = None
    context = _running_config(backend, settings) if backend is not None else _manifests_or_none(settings)
    bundle = validate_paths(args.files, bundle_context=context, istio_version=settings.istio_version)
    for w in bundle.warnings:
        out.warn(str(w))
    docs = load_paths(args.files)
    with httpclient.client(timeout=10) as http:
        lookup = None
        if backend is not None:
            proxy = next((w for w in backend.workloads() if w.role == "gateway" and w.proxy_admin_url), None)
            if proxy is not None:

                def lookup(name: str) -> dict[str, object] | None:
                    got = envoy.active_cluster(http, proxy.proxy_admin_url, name)
                    return dict(got) if got is not None else None

        held = None
        if backend is not None and any(d.kind == "HTTPRoute" for d in docs):
            from harness.errors import BackendError

            try:
                held = backend.gateway_api_objects()
            except BackendError as e:
                out.warn(f"Istio's conditions on the routes are not readable: {e}")
        lines = explain(docs, bundle, lookup, held)
    if args.json:
        out.json({"explain": lines})
    else:
        for line in lines or [
            "nothing to explain (no VirtualService, DestinationRule, AuthorizationPolicy, "
            "PeerAuthentication or HTTPRoute)"
        ]:
            out.print(line)
    return 0


def _manifests_or_none(settings: Settings) -> Bundle | None:
    from harness.istio.loader import load_paths
    from harness.istio.model import Bundle

    return Bundle(load_paths([settings.manifests])) if settings.manifests.exists() else None


def _running_config(backend: Backend, settings: Settings) -> Bundle:
    """What the mesh runs now: the manifests, updated by the backend's applied config (if it has one).

    TODO(backends): a backend method returning this would be more exact than --manifests.
    """
    from harness.istio.loader import load_paths
    from harness.istio.model import Bundle
    from harness.istio.traffic_api import select

    # the manifests as `up` applied them (the routes of the mesh's traffic API only)
    manifests = load_paths([settings.manifests]) if settings.manifests.exists() else ()
    context = Bundle(select(manifests, backend.traffic_api))
    config = backend.config_dir()
    if config is not None and config.is_dir():
        context = context.merged(load_paths([config]))
    return context
