"""Waiting for istiod on a cluster: its debug endpoints (syncz, configz, metrics) read through
port-forwards to each istiod pod, and ``wait.until`` over :class:`propagation.Convergence` until every
proxy of the mesh has ACKed the config istiod holds (the decision itself is pure, in propagation.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from harness import wait
from harness.backends.istiod import PushCounters, parse_syncz
from harness.backends.kube import istio_install, propagation
from harness.backends.kube.discovery import ISTIOD_MONITORING_PORT, Discovery
from harness.backends.kube.portforward import Forwards
from harness.errors import WaitTimeout


class IstiodSync:
    """istiod's view of the mesh's proxies, and the wait until they are in sync."""

    def __init__(
        self,
        discovery: Discovery,
        forwards: Forwards,
        http: httpx.Client,
        *,
        ready_timeout: float,
        clock: wait.Clock = wait.REAL_CLOCK,
    ) -> None:
        self._discovery, self._forwards, self._http = discovery, forwards, http
        self._ready_timeout, self._clock = ready_timeout, clock

    def get(self, pod: str, path: str) -> httpx.Response:
        """GET ``path`` on istiod pod ``pod``'s monitoring port (through its forward); raises on HTTP errors."""
        pf = self._forwards.get(
            istio_install.ISTIO_NAMESPACE, pod, ISTIOD_MONITORING_PORT, ready_path="/metrics"
        )
        r = self._http.get(pf.url + path)
        r.raise_for_status()
        return r

    def push_counters(self) -> dict[str, PushCounters]:
        """Each istiod replica's push counters now: the baseline an apply's convergence is judged from."""
        out = {}
        for pod in self._discovery.istiod_pods():
            try:
                out[pod] = PushCounters.from_metrics(self.get(pod, "/metrics").text)
            except httpx.HTTPError:
                continue  # no baseline for this replica: the push check is skipped for it
        return out

    def _sample(self, with_config: bool) -> list[propagation.IstiodSample]:
        out = []
        for pod in self._discovery.istiod_pods():
            proxies = parse_syncz(self.get(pod, "/debug/syncz").json(), pod)
            config = propagation.config_index(self.get(pod, "/debug/configz").json()) if with_config else {}
            counters = PushCounters.from_metrics(self.get(pod, "/metrics").text)
            out.append(propagation.IstiodSample(pod, tuple(proxies), config, counters))
        return out

    def wait_converged(
        self,
        expectations: Sequence[propagation.ConfigExpectation],
        baseline: Mapping[str, PushCounters] | None,
        *,
        quiet_polls: int = 2,
        timeout: float | None = None,
    ) -> float:
        """Wait until every expected proxy ACKed istiod's current config, istiod holds ``expectations``
        and (from ``baseline``) has pushed since; ``quiet_polls`` successes in a row. Returns seconds."""
        t0 = self._clock.now()
        conv = propagation.Convergence(
            lambda: self._sample(bool(expectations)),
            expected_proxies=self._discovery.expected_proxies(),
            expectations=expectations,
            baseline=baseline,
        )
        try:
            wait.until(
                conv,
                what="every proxy to ACK the current config",
                timeout=self._ready_timeout if timeout is None else timeout,
                interval=0.25,
                converge=quiet_polls,
                retry_on=(httpx.HTTPError, ValueError),
                hint="`istioctl proxy-status` shows the same sync state",
                clock=self._clock,
            )
        except WaitTimeout as e:
            e.add_note(f"last seen: {conv.describe()}")
            raise
        return self._clock.now() - t0
