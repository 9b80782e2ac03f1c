"""Routing expectations derived from the routes themselves (VirtualServices or Gateway API
HTTPRoutes), and the checks over them.

* :func:`route_for` (the route oracle) picks the HTTP route a request takes;
  :func:`rule_for` the HTTPRoute rule (:mod:`harness.istio.oracles.httproute`).
* :func:`expected_split` is that route's traffic proportions by destination (subset, or host
  without one), in percent: Envoy routes by each weight's share of the total;
  :func:`expected_rule_split` the same for an HTTPRoute rule, by backend Service.
* :class:`Attribution` says which destination answered a response: the responding pod's labels
  against the Service's selector and the DestinationRule subset's labels (:func:`attribution`),
  or against the backendRef Service's selector (:func:`backend_attribution`). It refuses
  overlapping destinations (a pod selected by two routed destinations cannot be attributed, so
  no exact expectation exists).
* :func:`converge_split` waits until the split conforms several batches in a row (config
  propagates asynchronously); :func:`split_check` is the verdict on fresh traffic.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Unpack, cast

from harness import wait
from harness.backends.base import Workload
from harness.errors import UnsupportedFeature, WaitTimeout
from harness.istio import Bundle, HttpRoute
from harness.istio.model import RouteRule, Service, labels_match
from harness.istio.oracles import httproute, routing
from harness.traffic import stats
from harness.traffic.checks import CheckResult
from harness.traffic.client import Response, SampleOptions, Sampler, SampleResult, TrafficTarget
from harness.traffic.design import Design
from harness.traffic.sequential import SequentialRun, run_sequential

# --------------------------------------------------------------------------- which route
# The route oracle decides (harness/istio/oracles/routing.py); re-exported for the suites.
route_for = routing.route_for
rule_for = httproute.rule_for


def expected_split(route: HttpRoute) -> dict[str, float]:
    """Each destination's expected share in percent: its weight over the route's total weight."""
    return {k: round(v * 100, 4) for k, v in routing.proportions(route).items()}


def expected_rule_split(rule: RouteRule) -> dict[str, float]:
    """Each backend Service's expected share in percent: its weight over the rule's total weight."""
    return {k: round(v * 100, 4) for k, v in httproute.proportions(rule).items()}


def fmt_split(expected: Mapping[str, float]) -> str:
    return "/".join(f"{k}={v:g}" for k, v in expected.items())


# --------------------------------------------------------------------------- who answered

#: the category of a response that is not a 200 from an app pod (any such response fails a split)
NOT_200 = "(not a 200 from the app)"


@dataclass(frozen=True)
class Attribution:
    """Which routed destination each pod belongs to (only pods of the routed service)."""

    categories: tuple[str, ...]
    pod_category: Mapping[str, str]

    def counts(self, result: SampleResult, only_status: int | None = 200) -> dict[str, int]:
        out: Counter[str] = Counter()
        for r in result.responses:
            if only_status is not None and r.status != only_status:
                continue
            if not r.pod:
                continue
            out[self.pod_category.get(r.pod, f"{r.pod} (in no routed destination)")] += 1
        return dict(out)

    def category(self, response: Response) -> str:
        """The routed destination that answered ``response`` (a 200 from a routed pod), else a label."""
        if response.status != 200 or not response.pod:
            return NOT_200
        return self.pod_category.get(response.pod, f"{response.pod} (in no routed destination)")

    def pods(self, category: str) -> list[str]:
        return sorted(p for p, c in self.pod_category.items() if c == category)


def attribution(bundle: Bundle, route: HttpRoute, workloads: Sequence[Workload]) -> Attribution:
    """Attribute pods to the route's destinations via the Service selector and subset labels."""
    targets: list[tuple[str, Service, Mapping[str, str]]] = []
    for d in route.destinations:
        service = bundle.service_for(d.fqdn)
        if service is None:
            raise LookupError(f"no Service for route destination {d.fqdn}")
        subset_labels: Mapping[str, str] = {}
        if d.subset:
            rules = [dr for dr in bundle.destination_rules_for(d.fqdn) if dr.subset(d.subset)]
            if not rules:
                raise LookupError(f"no DestinationRule defines subset {d.subset} of {d.fqdn}")
            subset_labels = rules[0].subset(d.subset).labels  # type: ignore[union-attr]
        targets.append((d.subset or d.host, service, subset_labels))
    return _attribute(targets, workloads, "subsets")


def backend_attribution(bundle: Bundle, rule: RouteRule, workloads: Sequence[Workload]) -> Attribution:
    """Attribute pods to an HTTPRoute rule's backendRefs via each backend Service's selector."""
    targets: list[tuple[str, Service, Mapping[str, str]]] = []
    for ref in rule.backend_refs:
        service = bundle.service_for(ref.fqdn)
        if service is None:
            raise LookupError(f"no Service {ref.namespace}/{ref.name} for the HTTPRoute's backendRef")
        targets.append((ref.name, service, {}))
    return _attribute(targets, workloads, "backend Services")


def _attribute(
    targets: Sequence[tuple[str, Service, Mapping[str, str]]], workloads: Sequence[Workload], what: str
) -> Attribution:
    """Each app pod to the one destination (category) whose Service selector and extra labels
    select it; UnsupportedFeature when two destinations select the same pod."""
    pod_category: dict[str, str] = {}
    categories: list[str] = []
    for category, service, extra in targets:
        if category not in categories:
            categories.append(category)
        for w in workloads:
            if w.namespace != service.namespace or w.role != "app":
                continue
            if not (labels_match(service.selector, w.labels) and labels_match(extra, w.labels)):
                continue
            other = pod_category.get(w.name)
            if other is not None and other != category:
                raise UnsupportedFeature(
                    f"{what} {other} and {category} both select pod {w.name}: responses cannot be "
                    f"attributed to one destination. Fix: make the routed {what}' selectors disjoint"
                )
            pod_category[w.name] = category
    empty = [c for c in categories if c not in pod_category.values()]
    if empty:
        raise LookupError(f"routed destinations {empty} select no running pod: the split cannot be observed")
    return Attribution(tuple(categories), pod_category)


