"""harness.istio.analyzer: documents to Istio and Istio's messages back onto the user's files.

Istio's own analyzer is faked here (the mapping is what is tested); test_validate runs the real
binary built from the pinned module.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.istio import analyzer
from harness.istio.analyzer import Analysis, IstioMessage
from harness.istio.loader import load_text

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: sample}
spec:
  host: microservice-1
  trafficPolicy:
    outlierDetection: {consecutiveErrors: 5}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: sample}
spec:
  hosts: [microservice-1]
  http:
  - route:
    - destination: {host: microservice-1, subset: v3}
"""


class FakeIstio:
    def __init__(self, messages: list[dict[str, Any]], source_errors: tuple[str, ...] = ()) -> None:
        self.messages = messages
        self.source_errors = source_errors
        self.requests: list[Mapping[str, Any]] = []

    def __call__(self, request: Mapping[str, Any]) -> Analysis:
        self.requests.append(request)
        return Analysis(tuple(IstioMessage.from_json(m) for m in self.messages), self.source_errors)


def test_each_document_is_its_own_source_and_context_is_marked() -> None:
    docs = load_text(DR, "f.yaml")
    req = analyzer.request_for(docs[:1], docs[1:], namespace="sample")
    assert [(s["name"], s["context"]) for s in req["sources"]] == [
        ("doc-0.yaml", False),
        ("ctx-0.yaml", True),
    ]
    assert "consecutiveErrors: 5" in req["sources"][0]["text"]
    assert req["namespace"] == "" and req["istioNamespace"] == "istio-system"  # every namespace


def test_messages_map_to_file_document_field_and_level() -> None:
    docs = load_text(DR, "f.yaml")
    fake = FakeIstio(
        [
            {
                "code": "IST0133",
                "level": "Warning",
                "message": "Schema validation warning: outlier detection consecutive errors is deprecated",
                "kind": "DestinationRule",
                "file": "doc-0.yaml",
                "line": 1,
            },
            {
                "code": "IST0101",
                "level": "Error",
                "message": 'Referenced host+subset in destinationrule not found: "microservice-1+v3"',
                "file": "doc-1.yaml",
                "line": 9,
                "fieldLines": {
                    "{.spec.http[0].route[0].destination}": 9,
                    "{.spec.http[0].route[0].destination.host}": 9,
                },
            },
            {
                "code": "IST0102",
                "level": "Info",
                "message": "namespace not injected",
                "file": "doc-1.yaml",
                "line": 1,
            },
            {"code": "IST0102", "level": "Warning", "message": "about Istio's default objects", "file": ""},
            {"code": "IST0000", "level": "Error", "message": "internal", "file": ""},
        ]
    )
    v = analyzer.verdict(fake, docs)
    (warning,) = v.warnings
    assert (warning.file, warning.document, warning.path) == (
        "f.yaml",
        1,
        "spec.trafficPolicy.outlierDetection.consecutiveErrors",
    )
    assert warning.message.startswith("Istio IST0133 warning: Schema validation warning: outlier detection")
    assert "Envoy's default applies" in warning.fix
    first, second = v.errors
    assert (first.file, first.document, first.path) == (
        "f.yaml",
        2,
        "spec.http[0].route[0].destination.subset",
    )
    assert first.fix.startswith("define that subset in a DestinationRule")
    assert second.file == "<istio>" and "internal" in second.message
    assert [i.path for i in v.infos] == [""]


def test_context_messages_map_onto_context_documents() -> None:
    docs = load_text(DR, "f.yaml")
    fake = FakeIstio(
        [{"code": "IST0101", "level": "Error", "message": "subset", "file": "ctx-0.yaml", "line": 1}]
    )
    (err,) = analyzer.verdict(fake, docs[:1], docs[1:]).errors
    assert (err.file, err.document) == ("f.yaml", 2)


