"""Unit tests for harness.istio.loader: files -> Documents, every user mistake a ConfigProblem."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import paths
from harness.errors import ConfigError
from harness.istio.loader import Document, iter_files, load_paths, load_text, parse_text, read_paths

DATA = Path(__file__).parent / "data"
MANIFESTS = paths.MANIFESTS


def test_manifests_load_in_sorted_file_order() -> None:
    docs = load_paths([MANIFESTS])
    files = [Path(d.file).name for d in docs]
    assert files == sorted(files)
    assert docs[0].ref == "Namespace/sample"
    assert docs[0].namespace is None
    refs = {d.ref for d in docs}
    assert "VirtualService/sample/microservice-1-ingress" in refs
    assert "Deployment/trusted-namespace/client" in refs
    assert all(d.index >= 1 and d.line >= 1 for d in docs)


def test_document_fields() -> None:
    (doc,) = load_text(
        "# leading comment\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: ns}\n",
        "x.yaml",
    )
    assert (doc.file, doc.index, doc.api_version, doc.kind, doc.name, doc.namespace) == (
        "x.yaml",
        1,
        "apps/v1",
        "Deployment",
        "d",
        "ns",
    )
    assert (doc.group, doc.version, doc.ref, doc.line) == ("apps", "v1", "Deployment/ns/d", 2)
    assert doc.spec == {}
    assert doc.body["metadata"]["name"] == "d"


def test_directory_is_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {}}}\n"
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "b" / "2.yml").write_text(cm.format("two"))
    (tmp_path / "a.yaml").write_text(cm.format("one"))
    (tmp_path / ".hidden" / "x.yaml").write_text(cm.format("hidden"))
    (tmp_path / "notes.txt").write_text("not yaml")
    assert [d.name for d in load_paths([tmp_path])] == ["one", "two"]
    assert [p.name for p in iter_files([tmp_path])] == ["a.yaml", "2.yml"]


def test_file_given_twice_is_read_once(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n")
    assert len(load_paths([f, tmp_path])) == 1


def test_missing_path_and_empty_dir_are_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as info:
        load_paths([tmp_path / "nope.yaml", tmp_path / "empty"])
    messages = [p.message for p in info.value.problems]
    assert messages == ["no such file or directory", "directory holds no *.yaml or *.yml files"]
    assert "nope.yaml" in str(info.value)


def test_invalid_yaml_reports_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        load_paths([DATA / "invalid-yaml.yaml"])
    (problem,) = info.value.problems
    assert problem.file.endswith("invalid-yaml.yaml")
    assert problem.document == 1
    assert "invalid YAML at line 8, column 7" in problem.message
    assert "starts at line 7" in problem.message
    assert problem.fix


def test_yaml_error_in_later_document_keeps_earlier_ones() -> None:
    docs, problems = parse_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nx: [\n", "f.yaml")
    assert [d.name for d in docs] == ["a"]
    assert problems[0].document == 2
    assert "invalid YAML at line 6, column 1" in problems[0].message


def test_duplicate_key_is_an_error() -> None:
    _, problems = parse_text("apiVersion: v1\nkind: ConfigMap\nkind: Secret\nmetadata: {name: a}\n", "f")
    assert "duplicate key 'kind'" in problems[0].message
    assert "line 3" in problems[0].message
    assert problems[0].fix == "keep only one of the duplicate keys"


def test_missing_metadata_name() -> None:
    with pytest.raises(ConfigError) as info:
        load_paths([DATA / "missing-name.yaml"])
    (problem,) = info.value.problems
    assert (problem.document, problem.path, problem.kind) == (2, "metadata.name", "ServiceAccount")
    assert problem.message == "missing metadata.name"
    assert "document 2 ServiceAccount/<no name>" in str(info.value)


def test_document_shape_problems_are_all_collected() -> None:
    text = "- a list\n---\nplain string\n---\nkind: X\nmetadata: []\n---\napiVersion: 3\nkind: Y\nmetadata: {name: n}\n"
    docs, problems = parse_text(text, "f.yaml")
    assert docs == []
    got = [(p.document, p.path, p.message) for p in problems]
    assert got == [
        (1, "", "document is a list, not a mapping (a Kubernetes object)"),
        (2, "", "document is a string, not a mapping (a Kubernetes object)"),
        (3, "apiVersion", "missing apiVersion"),
        (3, "metadata", "metadata is a list, not a mapping"),
        (4, "apiVersion", "apiVersion must be a non-empty string, got an integer 3"),
    ]


def test_problems_from_several_files_are_raised_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_paths([DATA / "invalid-yaml.yaml", DATA / "missing-name.yaml", tmp_path / "gone"])
    assert len(info.value.problems) == 3
    assert len({p.file for p in info.value.problems}) == 3


def test_list_is_flattened_and_empty_documents_skipped() -> None:
    docs = load_paths([DATA / "list-kind.yaml"])
    assert [(d.name, d.index, d.item) for d in docs] == [("first", 1, 0), ("second", 1, 1)]
    assert docs[1].field_path("data.b") == "items[1].data.b"
    assert docs[1].problem("data", "m", "f").path == "items[1].data"


def test_list_item_problems_carry_the_item_path() -> None:
    _, problems = parse_text("apiVersion: v1\nkind: List\nitems:\n- kind: ConfigMap\n- 5\n", "f")
    assert [p.path for p in problems] == ["items[0].apiVersion", "items[0].metadata.name", "items[1]"]


def test_timestamps_stay_strings() -> None:
    (doc,) = load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {day: 2024-01-02}\n")
    assert doc.body["data"]["day"] == "2024-01-02"


def test_read_paths_returns_documents_and_problems() -> None:
    result = read_paths([DATA / "missing-name.yaml"])
    assert [d.name for d in result.documents] == ["fine"]
    assert len(result.problems) == 1
    assert result.files == (str(DATA / "missing-name.yaml"),)


def test_non_utf8_file(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes(b"kind: \xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_paths([f])


def test_document_is_hashable_and_frozen() -> None:
    (doc,) = load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    assert isinstance(hash(doc), int)
    with pytest.raises(AttributeError):
        doc.name = "b"  # type: ignore[misc]
    assert isinstance(doc, Document)


def test_recursive_alias_is_a_problem_and_shared_aliases_are_fine() -> None:
    _, problems = parse_text("apiVersion: v1\nkind: ConfigMap\nmetadata: &m {name: a, x: *m}\n", "f")
    assert "contains itself through a YAML alias" in problems[0].message
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: &l {x: y}, annotations: *l}\n"
    assert parse_text(text, "f")[1] == []
