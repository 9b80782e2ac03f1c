"""The shared pieces of the action families: the proof wait and the ledger restore."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.chaos import context
from harness.chaos.actions.common import NotYet, prove, restore_each
from harness.chaos.context import STATE_KEY
from harness.chaos.ledger import Ledger
from harness.errors import BackendError


def test_prove_returns_once_the_effect_shows() -> None:
    reads = [False, False, True]

    def took_effect() -> bool:
        if not reads.pop(0):
            raise NotYet("not yet")
        return True

    prove(took_effect, what="the effect", timeout_s=30.0, failure=lambda: "never")
    assert reads == []


def test_prove_fails_with_what_was_last_seen_read_at_the_deadline() -> None:
    seen = {"reads": 0}

    def never() -> bool:
        seen["reads"] += 1
        raise NotYet(f"read {seen['reads']}")

    with pytest.raises(BackendError) as e:
        prove(
            never, what="the effect", timeout_s=0.2, failure=lambda: f"no effect after {seen['reads']} reads"
        )
    assert str(e.value) == f"no effect after {seen['reads']} reads" and seen["reads"] >= 1


@dataclass(frozen=True)
class _Workload:
    ref: str


class _Mesh:
    def workload(self, pod: str) -> _Workload:
        return _Workload(pod if "/" in pod else f"sample/{pod}")


@pytest.fixture
def conf(tmp_path: Path) -> Iterator[dict[str, str]]:
    context.use(tmp_path, _Mesh())  # type: ignore[arg-type]
    yield {STATE_KEY: str(tmp_path)}
    context.forget(tmp_path)


def test_restore_each_undoes_only_pods_with_an_open_entry_of_that_kind_and_closes_it(
    conf: dict[str, str],
) -> None:
    ledger = Ledger.of(conf)
    ledger.record("x:sample/a", "x", {"pod": "sample/a"})
    ledger.record("y:sample/b", "y", {"pod": "sample/b"})
    undone: list[str] = []

    def undo(backend: object, ref: str) -> str:
        assert isinstance(backend, _Mesh)
        undone.append(ref)
        return ref.upper()

    assert restore_each(["a", "b"], conf, "x", undo) == ["SAMPLE/A"]
    assert undone == ["sample/a"]
    assert [e.kind for e in Ledger.of(conf).entries()] == ["y"]
    assert restore_each("a", conf, "x", undo) == []  # closed: a no-op