def test_source_errors_are_errors_on_their_document() -> None:
    docs = load_text(DR, "f.yaml")
    fake = FakeIstio(
        [],
        (
            '1 error occurred:\n\t* errors parsing content "doc-1.yaml": 1 error occurred:\n'
            '\t* error processing doc-1.yaml[0]: unknown field "x"\n\t* something else\n\n',
        ),
    )
    first, second = analyzer.verdict(fake, docs).errors
    assert (first.file, first.document) == ("f.yaml", 2)
    assert first.message == 'Istio cannot read it: unknown field "x"'
    assert second.message == "Istio: something else"
    assert second.file == "<istio>"


@pytest.mark.parametrize(
    ("message", "fix"),
    [
        ("weight -20 < 0", "use a weight of 0 or more"),
        ("total destination weight = 0", "give at least one destination a weight above 0"),
        ("percentage 200 is not in range", "percentage from 0.0 to 100.0"),
        ("invalid duration", "write a duration"),
    ],
)
def test_fix_hints(message: str, fix: str) -> None:
    m = IstioMessage("IST0106", "Error", message)
    assert fix in analyzer._fix(m, "")


def test_run_binary_speaks_json(tmp_path: Path) -> None:
    script = tmp_path / "fake-analyze"
    script.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        'echo \'{"messages": [{"code": "IST0133", "level": "Warning", "message": "m", "file": "doc-0.yaml", '
        '"line": 3}], "sourceErrors": []}\'\n'
    )
    script.chmod(0o755)
    got = analyzer.run_binary(script)({"sources": []})
    assert got.messages[0].code == "IST0133" and got.messages[0].line == 3


def _counting_analyzer(tmp_path: Path, code: str) -> tuple[Path, Path]:
    """A fake binary that answers one message with ``code`` and appends a line to a file per run."""
    runs = tmp_path / "runs"
    script = tmp_path / "fake-analyze"
    script.write_text(
        f"#!/bin/sh\ncat >/dev/null\necho run >> {runs}\n"
        f'echo \'{{"messages": [{{"code": "{code}", "level": "Warning", "message": "m", '
        '"file": "doc-0.yaml"}], "sourceErrors": []}\'\n'
    )
    script.chmod(0o755)
    return script, runs


def test_run_binary_answers_a_request_it_saw_from_its_cache(tmp_path: Path) -> None:
    script, runs = _counting_analyzer(tmp_path, "IST0133")
    crd = tmp_path / "crd.json"
    crd.write_text("{}")
    cache = tmp_path / "analyses"
    request = {"sources": [{"name": "doc-0.yaml", "text": "a"}], "crds": [str(crd)]}
    first = analyzer.run_binary(script, cache=cache)(request)
    again = analyzer.run_binary(script, cache=cache)(dict(request))  # another runner: another process
    assert first == again and again.messages[0].code == "IST0133"
    assert runs.read_text().count("run") == 1
    assert len(list(cache.glob("*.json"))) == 1

    # Negative controls: another request, an edited CRD file, a rebuilt binary each run it again.
    analyzer.run_binary(script, cache=cache)({**request, "sources": [{"name": "doc-0.yaml", "text": "b"}]})
    assert runs.read_text().count("run") == 2
    crd.write_text('{"kind": "CustomResourceDefinition"}')
    analyzer.run_binary(script, cache=cache)(request)
    assert runs.read_text().count("run") == 3
    script.write_text(script.read_text().replace("IST0133", "IST0106"))
    rebuilt = analyzer.run_binary(script, cache=cache)(request)
    assert runs.read_text().count("run") == 4 and rebuilt.messages[0].code == "IST0106"


def test_run_binary_without_a_cache_runs_every_time(tmp_path: Path) -> None:
    script, runs = _counting_analyzer(tmp_path, "IST0133")
    for _ in range(2):
        analyzer.run_binary(script)({"sources": []})
    assert runs.read_text().count("run") == 2