# --------------------------------------------------------------------------- converge and check


@dataclass(frozen=True)
class Convergence:
    seconds: float
    batches: int
    requests: int


def converge_split(
    sampler: Sampler,
    mesh: TrafficTarget,
    who: Attribution,
    expected: Mapping[str, float],
    *,
    batch: int = 200,
    consecutive: int = 3,
    timeout: float = 30.0,
    alpha_batch: float = 0.01,
    **sample_kwargs: Unpack[SampleOptions],
) -> Convergence:
    """Sample batches until ``consecutive`` in a row conform to ``expected`` (at ``alpha_batch``).

    A signal to start the real check, not the verdict. Raises WaitTimeout with the last
    batch's observed-versus-expected table.
    """
    state = stats.SequentialWeights(expected, alpha_batch=alpha_batch, required_consecutive=consecutive)
    sent = 0
    started = time.perf_counter()

    def poll() -> bool:
        nonlocal state, sent
        result = sampler.sample(mesh, n=batch, **sample_kwargs)
        sent += result.total
        counts = who.counts(result)
        non_200 = result.total - sum(counts.values())
        if non_200:
            counts = {**counts, NOT_200: non_200}
        state = state.observe(counts)
        return state.converged

    try:
        wait.until(
            poll,
            what=f"the split to converge to {fmt_split(expected)} ({consecutive} batches of {batch} in a row)",
            timeout=timeout,
            interval=0.0,
            hint="check the VirtualService weights, the DestinationRule subsets and that every proxy ACKed",
        )
    except WaitTimeout as e:
        if state.last is not None:
            e.add_note("last batch:\n" + state.last.table())
        raise
    return Convergence(time.perf_counter() - started, state.batches, sent)


def split_check(
    result: SampleResult,
    who: Attribution,
    expected: Mapping[str, float],
    design: Design,
    *,
    request: str = "",
) -> CheckResult:
    """The responses split over the routed destinations as configured, and every one was a 200."""
    counts = who.counts(result)
    verdict = stats.check_weights(
        expected, counts, alpha=design.alpha, power=design.power, min_deviation=design.min_deviation
    )
    non_200 = result.total - sum(counts.values())
    detail = verdict.table()
    if non_200:
        detail += f"\nnote: {non_200} of {result.total} responses were not a 200 from the app: {result.status_counts()}"
    return CheckResult(
        name=f"split({fmt_split(expected)}) {request or f'{result.method} {result.path}'} from {result.source}",
        passed=verdict.passed and non_200 == 0,
        detail=detail,
        evidence={
            "verdict": verdict,
            "summary": verdict.summary(),
            "counts": counts,
            "status": result.status_counts(),
        },
    )


def sequential_split(
    sampler: Sampler,
    mesh: TrafficTarget,
    who: Attribution,
    expected: Mapping[str, float],
    design: Design,
    **sample_kwargs: Unpack[SampleOptions],
) -> SequentialRun:
    """Send until the sequential check of ``expected`` decides (about half the fixed-n on a correct mesh)."""
    plan = stats.sequential_plan(
        expected, alpha=design.alpha, power=design.power, min_deviation=design.min_deviation
    )
    return run_sequential(sampler, mesh, plan, who.category, **sample_kwargs)


def sequential_split_check(
    run: SequentialRun, expected: Mapping[str, float], *, request: str = ""
) -> CheckResult:
    """The verdict of :func:`sequential_split`: the split as configured and every response a 200."""
    result = run.result
    verdict = run.verdict
    return CheckResult(
        name=f"split({fmt_split(expected)}) {request or f'{result.method} {result.path}'} from {result.source}",
        passed=verdict.passed,
        detail=verdict.table(),
        evidence={
            "verdict": verdict,
            "summary": verdict.summary(),
            "n": verdict.n,
            "fixed_n": verdict.fixed_n,
            "status": result.status_counts(),
        },
    )


def split_toward(
    running: Mapping[str, float], asserted: Mapping[str, float]
) -> tuple[str, Callable[[CheckResult], bool]]:
    """Failure reason of a split negative: the observed split is the one the mesh runs, not the
    asserted one (every category's observed share nearer its running share), all answered 200."""
    run, want = _shares(running), _shares(asserted)

    def holds(check: CheckResult) -> bool:
        verdict = check.evidence.get("verdict")
        categories = getattr(verdict, "categories", ())
        status = cast("Mapping[object, int] | None", check.evidence.get("status"))
        all_200 = set(status) <= {200, "200"} if status is not None else check.evidence.get("non_200") == 0
        return (
            bool(categories)
            and all_200
            and all(
                abs(c.observed_share - run.get(c.name, 0.0)) < abs(c.observed_share - want.get(c.name, 0.0))
                for c in categories
                if run.get(c.name, 0.0) != want.get(c.name, 0.0)
            )
        )

    return (
        f"the observed split is the running {fmt_split(running)}, not the asserted {fmt_split(asserted)}",
        holds,
    )


def _shares(split: Mapping[str, float]) -> dict[str, float]:
    total = sum(split.values())
    return {k: v / total for k, v in split.items()}
