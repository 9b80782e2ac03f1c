"""Composable checks over sampled traffic that say what failed (Istio's ``check.And`` style).

Each check takes what the sampler recorded (:class:`~harness.traffic.client.SampleResult`), or
what a Locust run logged (:mod:`harness.load.report`: a phase's counts, request records), and
returns a :class:`CheckResult`: truthy when it passed, and always carrying a ``detail``
(the observed-versus-expected table a reader needs) and the raw ``evidence``. Checks over a
batch fail on an empty batch: no traffic proves nothing. Combine with :func:`all_of`; turn a
failure into a test failure with :func:`assert_check`.

Pure: no I/O, no clock, no environment.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from harness.errors import CheckFailed
from harness.load.report import Latency, PhaseStats, RequestRecord
from harness.traffic import stats
from harness.traffic.client import RBAC_DENIED_BODY, Response, SampleResult

__all__ = [
    "CheckResult",
    "all_of",
    "all_status",
    "allowed",
    "assert_check",
    "error_ratio_below",
    "latency_at_least",
    "no_overload",
    "overloaded_at_least",
    "proportion_match",
    "rbac_denied",
    "status_is",
    "weights_match",
]

_EXAMPLE_CHARS = 160


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: truthy iff ``passed``.

    ``detail`` is human-readable (observed versus expected); ``evidence`` holds the numbers
    behind it for reports (status counts, the statistical verdict, sub-checks, ...).

    ``key`` is the check's stable identity: its kind and design parameters, never a sample size,
    an observed value or a pod name, so two runs of the same check share it (reports are matched
    on it across runs). Empty means the name is already stable and serves as the key.
    """

    name: str
    passed: bool
    detail: str
    evidence: Mapping[str, object] = field(default_factory=dict)
    key: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.evidence, MappingProxyType):
            object.__setattr__(self, "evidence", MappingProxyType(dict(self.evidence)))

    def __bool__(self) -> bool:
        return self.passed

    @property
    def identity(self) -> str:
        """The stable key (``key``, else ``name``) that matches this check across runs."""
        return self.key or self.name

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def __str__(self) -> str:
        return f"{self.verdict} {self.name}\n{textwrap.indent(self.detail, '  ')}"


# --------------------------------------------------------------------------- status checks


def status_is(result: Response | SampleResult, code: int) -> CheckResult:
    """One response has status ``code``; for a whole batch, the same as :func:`all_status`."""
    if isinstance(result, SampleResult):
        return all_status(result, code)
    passed = result.status == code
    seen = f"status {result.status}" + (f" ({result.error})" if result.error else "")
    detail = f"expected status {code}, observed {seen}"
    if not passed and result.body_text:
        detail += f"; body: {_clip(result.body_text)}"
    return CheckResult(
        name=f"status_is({code})",
        passed=passed,
        detail=detail,
        evidence={"expected": code, "status": result.status, "response": result},
    )


def all_status(result: SampleResult, code: int) -> CheckResult:
    """Every response in the batch has status ``code`` (0 for "no response")."""
    bad = sum(1 for r in result.responses if r.status != code)
    return _every(
        result,
        name=f"all_status({code})",
        passed=bad == 0,
        expectation=f"every response to have status {code}",
        outcome=f"{bad} did not",
        evidence={"expected": code},
        is_bad=lambda r: r.status != code,
    )


def rbac_denied(result: SampleResult) -> CheckResult:
    """Every response is Envoy RBAC's denial: 403 with body ``RBAC: access denied``."""
    denied = result.rbac_denied_count()
    other_403 = sum(1 for r in result.responses if r.status == 403 and not r.rbac_denied)
    outcome = f"{denied} were, {result.total - denied} were not"
    if other_403:
        outcome += f" ({other_403} were 403 with another body: not denied by an AuthorizationPolicy)"
    return _every(
        result,
        name="rbac_denied",
        passed=denied == result.total,
        expectation=f"every response to be denied by RBAC (403 {RBAC_DENIED_BODY!r})",
        outcome=outcome,
        evidence={"rbac_denied": denied},
        is_bad=lambda r: not r.rbac_denied,
    )


def allowed(result: SampleResult) -> CheckResult:
    """Every response is a 2xx answered by the sample service (it reported its version)."""
    bad = sum(1 for r in result.responses if not r.ok)
    denied = result.rbac_denied_count()
    outcome = f"{bad} were not" + (f" ({denied} denied by RBAC)" if denied else "")
    return _every(
        result,
        name="allowed",
        passed=bad == 0,
        expectation="every response to be a 2xx from the app",
        outcome=outcome,
        evidence={"rbac_denied": denied},
        is_bad=lambda r: not r.ok,
    )


