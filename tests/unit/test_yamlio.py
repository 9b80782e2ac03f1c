"""harness.yamlio writes exactly what yaml.safe_dump writes and reads what yaml.safe_load reads: the local
backend compares a config file's text with a new dump to decide whether anything changed, so writer and
reader must agree byte for byte whichever of them uses libyaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import yamlio

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted([*ROOT.glob("manifests/**/*.yaml"), *ROOT.glob("suites/manifests/**/*.yaml")])


def documents() -> list[object]:
    return [d for f in FILES for d in yaml.safe_load_all(f.read_text()) if d]


def test_uses_libyaml_when_pyyaml_has_it() -> None:
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML without libyaml: the pure-Python safe classes are used")
    assert yamlio.Loader is yaml.CSafeLoader and yamlio.Dumper is yaml.CSafeDumper


@pytest.mark.parametrize(
    "options", [{"sort_keys": False}, {"sort_keys": False, "default_flow_style": False}, {}]
)
def test_dumps_byte_for_byte_what_safe_dump_dumps(options: dict[str, object]) -> None:
    docs = documents()
    assert len(docs) > 20  # the project's manifests and the suites' variants
    for doc in docs:
        assert yamlio.dump(doc, **options) == yaml.safe_dump(doc, **options)
        assert yamlio.load(yamlio.dump(doc, **options)) == yaml.safe_load(yaml.safe_dump(doc, **options))
    assert yamlio.dump_all(docs, sort_keys=False) == yaml.safe_dump_all(docs, sort_keys=False)


def test_loads_only_what_a_safe_loader_loads() -> None:
    with pytest.raises(yaml.YAMLError):
        yamlio.load("!!python/object/apply:os.system ['true']")
    assert yamlio.load("a: [1, 2.5, true, null, '3']") == {"a": [1, 2.5, True, None, "3"]}
