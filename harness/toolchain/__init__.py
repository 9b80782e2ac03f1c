"""Every Go build and Go-module download of meshproof, in one place (nothing builds elsewhere).

- :mod:`~harness.toolchain.gomod`: the one Go-module helper (find ``go``, ``go mod download -json``,
  the go directive, a wrapper module's go.mod, ``go build`` with tags and ``-ldflags``).
- :mod:`~harness.toolchain.istio`: what the Istio builds share (the pinned module, its wrapper
  go.mod, build environment, tags, version fields, Envoy from its wheel);
  :mod:`~harness.toolchain.istio_local` the embedded mesh's ``meshproof-istiod`` launcher and
  ``pilot-agent`` (``meshproof install``), :mod:`~harness.toolchain.istio_analyzer` Istio's analyzer,
  :mod:`~harness.toolchain.istio_cluster` the kind path's ``pilot-discovery``, ``pilot-agent`` and
  ``istioctl``.
- :mod:`~harness.toolchain.jaeger`: the Jaeger binary (the local mesh runs it, the kind image holds it).
- :mod:`~harness.toolchain.kind`: the kind binary and kind's module.
- :mod:`~harness.toolchain.nodeparts`: the kind node's binaries (containerd, runc, crictl, the CNI
  plugins, Kubernetes, etcd, CoreDNS, pause); :mod:`~harness.toolchain.runc_capdrop` the runc
  capability wrapper.

Everything lands in the shared cache (``~/.cache/meshproof``) under a stamp, built once under a lock
(:func:`harness.cache.locked_install`). The Go programs meshproof ships are in ``go/``. This layer
sits below the backends and ``harness.istio`` (which use it) and above proc/cache/settings.
"""
