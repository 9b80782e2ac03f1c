"""Phase SLOs (pure): verdicts on a load report's counts and latencies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scipy.stats import beta

from harness.load.report import Latency, PhaseStats, RequestRecord


@dataclass(frozen=True)
class SLOResult:
    """A phase SLO's verdict; the same fields as :class:`harness.traffic.checks.CheckResult`
    (``suites/_support/load.py`` turns it into one for the evidence report). Truthy iff passed."""

    name: str
    passed: bool
    detail: str
    evidence: Mapping[str, object] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def __str__(self) -> str:
        return f"{self.name}: {self.verdict}\n{self.detail}"


def error_ratio_below(stats: PhaseStats, bound: float, alpha: float = 0.001) -> SLOResult:
    """The phase's error ratio is not above ``bound``, one-sided at false-failure rate ``alpha``.

    Fails only when even the Clopper-Pearson lower confidence bound of the error ratio exceeds
    ``bound``: a mesh whose true error ratio is at most ``bound`` fails with probability <= alpha,
    whatever the machine's speed (the verdict is on counts, not on time).
    """
    n, k = stats.requests, stats.failures
    lower = float(beta.ppf(alpha, k, n - k + 1)) if k > 0 else 0.0
    passed = n > 0 and lower <= bound
    return SLOResult(
        name=f"error_ratio_below({bound:g}, phase {stats.name})",
        passed=passed,
        detail=(
            f"phase {stats.name!r}: {k} of {n} requests failed ({100 * (k / n if n else 0):.2f}%), "
            f"status {dict(stats.by_status)}; lower {100 * (1 - alpha):g}% confidence bound of the error "
            f"ratio {lower:.4f} vs the allowed {bound:g}" + ("" if n else "; no requests in the phase")
        ),
        evidence={"requests": n, "failures": k, "lower_bound": lower, "bound": bound, "alpha": alpha},
    )


def latency_at_least(
    records: Sequence[RequestRecord], floor_ms: float, *, share: float = 0.5, what: str = "requests"
) -> SLOResult:
    """At least ``share`` of ``records`` took ``floor_ms`` or longer (e.g. p50 of delayed requests
    is above an injected delay). A lower bound on latency: slowness cannot make it fail."""
    n = len(records)
    slow = sum(1 for r in records if r.latency_ms >= floor_ms)
    lat = Latency.of([r.latency_ms for r in records])
    return SLOResult(
        name=f"latency_at_least({floor_ms:g} ms for {share:.0%} of {what})",
        passed=n > 0 and slow >= share * n,
        detail=(
            f"{slow} of {n} {what} took >= {floor_ms:g} ms (needed {share:.0%}); p50 {lat.p50_ms:.1f} ms, "
            f"p95 {lat.p95_ms:.1f} ms"
        ),
        evidence={"n": n, "at_least": slow, "p50_ms": lat.p50_ms},
    )
