"""The ``meshproof`` command: argument parsing and printing only; the work happens in the modules it calls.

Exit codes: 0 success; 1 a run-time failure (:class:`~harness.errors.HarnessError`); 2 a user error
(bad arguments, invalid configuration, no mesh in the state dir, a missing tool); 130 interrupted.
``meshproof test`` exits with pytest's code (5 = no tests ran, a failure). Errors are one line per
problem on stderr, never a traceback; ``--debug`` or ``MESHPROOF_DEBUG=1`` re-raises them instead.
The ``--json`` documents are described in docs/CLI.md.

Modules: ``parser`` (verbs and options), ``output`` (printing), one module per verb group
(``lifecycle``: up/status/down; ``config``: apply/delete/validate; ``traffic``: send/fault/traces;
``tools``: doctor/install; ``testrun``: test and its JUnit summary). ``main`` here dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.cli.output import Output
from harness.cli.parser import Handler, build_parser
from harness.errors import MeshproofError, UserError
from harness.settings import Settings, from_env

__all__ = ["build_parser", "main"]


def _settings(args: argparse.Namespace) -> Settings:
    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    return from_env().with_overrides(
        state_dir=path(args.state),
        backend=getattr(args, "backend", None),
        manifests=path(getattr(args, "manifests", None)),
        istio_version=getattr(args, "istio_version", None),
        kube_context=getattr(args, "kube_context", None),
        istio_revision=getattr(args, "istio_revision", None),
        keep_cluster=getattr(args, "keep_cluster", None),
        traffic_api=getattr(args, "traffic_api", None),
    )


def _debug_requested(args: argparse.Namespace | None) -> bool:
    # TODO(settings): MESHPROOF_DEBUG is read here because it must work before Settings exist.
    if args is not None and getattr(args, "debug", False):
        return True
    return os.environ.get("MESHPROOF_DEBUG", "") not in ("", "0", "false")


def _report_error(e: MeshproofError) -> None:
    if isinstance(e, UserError):
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"meshproof: error: {line}", file=sys.stderr)
        return
    lines = str(e).splitlines() or [type(e).__name__]
    print(f"meshproof: failed: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)
    for note in getattr(e, "__notes__", ()):
        for line in str(note).splitlines():
            print(f"  {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args: argparse.Namespace | None = None
    try:
        args, extra = parser.parse_known_args(argv)
        if args.verb == "test":
            args.pytest_args = extra[1:] if extra[:1] == ["--"] else extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # argparse: --help, --version, usage errors (exit 2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    out = Output()
    try:
        settings = _settings(args)
        handler: Handler = args.func
        return handler(args, settings, out)
    except KeyboardInterrupt:
        if _debug_requested(args):
            raise
        print("meshproof: interrupted", file=sys.stderr)
        return 130
    except MeshproofError as e:
        if _debug_requested(args):
            raise
        _report_error(e)
        return e.exit_code
