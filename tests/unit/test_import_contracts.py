"""The import-linter layers contract (pyproject.toml) names every module of harness/.

`lint-imports` (``tox -e lint``) checks the imports between the modules a layer names, and says
nothing about a module no layer names: a new top-level module would escape the contract unnoticed.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from harness import paths

LAYERS = "harness layers"  # the start of the layers contract's name


def top_level_modules() -> set[str]:
    """harness.X for every module and package directly under harness/ (not harness itself)."""
    found = {
        f"harness.{p.stem}" for p in paths.HARNESS.glob("*.py") if p.stem not in ("__init__", "__main__")
    }
    found |= {f"harness.{p.parent.name}" for p in paths.HARNESS.glob("*/__init__.py")}
    return found


def layered(contract: Mapping[str, Any]) -> set[str]:
    """The modules a layers contract names (``a | b``, ``(optional)``)."""
    return {m for layer in contract["layers"] for m in re.split(r"[|()\s]+", layer) if m}


def unlayered(modules: Iterable[str], contract: Mapping[str, Any]) -> list[str]:
    return sorted(set(modules) - layered(contract))


def layers_contract() -> Mapping[str, Any]:
    config = tomllib.loads((paths.CHECKOUT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["name"].startswith(LAYERS)]
    return contract


def test_every_harness_module_stands_in_a_layer() -> None:
    modules = top_level_modules()
    assert {"harness.errors", "harness.backends", "harness.cli"} <= modules  # the listing sees both kinds
    missing = unlayered(modules, layers_contract())
    assert not missing, f"add {missing} to a layer of the {LAYERS!r} contract in pyproject.toml"


def test_a_module_left_out_of_the_layers_is_named() -> None:
    """Negative control: the check above fails, naming the module, when a layer drops it."""
    contract = dict(layers_contract())
    contract["layers"] = [layer.replace("harness.proxy_stats", "") for layer in contract["layers"]]
    assert unlayered(top_level_modules(), contract) == ["harness.proxy_stats"]