# --------------------------------------------------------------------------- circuit breaking


def no_overload(result: SampleResult) -> CheckResult:
    """No response carries ``x-envoy-overloaded`` (no circuit breaker or ejection tripped)."""
    count = result.overloaded_count()
    return _every(
        result,
        name="no_overload",
        passed=count == 0,
        expectation="no response to carry x-envoy-overloaded",
        outcome=f"{count} did",
        evidence={"overloaded": count},
        is_bad=lambda r: r.overloaded,
    )


def overloaded_at_least(result: SampleResult, k: int) -> CheckResult:
    """At least ``k`` responses carry ``x-envoy-overloaded`` (the circuit breaker tripped)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    count = result.overloaded_count()
    return _every(
        result,
        name=f"overloaded_at_least({k})",
        passed=count >= k,
        expectation=f"at least {k} responses to carry x-envoy-overloaded",
        outcome=f"{count} did",
        evidence={"overloaded": count, "expected_at_least": k},
        is_bad=lambda r: not r.overloaded,
    )


# --------------------------------------------------------------------------- statistics


def weights_match(
    result: SampleResult,
    expected: Mapping[str, float],
    alpha: float = 0.001,
    power: float = 0.99,
    min_deviation: float = 0.05,
) -> CheckResult:
    """The versions of the 200 responses split as ``expected`` (:func:`stats.check_weights`).

    ``detail`` is the verdict's observed-versus-expected table, with a note on responses left
    out (not a 200 from the app). Compose with :func:`all_status` to also require that every
    request succeeded.
    """
    counts = result.version_counts()
    verdict = stats.check_weights(expected, counts, alpha=alpha, power=power, min_deviation=min_deviation)
    detail = verdict.table()
    excluded = result.total - verdict.n
    if excluded:
        detail += (
            f"\nnote: {excluded} of {result.total} responses were not counted (not a 200 from the app): "
            f"status {_fmt_counts(result.status_counts())}"
        )
    split = "/".join(f"{name}={weight:g}" for name, weight in expected.items())
    return CheckResult(
        name=f"weights_match({split})",
        passed=verdict.passed,
        detail=detail,
        evidence={
            "verdict": verdict,
            "summary": verdict.summary(),
            "versions": counts,
            "status": result.status_counts(),
            "excluded": excluded,
        },
    )


def proportion_match(
    successes: int, trials: int, expected: float, alpha: float = 0.001, *, what: str = "proportion"
) -> CheckResult:
    """``successes / trials`` agrees with ``expected`` (:func:`stats.check_proportion`).

    For rates that configuration fixes: a fault's abort percentage, a mirror's share, ...
    ``what`` names the rate in the check's name.
    """
    verdict = stats.check_proportion(successes, trials, expected, alpha=alpha)
    detail = f"{what}: {verdict.summary()}"
    if trials == 0:
        detail += "\nnote: no trials: nothing was verified"
    return CheckResult(
        name=f"proportion_match({what}={expected:g})",
        passed=verdict.passed,
        detail=detail,
        evidence={"verdict": verdict, "summary": verdict.summary()},
    )


# --------------------------------------------------------------------------- load phases


def error_ratio_below(phase: PhaseStats, bound: float, alpha: float = 0.001) -> CheckResult:
    """A load phase's error ratio is not above ``bound``, one-sided at false-failure rate ``alpha``.

    Fails only when even the Clopper-Pearson lower confidence bound of the error ratio exceeds
    ``bound``: a mesh whose true error ratio is at most ``bound`` fails with probability <= alpha,
    whatever the machine's speed (the verdict is on counts, not on time).
    """
    n, k = phase.requests, phase.failures
    # one-sided at alpha: the lower end of the two-sided exact interval at confidence 1 - 2 alpha
    lower = stats.clopper_pearson(k, n, 1 - 2 * alpha).low if k > 0 else 0.0
    passed = n > 0 and lower <= bound
    return CheckResult(
        name=f"error_ratio_below({bound:g}, phase {phase.name})",
        passed=passed,
        detail=(
            f"phase {phase.name!r}: {k} of {n} requests failed ({100 * (k / n if n else 0):.2f}%), "
            f"status {dict(phase.by_status)}; lower {100 * (1 - alpha):g}% confidence bound of the error "
            f"ratio {lower:.4f} vs the allowed {bound:g}" + ("" if n else "; no requests in the phase")
        ),
        evidence={"requests": n, "failures": k, "lower_bound": lower, "bound": bound, "alpha": alpha},
    )


def latency_at_least(
    records: Sequence[RequestRecord], floor_ms: float, *, share: float = 0.5, what: str = "requests"
) -> CheckResult:
    """At least ``share`` of ``records`` took ``floor_ms`` or longer (e.g. p50 of delayed requests
    is above an injected delay). A lower bound on latency: slowness cannot make it fail."""
    n = len(records)
    slow = sum(1 for r in records if r.latency_ms >= floor_ms)
    lat = Latency.of([r.latency_ms for r in records])
    return CheckResult(
        name=f"latency_at_least({floor_ms:g} ms for {share:.0%} of {what})",
        passed=n > 0 and slow >= share * n,
        detail=(
            f"{slow} of {n} {what} took >= {floor_ms:g} ms (needed {share:.0%}); p50 {lat.p50_ms:.1f} ms, "
            f"p95 {lat.p95_ms:.1f} ms"
        ),
        evidence={"n": n, "at_least": slow, "p50_ms": lat.p50_ms},
    )


# --------------------------------------------------------------------------- composition


def all_of(*checks: CheckResult) -> CheckResult:
    """Passes iff every check passed; ``detail`` lists each failing check with its own detail."""
    if not checks:
        raise ValueError("all_of needs at least one check (an empty conjunction would prove nothing)")
    failed = [c for c in checks if not c.passed]
    name = "all_of(" + ", ".join(c.name for c in checks) + ")"
    key = "all_of(" + ", ".join(c.identity for c in checks) + ")"
    if failed:
        parts = [f"{len(failed)} of {len(checks)} checks failed:"]
        parts += [f"- {c.name}:\n{textwrap.indent(c.detail, '    ')}" for c in failed]
        detail = "\n".join(parts)
    else:
        detail = f"all {len(checks)} checks passed: " + ", ".join(c.name for c in checks)
    return CheckResult(
        name=name,
        passed=not failed,
        detail=detail,
        evidence={"checks": tuple(checks), "failed": tuple(c.name for c in failed)},
        key=key if key != name else "",
    )


def assert_check(check: CheckResult) -> CheckResult:
    """Return ``check`` if it passed; otherwise raise :class:`CheckFailed` with its detail."""
    if not check.passed:
        raise CheckFailed(f"check {check.name} failed:\n{check.detail}")
    return check


# --------------------------------------------------------------------------- internals


def _every(
    result: SampleResult,
    *,
    name: str,
    passed: bool,
    expectation: str,
    outcome: str,
    evidence: Mapping[str, object],
    is_bad: Callable[[Response], bool],
) -> CheckResult:
    """A batch check's result with a status table and examples of the offending responses."""
    n = result.total
    header = f"expected {expectation} ({result.method} {result.path} from {result.source})"
    if n == 0:
        passed = False
        lines = [f"{header}; no responses: nothing was verified"]
    else:
        lines = [f"{header}; of {n} responses {outcome}", _status_table(result)]
        if not passed:
            lines += _examples(r for r in result.responses if is_bad(r))
    return CheckResult(
        name=name,
        passed=passed,
        detail="\n".join(lines),
        evidence={
            **evidence,
            "total": n,
            "status": result.status_counts(),
            "errors": result.errors(),
        },
    )


