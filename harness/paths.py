"""Files of the checkout meshproof runs from, by name (the one place that finds the repository root).

The harness package sits at the top of the checkout, beside the sample service, the manifests, the
suites and the Locust file; every module that needs one of them takes it from here instead of
counting ``parents`` of its own path. Nothing here is read at import time, only paths are built.
"""

from __future__ import annotations

from pathlib import Path

HARNESS = Path(__file__).resolve().parent
CHECKOUT = HARNESS.parent  # the repository root: PYTHONPATH of the subprocesses that import harness
SAMPLE_SERVICE = CHECKOUT / "sample-service"
MANIFESTS = CHECKOUT / "manifests"
SUITES = CHECKOUT / "suites"
LOCUSTFILE = CHECKOUT / "loadtests" / "locustfile.py"
