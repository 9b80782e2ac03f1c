"""converge_split (harness/traffic/split.py): waits until a split conforms several batches in a
row, over the sampler with an httpx MockTransport fake whose split switches after a few batches."""

from __future__ import annotations

import random
import threading

import httpx
import pytest

from harness.errors import WaitTimeout
from harness.traffic import stats
from harness.traffic.split import Attribution, converge_split

from .test_client import FakeBackend, greet, sampler

WHO = Attribution(("v1", "v2"), {"microservice-1-v1-0": "v1", "microservice-1-v2-0": "v2"})


class SwitchingSplit:
    """An ingress whose v1/v2 split switches from 90/10 to 50/50 after ``switch_after`` batches
    (None: never). Deterministic: a seeded generator, drawn under a lock."""

    def __init__(self, batch: int, switch_after: int | None, seed: int = 7) -> None:
        self.batch, self.switch_after = batch, switch_after
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.hosts: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            batch_no = self.requests // self.batch
            self.requests += 1
            self.hosts.add(request.headers["host"])
            converged = self.switch_after is not None and batch_no >= self.switch_after
            version = "v2" if self.rng.random() < (0.5 if converged else 0.1) else "v1"
        return httpx.Response(200, json=greet(version=version, pod=f"microservice-1-{version}-0"))


def _batches_to_converge(split: SwitchingSplit, consecutive: int) -> int:
    """Batches converge_split needs against ``split``, by replaying its draws batch by batch."""
    state = stats.SequentialWeights({"v1": 50, "v2": 50}, alpha_batch=0.01, required_consecutive=consecutive)
    while not state.converged:
        versions = [
            split(httpx.Request("GET", "http://x/", headers={"host": "x"})) for _ in range(split.batch)
        ]
        v2 = sum(r.json()["version"] == "v2" for r in versions)
        state = state.observe({"v1": split.batch - v2, "v2": v2})
    return state.batches


def test_returns_after_the_split_converges() -> None:
    fake = SwitchingSplit(batch=200, switch_after=3)
    with sampler(fake) as s:
        result = converge_split(
            s,
            FakeBackend(),
            WHO,
            {"v1": 50, "v2": 50},
            batch=200,
            consecutive=3,
            timeout=60,
            host_header="greet.example.com",
            concurrency=4,
        )
    # Batches are sent one after another and every request draws from the one seeded generator,
    # so batch k holds draws 200k..200k+199 whatever the threads do: replaying them says exactly
    # when three conforming batches in a row first happen (3 at 90/10 never conform).
    assert result.batches == _batches_to_converge(SwitchingSplit(batch=200, switch_after=3), 3) >= 6
    assert fake.requests == result.requests == 200 * result.batches
    assert fake.hosts == {"greet.example.com"}  # sample kwargs are passed through


def test_times_out_naming_the_expected_split_with_the_last_batch_table() -> None:
    fake = SwitchingSplit(batch=50, switch_after=None)
    with sampler(fake) as s, pytest.raises(WaitTimeout) as info:
        converge_split(s, FakeBackend(), WHO, {"v1": 50, "v2": 50}, batch=50, timeout=1e-6)
    assert fake.requests == 50  # exactly one batch, then the deadline
    assert "v1=50/v2=50" in str(info.value) and "3 batches of 50 in a row" in str(info.value)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "last batch:" in notes and "FAIL" in notes


def test_a_non_200_counts_against_the_split() -> None:
    with sampler(lambda _: httpx.Response(503, text="no healthy upstream")) as s, pytest.raises(WaitTimeout):
        converge_split(s, FakeBackend(), WHO, {"v1": 50, "v2": 50}, batch=20, consecutive=1, timeout=1e-6)
