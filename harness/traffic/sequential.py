"""Send traffic until a sequential check decides (:mod:`harness.traffic.stats`'s SPRTs).

:func:`run_sequential` drives :meth:`Sampler.sample_until` with a
:class:`~harness.traffic.stats.SequentialCheck`: every ``look_every`` responses, in the order
the requests were issued, each response is classified into a category (a subset, a version,
``"hit"``/``"miss"`` for a rate) and the check looks once. Sending stops as soon as the check
has decided, so a correct mesh is signed off after about half the fixed-n requests and a
broken one usually after the first look.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Unpack

from harness.traffic import stats
from harness.traffic.client import Response, SampleOptions, Sampler, SampleResult, TrafficTarget

__all__ = ["LOOK_EVERY", "SequentialRun", "run_sequential"]

#: Responses between two looks: small against any fixed-n, large against the look's cost.
LOOK_EVERY = 50


@dataclass(frozen=True)
class SequentialRun:
    """The traffic a sequential check used and the state it stopped in."""

    result: SampleResult
    state: stats.SequentialCheck

    @property
    def verdict(self) -> stats.SequentialVerdict:
        return self.state.verdict()

    @property
    def sent(self) -> int:
        """Requests sent, including those in flight when the check decided (not counted)."""
        return self.result.total + self.result.discarded

    def note(self) -> str:
        """E.g. ``"1780 req/s"``: the rate the check's traffic ran at (its N is in the verdict)."""
        rate = self.result.total / self.result.wall_s if self.result.wall_s > 0 else 0.0
        return f"{rate:.0f} req/s"


def run_sequential(
    sampler: Sampler,
    backend: TrafficTarget,
    plan: stats.SequentialPlan,
    classify: Callable[[Response], str],
    *,
    look_every: int = LOOK_EVERY,
    **sample_options: Unpack[SampleOptions],
) -> SequentialRun:
    """Sample until ``plan``'s check decides or ``plan.max_n`` requests were observed.

    ``classify`` maps each response to a category of ``plan.names``; any other name counts
    as traffic where none may go (an immediate, exact FAIL), so map unusable responses
    (errors, non-200s) to a name of their own, e.g. ``"(not a 200 from the app)"``.
    """
    state = plan.start()
    seen = 0

    def decide(prefix: Sequence[Response]) -> bool:
        nonlocal state, seen
        state = state.observe(Counter(classify(r) for r in prefix[seen:]))
        seen = len(prefix)
        return state.decided

    result = sampler.sample_until(backend, decide, max_n=plan.max_n, look_every=look_every, **sample_options)
    return SequentialRun(result, state)