def _status_table(result: SampleResult) -> str:
    rows = [("status", "count", "share", "rbac", "overloaded")]
    for code, count in result.status_counts().items():
        group = [r for r in result.responses if r.status == code]
        rows.append(
            (
                str(code) if code else "0 (no response)",
                str(count),
                f"{count / result.total * 100:.1f}%",
                str(sum(1 for r in group if r.rbac_denied)),
                str(sum(1 for r in group if r.overloaded)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(r))]) for r in rows
    )


def _examples(bad: Iterable[Response], limit: int = 3) -> list[str]:
    """One example per distinct (status, error/body) among the offending responses."""
    seen: dict[tuple[int, str], int] = {}
    for r in bad:
        key = (r.status, r.error or _clip(r.body_text))
        seen[key] = seen.get(key, 0) + 1
    lines = [
        f"e.g. status {status} x{count}: {what or '(empty body)'}"
        for (status, what), count in sorted(seen.items(), key=lambda kv: -kv[1])[:limit]
    ]
    if len(seen) > limit:
        lines.append(f"... and {len(seen) - limit} other kinds")
    return lines


def _clip(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= _EXAMPLE_CHARS else one_line[: _EXAMPLE_CHARS - 3] + "..."


def _fmt_counts(counts: Mapping[int, int]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in counts.items()) + "}"
