"""Ctrl-C of `meshproof load` and of a pytest run with background load leaves no Locust process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import wait
from harness.backends.base import Backend
from harness.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
# Runs argv[1:] with SIGINT at its default disposition. A job started in the background by a
# non-interactive shell (`cmd &` in a CI script) inherits SIGINT ignored, and Python then installs
# no KeyboardInterrupt handler: the Ctrl-C these tests send would be dropped, proving nothing.
DEFAULT_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
]


def _locusts(marker: str) -> list[str]:
    """Locust processes whose command line names ``marker`` (their work dir)."""
    out = subprocess.run(["pgrep", "-af", "locust"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if marker in line and "pgrep" not in line]


def _interrupt_once_loaded(argv: list[str], marker: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.Popen(
        [*DEFAULT_SIGINT, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait.until(
            lambda: _locusts(marker) or p.poll() is not None,
            what=f"a Locust process of {marker}",
            timeout=180,
            interval=0.2,
        )
        assert p.poll() is None, (
            f"exited {p.returncode} before Locust ran: {p.stderr.read() if p.stderr else ''}"
        )
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def test_ctrl_c_of_meshproof_load_leaves_no_locust(mesh: Backend, settings: Settings) -> None:
    state = str(settings.state_dir.resolve())
    marker = f"{state}/load/"
    exe = str(Path(sys.executable).with_name("meshproof"))
    done = _interrupt_once_loaded([exe, "load", "--state", state, "--users", "4", "--duration", "0"], marker)
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr
    assert not _locusts(marker)


def test_ctrl_c_of_pytest_under_load_leaves_no_locust(
    mesh: Backend, settings: Settings, tmp_path: Path
) -> None:
    state = str(settings.state_dir.resolve())
    basetemp = tmp_path / "inner"
    test = "suites/test_under_load.py::test_fault_injection_shares_under_load"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        test,
        "--state",
        state,
        "-p",
        "no:cacheprovider",
        f"--basetemp={basetemp}",
    ]
    done = _interrupt_once_loaded(argv, str(basetemp))
    assert done.returncode != 0  # interrupted (2) or failed, but never a pass it did not earn
    wait.until(
        lambda: not _locusts(str(basetemp)), what="no Locust process of the interrupted run", timeout=15
    )
