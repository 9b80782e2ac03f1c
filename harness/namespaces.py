"""The sample's namespaces of one pytest-xdist worker on a shared cluster (backends kind, existing).

A cluster runs one Istio, and every suite changes the sample's Istio objects. So that several
workers can run the suites on it at once, each worker other than the first (``gw1``, ``gw2``, ...)
gets a copy of the sample in namespaces of its own, named with a suffix: ``sample-w1``,
``trusted-namespace-w1``, ``other-namespace-w1``. Worker ``gw0`` and a run without workers use
the manifests unchanged, the mesh ``meshproof up`` brought up.

The copy is the manifests with those namespace names renamed where they name a namespace (an
object's namespace, a Namespace, a service host ``NAME.NS.svc.cluster.local`` or ``NAME.NS``, a
``NS/NAME`` reference, a SPIFFE path ``/ns/NS/``, a list entry that is only the namespace); the
objects in other namespaces (``istio-system``: Jaeger and the mesh-wide Telemetry) stay the first
worker's. Istio computes what the renamed objects mean; the suites read it from Envoy as always.

The suites name sources, services and hosts by the manifests' names and translate them with
:func:`ns`, :func:`ref` and :func:`host`, which read the worker's suffix from the environment
(:data:`SUFFIX_ENV`, set by the plugin in the worker before it collects). Test ids keep the
manifests' names, so every worker collects the same tests.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SUFFIX_ENV = "MESHPROOF_NAMESPACE_SUFFIX"
#: The manifests' namespaces a worker gets a copy of.
SAMPLE_NAMESPACES = ("sample", "trusted-namespace", "other-namespace")
#: Label on every Namespace of a worker's copy (value: the worker's suffix): ``down`` deletes them.
WORKER_LABEL = "meshproof.dev/worker"

_NAMES = "|".join(re.escape(n) for n in SAMPLE_NAMESPACES)
_HOST = re.compile(rf"^(?P<head>[a-z0-9-]+\.)(?P<ns>{_NAMES})(?P<tail>\.svc(\..*)?)?$")
_REF = re.compile(rf"^(?P<ns>{_NAMES})(?P<tail>/[^/]+)$")
_SPIFFE = re.compile(rf"(?P<head>/ns/)(?P<ns>{_NAMES})(?P<tail>/)")


def suffix_for(worker: str | None) -> str:
    """The namespace suffix of pytest-xdist worker ``worker`` ("gw0" and None: none; "gw2": "-w2")."""
    if not worker or worker == "gw0":
        return ""
    return f"-w{worker.removeprefix('gw')}"


def suffix() -> str:
    """This process's suffix ("" outside a worker's copy)."""
    return os.environ.get(SUFFIX_ENV, "")


def ns(name: str, sfx: str | None = None) -> str:
    """The namespace this worker runs the manifests' namespace ``name`` as (others unchanged)."""
    sfx = suffix() if sfx is None else sfx
    return f"{name}{sfx}" if sfx and name in SAMPLE_NAMESPACES else name


def ref(workload: str, sfx: str | None = None) -> str:
    """``NS/NAME`` (a source such as ``other-namespace/client``) in this worker's namespaces."""
    namespace, slash, rest = workload.partition("/")
    return f"{ns(namespace, sfx)}{slash}{rest}" if slash else workload


def host(name: str, sfx: str | None = None) -> str:
    """A service host (``NAME.NS.svc.cluster.local``, ``NAME.NS``) in this worker's namespaces."""
    m = _HOST.match(name)
    if m is None:
        return name
    return f"{m['head']}{ns(m['ns'], sfx)}{m['tail'] or ''}"


def _rename_str(value: str, sfx: str) -> str:
    if value in SAMPLE_NAMESPACES:
        return value + sfx
    if _HOST.match(value):
        return host(value, sfx)
    if m := _REF.match(value):
        return f"{m['ns']}{sfx}{m['tail']}"
    return _SPIFFE.sub(lambda m: f"{m['head']}{m['ns']}{sfx}{m['tail']}", value)


def _rename(value: Any, sfx: str) -> Any:
    if isinstance(value, str):
        return _rename_str(value, sfx)
    if isinstance(value, list):
        return [_rename(v, sfx) for v in value]
    if isinstance(value, dict):  # keys (field names, label keys) stay
        return {k: _rename(v, sfx) for k, v in value.items()}
    return value


def renamed(objs: Iterable[Mapping[str, Any]], sfx: str) -> list[dict[str, Any]]:
    """The objects of the sample's namespaces, renamed into the copy with suffix ``sfx``; objects of
    other namespaces (cluster-scoped ones other than the sample's Namespaces included) are left out.
    Namespaces get :data:`WORKER_LABEL`."""
    out: list[dict[str, Any]] = []
    for obj in objs:
        meta = obj.get("metadata") or {}
        own = meta.get("namespace") if obj.get("kind") != "Namespace" else meta.get("name")
        if own not in SAMPLE_NAMESPACES:
            continue
        o = _rename(copy.deepcopy(dict(obj)), sfx)
        if o.get("kind") == "Namespace":
            o["metadata"].setdefault("labels", {})[WORKER_LABEL] = sfx.lstrip("-")
        out.append(o)
    return out


def render_manifests(src: Path, dest: Path, sfx: str) -> Path:
    """Write the worker copy of the manifests in ``src`` (a file or directory of YAML) into ``dest``,
    one file per source file under the same name (the suites rely on the files' sorted order)."""
    import yaml

    from harness import yamlio

    files = sorted(src.glob("*.y*ml")) if src.is_dir() else [src]
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.y*ml"):
        old.unlink()
    for f in files:
        docs = [d for d in yaml.load_all(f.read_text(), Loader=yamlio.Loader) if isinstance(d, dict)]
        kept = renamed(docs, sfx)
        if kept:
            (dest / f.name).write_text(yamlio.dump_all(kept))
    return dest
