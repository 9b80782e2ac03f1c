"""KindCluster: the :class:`~harness.backends.kube.cluster.Cluster` meshproof makes with kind.

- **Engine**: a Docker engine to run on, the running one or a dockerd meshproof starts (recorded,
  so that ``down`` stops it after the cluster is gone, unless other containers run in it).
- **Node image**: for a new cluster, the node image built here (local images) or kind's default,
  with the cgroup v1 kubelet patch on such hosts.
- **Create / adopt / delete** through :class:`~harness.backends.kube.kind.cli.KindCli`: a cluster of
  the same name is adopted as it is; ``down`` deletes it only when meshproof created it (in this
  run, or an earlier ``--keep-cluster`` one), and never with ``keep_cluster``.
- **Images**: with ``MESHPROOF_IMAGES`` local, the mesh images (Istio's, Jaeger, the sample,
  Locust) are built here and loaded before Istio is installed with pull policy Never; otherwise
  the sample image is built and loaded, and the cluster pulls the rest.
- **Istio**: installed with the pinned istioctl unless a ready istiod of the pinned minor runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from harness import wait
from harness.backends.kube import gateway_api, istio_install
from harness.backends.kube.api import KubeApi
from harness.backends.kube.apply import SAMPLE_IMAGE, apply_objects
from harness.backends.kube.cluster import ClusterBase, build_sample, not_building
from harness.backends.kube.engine import DockerEngine, Engine, EngineLayout, EngineMode
from harness.backends.kube.kind import meshimages
from harness.backends.kube.kind.base import PREFIX
from harness.backends.kube.kind.cli import INGRESS_NODE_PORT, KindCli, NodeOptions, host_cgroup_v1
from harness.backends.kube.kind.images import ImageBuilder, ImagesMode, images_mode, kind_default_node_image
from harness.backends.kube.tools import ToolPaths, minor, preflight, same_minor
from harness.errors import BackendError, ToolMissing
from harness.toolchain import istio_cluster
from harness.toolchain import kind as kind_build

NICE = ("nice", "-n", "19", "ionice", "-c3")  # image and Go builds yield to the tests


class KindCluster(ClusterBase):
    """A kind cluster for the run; see the module docstring."""

    name = "kind"
    node_shell = True  # its nodes are containers in the Docker engine here: `docker exec`

    _cli: KindCli | None = None  # once the cluster is asked for
    _mode: ImagesMode | None = None  # MESHPROOF_IMAGES' decision, once made
    # _engine (ClusterBase): the one given, else the real one, made on first use

    def failure_note(self) -> str:
        if self.settings.keep_cluster:
            return ""
        return "the kind cluster is deleted on failure; rerun with --keep-cluster to inspect it"

    # ---- the Docker engine ------------------------------------------------------------------
    def _docker_engine(self) -> Engine:
        if self._engine is None:
            self._engine = DockerEngine(
                EngineLayout.under(self.settings.cache_dir),
                run=self._run,
                which=self._which,
                say=self._say,
            )
        return self._engine

    def prepare(self) -> None:
        """A Docker engine for kind: the running one, or a dockerd meshproof starts (and `down` stops)."""
        self._say("Docker engine")
        engine = self._docker_engine()
        engine.start()
        if engine.status().mode is EngineMode.OURS:  # recorded so that `down` stops it, even after a failure
            self._record.save(backend=self.name, phase="starting", docker_engine="ours")
        else:
            self._record.note(docker_engine="foreign")

    def _stop_engine(self, info: Mapping[str, Any]) -> str:
        """Stop the engine after the cluster is gone, if meshproof started it and nothing else runs in it."""
        if info.get("docker_engine") != "ours":
            return ""
        engine = self._docker_engine()
        if engine.status().mode is not EngineMode.OURS:
            return ""
        others = engine.containers()
        if others:
            return (
                f"the Docker engine meshproof started keeps running: {len(others)} other container(s) in it "
                "(`meshproof docker stop` stops it)"
            )
        engine.stop()
        return ""

    # ---- tools and the cluster --------------------------------------------------------------
    def preflight(self) -> ToolPaths:
        return preflight(
            self.name, self.release, which=self._which, run=self._run, istioctl=self._cluster_istioctl()
        )

    def _cluster_istioctl(self) -> str:
        """With images built here: the istioctl of the pinned module (built on first use); else ""
        (preflight then takes istioctl from PATH and checks it against --istio-version)."""
        if not self._local_images():
            return ""
        self._say(f"images: local ({self._images_mode().why})")
        built = istio_cluster.ensure(
            self.settings.cache_dir, self.settings.istio_version, say=self._say, prefix=NICE
        )
        return built.istioctl

    def provide(self, tools: ToolPaths) -> tuple[str, str]:
        """Create the cluster, or adopt one of the same name as it is (no image work then)."""
        s = self.settings
        self._say(f"kind cluster {s.kind_cluster}")
        self._cli = KindCli(
            s.kind_cluster,
            s.state_dir,
            kind=tools.kind,
            docker=tools.docker,
            keep=s.keep_cluster,
            run=self._run,
            records=s.cache_dir / "kind-clusters",
        )
        if not self._cli.exists():
            self._cli.node = self._node(tools)
        self._record.save(
            backend=self.name, phase="starting", istio=self.release.label, kind_cluster=s.kind_cluster
        )
        self._cli.start()
        kubeconfig, context = str(self._cli.kubeconfig), self._cli.context
        self._record.save(
            kubeconfig=kubeconfig,
            context=context,
            ingress_port=self._cli.ingress_port,
            created_cluster=self._cli.created,
        )
        return kubeconfig, context

    def _node(self, tools: ToolPaths) -> NodeOptions:
        """The node for a new kind cluster: with local images the node image built here (cached; it brings
        its own CNI config), else kind's default; the cgroup v1 kubelet patch on such hosts."""
        from harness.backends.kube.kind import nodeimage

        mode = self._images_mode().mode
        builder = ImageBuilder(
            self.settings.cache_dir, docker=tools.docker, run=self._run, which=self._which, prefix=NICE,
            say=self._say,
        )  # fmt: skip
        return nodeimage.node_options(
            mode,
            cgroup_v1=host_cgroup_v1(Path("/proc/self/mounts").read_text()),
            build_node=lambda: builder.kind_node().ref,
        )

    def teardown(self, info: Mapping[str, Any], connect: Callable[[], KubeApi]) -> None:
        """Delete the cluster if meshproof created it, then stop the engine if meshproof started it and
        nothing else runs in it."""
        self._delete(info)
        try:
            if kept := self._stop_engine(info):
                self._say(kept)
        except Exception as e:
            raise BackendError(f"stopping the Docker engine: {e}") from e

    def _delete(self, info: Mapping[str, Any]) -> None:
        if self._cli is None and "kind_cluster" not in info:
            return  # up failed before a cluster was asked for
        if self._cli is not None:
            self._cli.stop()
            return
        # another process made it: by the record
        name = str(info.get("kind_cluster") or self.settings.kind_cluster)
        record = self.settings.cache_dir / "kind-clusters" / name
        if not info.get("created_cluster") and not record.is_file():
            self._say(f"kind cluster {name} was not created by meshproof: left as it is")
            return
        kind = self._which("kind")
        if not kind:
            raise ToolMissing("kind", f"deleting kind cluster {info.get('kind_cluster')}", "put kind on PATH")
        argv = [kind, "delete", "cluster", "--name", name]
        if info.get("kubeconfig"):
            argv += ["--kubeconfig", str(info["kubeconfig"])]
        self._run(argv, timeout=300)
        record.unlink(missing_ok=True)

    def ingress_url(self, info: Mapping[str, Any]) -> str:
        """The ingress NodePort as kind publishes it on 127.0.0.1 ("" when not recorded)."""
        port = info.get("ingress_port")
        return f"http://127.0.0.1:{int(port)}" if port else ""

    # ---- Gateway API ------------------------------------------------------------------------
    def gateway_api(self, api: KubeApi) -> str:
        """Applies the standard-channel Gateway API CRDs the pinned Istio requires and waits until
        the cluster serves their kinds (a CRD must be Established before its objects apply)."""
        index = self._gateway_api_crds(self.release)
        crds = gateway_api.standard_crds(index)
        self._say(f"applying the Gateway API CRDs ({index.module}, standard channel: {len(crds)})")
        apply_objects(api, crds)
        wait.until(
            lambda: not gateway_api.missing(api),
            what=f"the cluster to serve the Gateway API kinds of {index.module}",
            timeout=self.settings.ready_timeout,
            interval=0.5,
            hint="check the CustomResourceDefinitions' Established condition (kubectl get crd -o yaml)",
            clock=self._clock,
        )
        return ""

    # ---- Istio ------------------------------------------------------------------------------
    def install_istio(self, api: KubeApi, tools: ToolPaths, kubeconfig: str, context: str) -> None:
        current = istio_install.find_istiod(api)
        if current and current.ready and same_minor(current.version, minor(self.release)):
            self._say(f"Istio {current.version} already installed")
            return
        self._say(f"installing Istio {tools.istioctl_version or self.release.label} with istioctl")
        istio_install.install(
            tools.istioctl,
            self.settings.state_dir,
            kubeconfig=kubeconfig,
            context=context,
            ingress_node_port=INGRESS_NODE_PORT,
            run=self._run,
            readiness_timeout=max(self.settings.ready_timeout, 300.0),
            local_images=(
                istio_install.LocalImages(PREFIX, meshimages.tag_of("pilot", self.settings.istio_version))
                if self._local_images()
                else None
            ),
            small_requests=True,  # a kind node is this machine: the chart's requests assume a real cluster
        )
        istio_install.wait_istiod_ready(api, timeout=self.settings.ready_timeout, clock=self._clock)

    # ---- images: official (pulled by the cluster) or built here (meshproof images build) ----------
    def _images_mode(self) -> ImagesMode:
        """MESHPROOF_IMAGES decides; with ``auto``, whether kind's default node image is in the engine."""
        if self._mode is None:
            official, present = "", None
            docker = self._which("docker")
            if self.settings.images == "auto" and docker:
                official = kind_default_node_image(kind_build.module_dir(run=self._run, which=self._which))
                builder = ImageBuilder(
                    self.settings.cache_dir, docker=docker, run=self._run, which=self._which
                )
                present = bool(official) and builder.labels(official) is not None
            self._mode = images_mode(
                self.settings.images, official_node_image=official, official_present=present
            )
        return self._mode

    def _local_images(self) -> bool:
        return self._images_mode().mode == "local"

    def load_mesh_images(self, tools: ToolPaths) -> None:
        """With local images, every mesh image (before istioctl install: pull policy Never)."""
        if not self._local_images() or self._cli is None:
            return
        for ref in self._mesh_images(tools.docker):
            self._say(f"loading {ref} into kind cluster {self._cli.name}")
            self._cli.load_image(ref)

    def _mesh_images(self, docker: str) -> list[str]:
        """The mesh images the cluster runs, built here when missing or stale (cached otherwise)."""
        builder = ImageBuilder(
            self.settings.cache_dir, docker=docker, run=self._run, which=self._which, prefix=NICE,
            say=self._say, mesh=meshimages.MeshSources(istio=self.settings.istio_version),
        )  # fmt: skip
        names = ["pilot", "proxyv2", "jaeger", "sample", "locust"]
        missing = [
            n for n in names if builder.labels(meshimages.ref_of(n, self.settings.istio_version)) is None
        ]
        # `up` builds no Jaeger binary (MeshSources without the toolchain's Jaeger): `images build` does
        if "jaeger" in missing:
            raise ToolMissing(
                meshimages.ref_of("jaeger"), "tracing on the kind cluster (local images)",
                "run `meshproof images build` (it builds every image of the kind path, Jaeger's included)",
            )  # fmt: skip
        if missing:  # (an empty list would mean "every image" to build())
            builder.build(missing)
        return [meshimages.ref_of(n, self.settings.istio_version) for n in names]

    def load_release_images(self, label: str) -> list[str]:
        """Istio release ``label``'s pilot and proxyv2 in the nodes, for an upgrade to it: with local
        images, built here first when missing (only now: the second release's images are needed by
        an upgrade check alone), then loaded; with official ones the cluster pulls them (nothing)."""
        if not self._local_images() or self._cli is None:
            return []
        docker = self._which("docker")
        if not docker:
            raise ToolMissing("docker", f"building Istio {label}'s images", "run `meshproof docker start`")
        builder = ImageBuilder(
            self.settings.cache_dir, docker=docker, run=self._run, which=self._which, prefix=NICE,
            say=self._say, mesh=meshimages.MeshSources(istio=label),
        )  # fmt: skip
        names = ["pilot", "proxyv2"]
        missing = [n for n in names if builder.labels(meshimages.ref_of(n, label)) is None]
        if missing:
            self._say(f"building Istio {label}'s {' and '.join(missing)} image(s) (needed by the upgrade)")
            builder.build(missing)
        refs = [meshimages.ref_of(n, label) for n in names]
        for ref in refs:
            self._say(f"loading {ref} into kind cluster {self._cli.name}")
            self._cli.load_image(ref)
        return refs

    def upgrade_overlay(self, label: str) -> Path:
        """The IstioOperator overlay ``up`` installed with, for Istio release ``label`` (its images'
        tag): what TO's ``istioctl install`` gets, so that the upgrade changes the release only."""
        spec = istio_install.operator_overlay(
            ingress_node_port=INGRESS_NODE_PORT,
            local_images=(
                istio_install.LocalImages(PREFIX, meshimages.tag_of("pilot", label))
                if self._local_images()
                else None
            ),
            small_requests=True,
        )
        path = self.settings.state_dir / f"istio-operator-{label}.yaml"
        import yaml

        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def load_sample(self, tools: ToolPaths, context: str) -> None:
        """Official images: the sample image built here and loaded (local ones are in already)."""
        if self._cli is None or not self._cli.name or not tools.docker or not tools.kind:
            self._say(not_building(context))
            return
        if self._local_images():
            return  # loaded before Istio's install (load_mesh_images), the sample with the others
        build_sample(tools, self._sample_dir, self._run, self._say)
        self._say(f"loading {SAMPLE_IMAGE} into kind cluster {self._cli.name}")
        self._cli.load_image(SAMPLE_IMAGE)

    def localized(self, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """With local images, the manifests' sample and Jaeger images are the ones built here."""
        if not self._local_images():
            return objs
        return meshimages.localize(objs, meshimages.local_image_map(self.settings.istio_version))

    def record_new(self, api: KubeApi, objs: Iterable[Mapping[str, Any]]) -> None:
        return None  # the whole cluster goes with `down`

    @property
    def locust_image(self) -> str:
        """The in-cluster Locust image when the images are built here (loaded by ``up``), else ""."""
        return meshimages.ref_of("locust") if self._local_images() else ""
