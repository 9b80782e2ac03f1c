"""Read Kubernetes/Istio YAML files into :class:`Document` objects.

This is the YAML edge: raw dicts come in here and leave only inside ``Document.body``. Every
user mistake (unreadable file, invalid YAML, a document that is not an object, a missing
``apiVersion``/``kind``/``metadata.name``) becomes a :class:`~harness.errors.ConfigProblem`;
problems of every file are collected and raised once as a :class:`~harness.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError, ConfigProblem

YAML_SUFFIXES = (".yaml", ".yml")

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader that rejects duplicate keys and keeps timestamps as strings, like Kubernetes."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: the base constructor reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result


def _as_plain_string(loader: Any, node: yaml.ScalarNode) -> str:
    return str(node.value)


# Kubernetes reads dates as strings, and "=" (the YAML 1.1 value key) as a plain string.
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _as_plain_string)
_StrictLoader.add_constructor("tag:yaml.org,2002:value", _as_plain_string)


@dataclass(frozen=True)
class Document:
    """One Kubernetes object from one YAML document of one file.

    ``body`` is the parsed YAML object itself: treat it as read-only. ``item`` is set when the
    object came from the ``items`` of a ``kind: List`` document; then field paths of problems
    are prefixed with ``items[<item>].``.
    """

    file: str
    index: int  # 1-based number of the YAML document in the file
    api_version: str
    kind: str
    name: str
    namespace: str | None
    body: dict[str, Any] = field(repr=False, hash=False)
    line: int = 0  # 1-based line where the document starts (0 if unknown)
    item: int | None = None

    @property
    def ref(self) -> str:
        """``Kind/namespace/name``, or ``Kind/name`` for an object without a namespace."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"

    @property
    def group(self) -> str:
        """API group of ``api_version`` ("" for the core group)."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        """Version part of ``api_version``, e.g. ``v1``."""
        return self.api_version.rpartition("/")[2]

    @property
    def spec(self) -> dict[str, Any]:
        """``body["spec"]`` if it is a mapping, else an empty dict."""
        spec = self.body.get("spec")
        return spec if isinstance(spec, dict) else {}

    def field_path(self, path: str) -> str:
        """The field path as seen in the file (prefixed with ``items[i].`` for List items)."""
        if self.item is None:
            return path
        return f"items[{self.item}].{path}" if path else f"items[{self.item}]"

    def problem(self, path: str, message: str, fix: str) -> ConfigProblem:
        """A :class:`ConfigProblem` located at ``path`` of this document."""
        return ConfigProblem(
            file=self.file,
            document=self.index,
            path=self.field_path(path),
            message=message,
            fix=fix,
            kind=self.kind,
            name=self.name,
        )


@dataclass(frozen=True)
class LoadResult:
    """What :func:`read_paths` found: the well-formed documents and every problem."""

    documents: tuple[Document, ...]
    problems: tuple[ConfigProblem, ...]
    files: tuple[str, ...] = ()  # files read, in order


def load_paths(paths: Sequence[str | Path]) -> tuple[Document, ...]:
    """Load every document of ``paths``; raise :class:`ConfigError` listing every problem.

    A directory contributes all its ``*.yaml``/``*.yml`` files, recursively, in sorted order
    (hidden files and directories are skipped); a file is read as given, whatever its suffix.
    Empty documents are skipped and ``kind: List`` documents are flattened into their items.
    """
    result = read_paths(paths)
    if result.problems:
        raise ConfigError(result.problems)
    return result.documents


def load_text(text: str, file: str = "<stdin>") -> tuple[Document, ...]:
    """Load the documents of one YAML text; raise :class:`ConfigError` listing every problem."""
    docs, problems = parse_text(text, file)
    if problems:
        raise ConfigError(problems)
    return tuple(docs)


def read_paths(paths: Sequence[str | Path]) -> LoadResult:
    """Like :func:`load_paths`, but return the problems instead of raising them."""
    documents: list[Document] = []
    problems: list[ConfigProblem] = []
    files = _expand(paths, problems)
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(
                ConfigProblem(str(file), 0, "", f"file is not UTF-8 text ({exc.reason})", "save it as UTF-8")
            )
            continue
        except OSError as exc:
            problems.append(
                ConfigProblem(str(file), 0, "", f"cannot read file: {exc.strerror or exc}", _PATH_FIX)
            )
            continue
        docs, file_problems = parse_text(text, str(file))
        documents.extend(docs)
        problems.extend(file_problems)
    return LoadResult(tuple(documents), tuple(problems), tuple(str(f) for f in files))


_PATH_FIX = "pass an existing YAML file or a directory holding *.yaml/*.yml files"


def _expand(paths: Sequence[str | Path], problems: list[ConfigProblem]) -> list[Path]:
    files: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    if isinstance(paths, (str, Path)):  # a lone path is a common slip; accept it
        paths = [paths]
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in YAML_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                problems.append(
                    ConfigProblem(str(path), 0, "", "directory holds no *.yaml or *.yml files", _PATH_FIX)
                )
            for p in found:
                add(p)
        elif path.exists():
            add(path)
        else:
            problems.append(ConfigProblem(str(path), 0, "", "no such file or directory", _PATH_FIX))
    return files


def parse_text(text: str, file: str) -> tuple[list[Document], list[ConfigProblem]]:
    """Parse one YAML text into documents, returning the problems found instead of raising."""
    documents: list[Document] = []
    problems: list[ConfigProblem] = []
    loader = _StrictLoader(text)
    index = 0
    try:
        while True:
            index += 1
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
                data = loader.construct_document(node)
            except yaml.MarkedYAMLError as exc:
                problems.append(_yaml_problem(file, index, exc))
                break
            except yaml.YAMLError as exc:  # unmarked errors are rare; still the user's file
                problems.append(ConfigProblem(file, index, "", f"invalid YAML: {exc}", _YAML_FIX))
                break
            line = node.start_mark.line + 1 if node is not None else 0
            _to_documents(data, file, index, line, documents, problems)
    finally:
        loader.dispose()
    return documents, problems


_YAML_FIX = "correct the YAML syntax (indentation, quoting, ':' after keys, '-' for list items)"


def _yaml_problem(file: str, index: int, exc: yaml.MarkedYAMLError) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    what = exc.problem or "syntax error"
    if exc.context:
        start = exc.context_mark
        if start is not None and exc.problem_mark is not None and start.line != exc.problem_mark.line:
            what = f"{what} ({exc.context} that starts at line {start.line + 1}, column {start.column + 1})"
        else:
            what = f"{what} ({exc.context})"
    if mark is not None:
        message = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"
    else:
        message = f"invalid YAML: {what}"
    fix = "keep only one of the duplicate keys" if "duplicate key" in what else _YAML_FIX
    return ConfigProblem(file, index, "", message, fix)


def _to_documents(
    data: Any,
    file: str,
    index: int,
    line: int,
    documents: list[Document],
    problems: list[ConfigProblem],
) -> None:
    if data is None:
        return  # empty document: skipped
    if _is_recursive(data):
        problems.append(
            ConfigProblem(
                file,
                index,
                "",
                "document contains itself through a YAML alias (*name inside the &name it refers to)",
                "replace the recursive alias with a copy of the data",
            )
        )
        return
    if not isinstance(data, dict):
        problems.append(
            ConfigProblem(
                file,
                index,
                "",
                f"document is {_a(data)}, not a mapping (a Kubernetes object)",
                "make the document a mapping with apiVersion, kind, metadata and spec",
            )
        )
        return
    if data.get("kind") == "List" and "items" in data:
        items = data.get("items")
        if not isinstance(items, list):
            problems.append(
                ConfigProblem(file, index, "items", f"items is {_a(items)}, not a list", "make items a list")
            )
            return
        for i, item in enumerate(items):
            doc = _document(item, file, index, line, i, problems)
            if doc is not None:
                documents.append(doc)
        return
    doc = _document(data, file, index, line, None, problems)
    if doc is not None:
        documents.append(doc)


def _document(
    data: Any, file: str, index: int, line: int, item: int | None, problems: list[ConfigProblem]
) -> Document | None:
    prefix = f"items[{item}]." if item is not None else ""
    if not isinstance(data, dict):
        problems.append(
            ConfigProblem(
                file,
                index,
                prefix.rstrip("."),
                f"list item is {_a(data)}, not a mapping (a Kubernetes object)",
                "make every item a mapping with apiVersion, kind, metadata and spec",
            )
        )
        return None
    kind = data.get("kind")
    api_version = data.get("apiVersion")
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    shown_kind = kind if isinstance(kind, str) else ""
    shown_name = name if isinstance(name, str) and name else "<no name>"
    found: list[ConfigProblem] = []

    def missing(path: str, value: Any, what: str, fix: str) -> None:
        if value is None:
            message = f"missing {what}"
        else:
            message = f"{what} must be a non-empty string, got {_a(value)} {value!r}"
        found.append(ConfigProblem(file, index, prefix + path, message, fix, shown_kind, shown_name))

    if not (isinstance(api_version, str) and api_version):
        missing(
            "apiVersion", api_version, "apiVersion", "add apiVersion, e.g. apiVersion: networking.istio.io/v1"
        )
    if not (isinstance(kind, str) and kind):
        missing("kind", kind, "kind", "add kind, e.g. kind: VirtualService")
    if metadata is not None and not isinstance(metadata, dict):
        found.append(
            ConfigProblem(
                file,
                index,
                prefix + "metadata",
                f"metadata is {_a(metadata)}, not a mapping",
                "write metadata as a mapping with name (and namespace)",
                shown_kind,
                shown_name,
            )
        )
    elif not (isinstance(name, str) and name):
        missing("metadata.name", name, "metadata.name", "add metadata.name, e.g. metadata: {name: my-object}")
    if namespace is not None and not (isinstance(namespace, str) and namespace):
        missing(
            "metadata.namespace",
            namespace,
            "metadata.namespace",
            "set metadata.namespace to a namespace name",
        )
    if found:
        problems.extend(found)
        return None
    assert isinstance(api_version, str) and isinstance(kind, str) and isinstance(name, str)
    return Document(
        file=file,
        index=index,
        api_version=api_version,
        kind=kind,
        name=name,
        namespace=namespace if isinstance(namespace, str) else None,
        body=data,
        line=line,
        item=item,
    )


def _is_recursive(data: Any) -> bool:
    """Whether a YAML alias made ``data`` contain itself (which nothing downstream can walk)."""
    on_path: set[int] = set()
    done: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, leaving = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        key = id(node)
        if leaving:
            on_path.discard(key)
            done.add(key)
            continue
        if key in on_path:
            return True
        if key in done:
            continue
        on_path.add(key)
        stack.append((node, True))
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, False) for child in children)
    return False


def _a(value: Any) -> str:
    """'a list', 'a string', ... for messages."""
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def iter_files(paths: Iterable[str | Path]) -> list[Path]:
    """The YAML files :func:`load_paths` would read from ``paths`` (missing paths are left out)."""
    return _expand(list(paths), [])
