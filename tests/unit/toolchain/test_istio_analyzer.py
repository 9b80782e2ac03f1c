"""meshproof-analyze's build: the stamp names the module version and the sources it was built from."""

from __future__ import annotations

import json
from pathlib import Path

from harness.toolchain import istio_analyzer
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES


def test_installed_follows_the_stamp(tmp_path: Path) -> None:
    assert istio_analyzer.installed(tmp_path, DEFAULT_ISTIO) is None
    binary = istio_analyzer.binary_path(tmp_path, DEFAULT_ISTIO)
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    stamp = tmp_path / f"istio-{DEFAULT_ISTIO}" / "analyze.json"
    stamp.write_text("not json")
    assert istio_analyzer.installed(tmp_path, DEFAULT_ISTIO) is None
    module = ISTIO_RELEASES[DEFAULT_ISTIO].module_version
    stamp.write_text(json.dumps({"module_version": module, "source_sha256": "stale"}))
    assert istio_analyzer.installed(tmp_path, DEFAULT_ISTIO) is None
    stamp.write_text(json.dumps({"module_version": module, "source_sha256": istio_analyzer._source_digest()}))
    assert istio_analyzer.installed(tmp_path, DEFAULT_ISTIO) == binary
    assert istio_analyzer.ensure(tmp_path, DEFAULT_ISTIO) == binary  # no build when current
