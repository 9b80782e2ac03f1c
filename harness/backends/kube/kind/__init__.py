"""The kind path's own machinery: the kind command and the images the cluster runs.

- :mod:`.cli`: ``KindCli``, one named cluster through the kind command, and kind's cluster config
  (node options, the ingress NodePort, the cgroup v1 patch).
- The image supply chain, imported one way (``images`` -> ``meshimages``/``nodeimage`` -> ``base``):
  :mod:`.base` the prefix, the inputs label, the built-image record and the builder protocol;
  :mod:`.images` the plan, the images mode and ``ImageBuilder`` (debian-base, kind-base,
  kind-runtime); :mod:`.meshimages` Istio's, Jaeger's, the sample's and Locust's images;
  :mod:`.nodeimage` the kind node image. Their binaries come from :mod:`harness.toolchain`.
"""
