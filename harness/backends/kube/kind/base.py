"""What every image of the kind path shares: the local prefix, the inputs label, the built-image
record, and the builder the mesh and node images are built through.

Every image is tagged ``meshproof.local/NAME:TAG`` and labelled with a digest of its inputs
(:func:`inputs_digest`); an image whose label matches is current and is not rebuilt. The builder
(:class:`Builder`, implemented by :class:`~harness.backends.kube.kind.images.ImageBuilder`) owns the
engine, that cache check and the images everything starts from; :mod:`.meshimages` and
:mod:`.nodeimage` build through it, and :mod:`.images` plans and drives all of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PREFIX = "meshproof.local"
INPUTS_LABEL = "dev.meshproof.inputs"
DEBIAN_SUITE = "bookworm"

Progress = Callable[[str], None]


def image_ref(name: str, tag: str) -> str:
    return f"{PREFIX}/{name}:{tag}"


def inputs_digest(parts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str
    built: bool  # False: the cached image was current
    seconds: float
    inputs: str


class Builder(Protocol):
    """What the mesh and node image builds use of the image builder: its work directory and engine
    CLI, the cache check (labels), one BuildKit build, progress, and the images they start from."""

    work: Path
    docker: str

    def labels(self, ref: str) -> dict[str, str] | None: ...
    def current(self, ref: str, inputs: str) -> bool: ...
    def buildkit_cli(self) -> str: ...
    def say(self, message: str) -> None: ...
    def docker_build(
        self,
        ref: str,
        context: Path,
        inputs: str,
        *,
        build_args: Mapping[str, str],
        target: str = "",
        what: str,
        timeout: float = 3600,
    ) -> None: ...
    def debian_base(self) -> BuiltImage: ...
    def kind_runtime(self) -> BuiltImage: ...
