"""The sample service's own Node tests (`npm test`), so the project's test command covers them."""

from __future__ import annotations

import re
import shutil

import pytest

from harness import paths, proc
from harness.errors import CommandFailed

SAMPLE = paths.SAMPLE_SERVICE


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_npm_test_passes() -> None:
    if not (SAMPLE / "node_modules").is_dir():
        pytest.fail(
            "sample-service/node_modules is missing. Fix: run ./scripts/setup (it runs npm ci)", pytrace=False
        )
    try:
        done = proc.run(["npm", "test"], cwd=SAMPLE, timeout=300)
    except CommandFailed as e:
        pytest.fail(f"npm test failed in {SAMPLE}:\n{e.stdout[-6000:]}\n{e.stderr[-3000:]}", pytrace=False)
    output = done.stdout + done.stderr
    passed = re.search(r"^(?:#|ℹ) pass (\d+)$", output, re.MULTILINE)
    failed = re.search(r"^(?:#|ℹ) fail (\d+)$", output, re.MULTILINE)
    assert passed and int(passed.group(1)) > 0, f"npm test ran no tests:\n{output[-3000:]}"
    assert failed and int(failed.group(1)) == 0, output[-3000:]
