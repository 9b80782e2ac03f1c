"""Istio's version-skew rule for upgrades (pure).

Istio supports a control plane at most one minor release ahead of the proxies it serves, and
never behind them; an upgrade goes forward, one minor at a time (Istio's upgrade notes; its own
helm upgrade tests run old proxies against the new control plane). The rule is checked before
an upgrade starts and again before each step.
"""

from __future__ import annotations

from harness.errors import SkewError, UserError
from harness.versions import ISTIO_RELEASES, IstioRelease

RULE = (
    "Istio's supported skew: the control plane may be at most one minor release ahead of the data "
    "plane and never behind it, so an upgrade goes from an older release to the same or the next minor"
)


def release(label: str) -> IstioRelease:
    if label not in ISTIO_RELEASES:
        known = ", ".join(sorted(ISTIO_RELEASES))
        raise UserError(f"unknown Istio version {label!r}. Fix: use one of {known}")
    return ISTIO_RELEASES[label]


def check_upgrade(from_label: str, to_label: str) -> tuple[IstioRelease, IstioRelease]:
    """Both releases known, FROM not newer than TO, at most one minor apart; else exit-2 errors."""
    a, b = release(from_label), release(to_label)
    if a.minor > b.minor:
        raise SkewError(
            f"--from {a.label} is newer than --to {b.label}: downgrades are not upgrades. "
            f"Rule: {RULE}. Fix: swap --from and --to"
        )
    if a.minor[0] != b.minor[0] or b.minor[1] - a.minor[1] > 1:
        raise SkewError(
            f"--from {a.label} to --to {b.label} skips a minor release. Rule: {RULE}. "
            "Fix: upgrade one minor release at a time"
        )
    return a, b


def check_step(control_plane: str, proxy: str, what: str) -> None:
    """Before a step: the control plane ``control_plane`` serving a proxy of release ``proxy``."""
    cp, px = release(control_plane).minor, release(proxy).minor
    if cp < px:
        raise SkewError(f"{what}: control plane {control_plane} would be behind proxy {proxy}. Rule: {RULE}")
    if cp[0] != px[0] or cp[1] - px[1] > 1:
        raise SkewError(
            f"{what}: control plane {control_plane} would be more than one minor ahead of proxy {proxy}. "
            f"Rule: {RULE}"
        )


def revision_of(label: str) -> str:
    """Istio's revision naming: a release label with dots as dashes (``1.31-dev`` -> ``1-31-dev``)."""
    return label.replace(".", "-")
