"""``meshproof upgrade-check``: options and handler (wired into the CLI's parser)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.settings import Settings
from harness.versions import ISTIO_RELEASES

SUMMARY = "upgrade the mesh from one pinned Istio release to another under load; report what changed"


def add_arguments(p: argparse.ArgumentParser) -> None:
    known = ", ".join(sorted(ISTIO_RELEASES))
    p.add_argument(
        "--from", dest="from_label", metavar="VERSION", required=True, help=f"release to start on ({known})"
    )
    p.add_argument(
        "--to", dest="to_label", metavar="VERSION", required=True, help=f"release to upgrade to ({known})"
    )
    p.add_argument(
        "--mode",
        default="in-place",
        help="in-place (istiod replaced on its address) or canary (a second revision)",
    )
    p.add_argument("--users", type=int, default=10, help="Locust users during the upgrade (default 10)")
    p.add_argument(
        "--phase-requests",
        type=int,
        default=300,
        help="requests the load must complete after each step before the next (default 300)",
    )
    p.add_argument("--max-failures", type=int, default=0, help="failed requests a phase may have (default 0)")
    p.add_argument("--no-suites", action="store_true", help="skip the suites before and after (faster)")
    p.add_argument(
        "--suites",
        metavar="PYTEST_ARGS",
        default="suites/",
        help="what the suites run before and after is (pytest arguments, default: suites/)",
    )
    p.add_argument(
        "--to-config",
        metavar="FILE",
        type=Path,
        action="append",
        default=[],
        help="Istio YAML applied together with the new control plane (its effect shows in the diff)",
    )
    p.add_argument("--out", metavar="DIR", type=Path, help="report directory (default: <state>/upgrade)")


def run(args: argparse.Namespace, settings: Settings, out: Any) -> int:
    from harness.upgrade.kubecheck import BACKENDS, KubeUpgrade
    from harness.upgrade.local import LocalUpgrade, UpgradeConfig

    if settings.backend not in ("local", *BACKENDS):
        raise UserError(
            f"upgrade-check runs on backends local, {', '.join(BACKENDS)}, not {settings.backend!r}. "
            "Fix: --backend local|kind|existing"
        )
    config = UpgradeConfig(
        from_label=args.from_label,
        to_label=args.to_label,
        mode=args.mode,
        users=args.users,
        phase_requests=args.phase_requests,
        max_failures=args.max_failures,
        run_suites=not args.no_suites,
        suites=tuple(args.suites.split()),
        to_config=tuple(args.to_config),
        out_dir=args.out,
    )
    for f in config.to_config:
        if not f.exists():
            raise UserError(f"--to-config {f}: no such file. Fix: name an Istio YAML file or directory")
    upgrade = (
        LocalUpgrade(settings, config, progress=out.note)
        if settings.backend == "local"
        else KubeUpgrade(settings, config, progress=out.note)
    )
    report = upgrade.run()
    files = {
        "json": upgrade.out_dir / "upgrade-report.json",
        "html": upgrade.out_dir / "upgrade-report.html",
        "junit": upgrade.out_dir / "upgrade-junit.xml",
    }
    if args.json:
        out.json({**report.as_json(), "files": {k: str(v) for k, v in files.items()}})
    else:
        out.print(report.text())
        for what, path in files.items():
            out.print(f"{what}: {path}")
    return 0 if report.passed else 1
