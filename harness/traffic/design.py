"""The statistical design every check states: alpha, power and the smallest deviation caught.

The numbers come from the run's settings (``--alpha``, ``--power``, ``--min-deviation`` or
``MESHPROOF_*``), so a reviewer can demand a stricter design without editing a test. Sample
sizes are always derived from them (:mod:`harness.traffic.stats`), never typed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from harness.traffic import stats


@dataclass(frozen=True)
class Design:
    """Per-check false-failure rate ``alpha``; ``power`` to catch a ``min_deviation`` mis-split."""

    alpha: float = 0.001
    power: float = 0.99
    min_deviation: float = 0.05

    # ---- sample sizes ------------------------------------------------------------------------
    def n_weights(self, expected: Mapping[str, float]) -> int:
        """Requests :func:`stats.check_weights` needs for this split at this design."""
        return stats.sample_size_for_weights(expected, self.alpha, self.power, self.min_deviation)

    def n_proportion(self, expected: float) -> int:
        """Trials :func:`stats.check_proportion` needs for this rate at this design."""
        return stats.sample_size_for_proportion(expected, self.alpha, self.power, self.min_deviation)

    def n_exact(self) -> int:
        """Requests for an all-or-nothing expectation (every response must be X).

        Zero rule: if at least ``min_deviation`` of requests misbehaved, N requests show at
        least one with probability ``power``. A correct mesh never fails such a check.
        """
        return stats.sample_size_for_proportion(1.0, self.alpha, self.power, self.min_deviation)

    # ---- sequential plans ---------------------------------------------------------------------
    def sequential_proportion(self, expected: float) -> stats.SequentialPlan:
        """The SPRT of a share at this design (two-sided: off by ``min_deviation`` either way)."""
        return stats.sequential_proportion_plan(expected, self.alpha, self.power, self.min_deviation)

    def one_sided_proportion(self, bound: float, *, above: bool) -> stats.SequentialPlan:
        """The one-sided SPRT of a share at this design: fails only on evidence beyond ``bound``."""
        return stats.one_sided_proportion_plan(bound, self.alpha, self.power, self.min_deviation, above=above)

    # ---- what a verdict can claim ----------------------------------------------------------------
    @property
    def dev(self) -> str:
        return f"{self.min_deviation * 100:g}pp"

    def weights_confidence(self, expected: Mapping[str, float]) -> str:
        nonzero = [w for w in expected.values() if w > 0]
        if len(nonzero) == 1:
            return self.exact_confidence()
        return f"alpha={self.alpha:g}; power {self.power:g} at {self.dev}"

    def proportion_confidence(self) -> str:
        return f"alpha={self.alpha:g} (exact binomial); power {self.power:g} at {self.dev}"

    def sequential_confidence(self) -> str:
        return f"alpha={self.alpha:g} (SPRT); power {self.power:g} at {self.dev}"

    def exact_confidence(self) -> str:
        return f"exact: no false failures; misses a >={self.dev} leak w.p. <={1 - self.power:.2g}"

    def describe(self) -> str:
        return f"alpha={self.alpha:g} per check, power {self.power:g} at {self.dev}"
