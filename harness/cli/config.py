"""Verbs that take Istio/Kubernetes YAML: ``apply``, ``delete``, ``validate``."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cli.output import Output, plural
from harness.errors import ConfigError, ConfigProblem
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
    if args.json:
        out.json(
            {
                "action": verb,
                "files": [str(f) for f in files],
                "documents": documents,
                "propagation_s": round(seconds, 3),
            }
        )
    else:
        out.print(
            f"{verb} {plural(documents, 'document')} from {', '.join(map(str, files))}; "
            f"every proxy had the change after {seconds:.2f} s"
        )
    return 0


def cmd_validate(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.istio.validate import validate_paths

    try:
        bundle = validate_paths(args.files, istio_version=settings.istio_version)
        require_documents(args.files, len(bundle))
    except ConfigError as e:
        if not args.json:
            raise
        out.json({"valid": False, "documents": None, "problems": [asdict(p) for p in e.problems]})
        return e.exit_code
    if args.json:
        out.json(
            {
                "valid": True,
                "documents": len(bundle),
                "problems": [],
                "warnings": [asdict(w) for w in bundle.warnings],
            }
        )
        return 0
    for w in bundle.warnings:
        out.warn(str(w))
    out.print(f"{plural(len(bundle), 'document')} valid")
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


def _running_config(backend: Backend, settings: Settings) -> Bundle:
    """What the mesh runs now: the manifests, updated by the backend's applied config (if it has one).

    TODO(backends): a backend method returning this would be more exact than --manifests.
    """
    from harness.istio.loader import load_paths
    from harness.istio.model import Bundle

    context = Bundle(load_paths([settings.manifests]) if settings.manifests.exists() else ())
    config = backend.config_dir()
    if config is not None and config.is_dir():
        context = context.merged(load_paths([config]))
    return context
