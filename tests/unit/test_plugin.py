"""harness.plugin: the load fixture's teardown phase."""

from __future__ import annotations


def test_teardown_hook_puts_a_running_load_into_phase_teardown() -> None:
    """What fixtures undo after the test's body (a fault removed) is charted as phase "teardown"."""
    from types import SimpleNamespace

    from harness.plugin import pytest_runtest_teardown

    class Run:
        def __init__(self, running: bool, fail: bool = False) -> None:
            self.running, self.fail, self.phases = running, fail, []

        def phase(self, name: str) -> None:
            if self.fail:
                raise ValueError("phase name 'teardown' is already used")
            self.phases.append(name)

    running, stopped, broken = Run(True), Run(False), Run(True, fail=True)
    for run in (running, stopped, broken):
        pytest_runtest_teardown(SimpleNamespace(funcargs={"load": run}))  # type: ignore[arg-type]
    pytest_runtest_teardown(SimpleNamespace(funcargs={}))  # type: ignore[arg-type]
    assert (running.phases, stopped.phases, broken.phases) == (["teardown"], [], [])
