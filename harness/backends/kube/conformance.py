"""Run the Gateway API conformance suite inside the cluster, as a Job, and bring its report out.

The suite talks to Gateways and mesh Services by their cluster addresses (the Gateway's address,
a ClusterIP, ``kubectl exec`` into the mesh's echo client): on kind without a LoadBalancer the host
reaches none of the first two, so the suite's test binary runs in a pod (namespace
:data:`NAMESPACE`, not injected, a ServiceAccount bound to ``cluster-admin``: the suite creates
namespaces, CRD-backed objects and pods/exec). It writes its ConformanceReport to a file and the
Job's shell prints it between two marker lines after the test binary's own ``go test -v``
output; both are read from the pod's log. The Job and the namespace are deleted afterwards, pass
or fail (the suite deletes its own namespaces: ``-cleanup-base-resources``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import proc, wait
from harness.backends.kube.api import KubeApi, ObjectRef
from harness.errors import BackendError, StateError, ToolMissing
from harness.settings import Settings
from harness.toolchain.gateway_conformance import ConformanceBinaries

NAMESPACE = "meshproof-conformance"
NAME = "gateway-conformance"
REPORT_BEGIN = "=== meshproof: conformance report begins"
REPORT_END = "=== meshproof: conformance report ends"
REPORT_PATH = "/tmp/conformance-report.yaml"
CLASS_DEFAULTS_LABEL = "gateway.istio.io/defaults-for-class"
# the namespaces the suite's manifests create (left behind by an interrupted run; deleted before a run)
SUITE_NAMESPACES = (
    "gateway-conformance-infra",
    "gateway-conformance-app-backend",
    "gateway-conformance-web-backend",
    "gateway-conformance-mesh",
    "gateway-conformance-mesh-consumer",
)


def shell(argv: Sequence[str]) -> str:
    """The Job's script: the test binary, then its report between the markers, then its exit code."""
    quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in argv)
    return (
        f"{quoted}; rc=$?; echo '{REPORT_BEGIN}'; cat {REPORT_PATH} 2>/dev/null; "
        f"echo '{REPORT_END}'; exit $rc"
    )


def class_defaults(gateway_class: str, istio_namespace: str = "istio-system") -> dict[str, Any]:
    """Istio's per-GatewayClass defaults (a ConfigMap labelled ``gateway.istio.io/defaults-for-class``
    in its namespace, overlaid on every Gateway deployment it makes for the class): the Gateways'
    Services of type ClusterIP. A LoadBalancer Service on a cluster without a load balancer keeps
    its Gateway ``Programmed=False`` (``AddressNotAssigned``: "address pending for hostname"); with a
    ClusterIP Service Istio gives the Gateway the Service's cluster hostname as its address, which the
    suite, running in the cluster, can reach."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"meshproof-gateway-class-{gateway_class}",
            "namespace": istio_namespace,
            "labels": {CLASS_DEFAULTS_LABEL: gateway_class, "app.kubernetes.io/managed-by": "meshproof"},
        },
        "data": {"service": "spec:\n  type: ClusterIP\n"},
    }


def objects(
    image: str, argv: Sequence[str], *, deadline_s: int, gateway_class: str = "istio"
) -> list[dict[str, Any]]:
    """Istio's class defaults (:func:`class_defaults`), the runner's Namespace, ServiceAccount, its
    cluster-admin binding, and the Job running ``argv``."""
    labels = {"app.kubernetes.io/managed-by": "meshproof", "app": NAME}
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": labels}
    return [
        class_defaults(gateway_class),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": labels}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"meshproof-{NAME}", "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta,
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": deadline_s,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "suite",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": ["/bin/sh", "-c", shell(argv)],
                            }
                        ],
                    },
                },
            },
        },
    ]


def refs(objs: Sequence[Mapping[str, Any]]) -> list[ObjectRef]:
    return [ObjectRef.of(o) for o in objs]


@dataclass(frozen=True)
class JobResult:
    succeeded: bool
    log: str
    seconds: float
    pod: str


def job_state(job: Mapping[str, Any] | None) -> str:
    """``running``, ``succeeded`` or ``failed`` from a Job's status (its conditions, else counts)."""
    status = (job or {}).get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if c.get("status") == "True" and c.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    if status.get("succeeded"):
        return "succeeded"
    if status.get("failed"):
        return "failed"
    return "running"


_STARTED = re.compile(r"^=== RUN\s+TestConformance/(\w+)$")


def started_tests(log: str) -> list[str]:
    """The suite's tests started so far, in order, from a ``go test -v`` log (``=== RUN`` lines: Go
    prints a sub-test's ``--- PASS`` line only when its parent, the whole suite, ends)."""
    return [m.group(1) for ln in log.splitlines() if (m := _STARTED.match(ln.strip()))]


class SuiteJob:
    """``run()`` applies :func:`objects`, waits for the Job to end, returns its log; always cleans up."""

    def __init__(
        self,
        api: KubeApi,
        image: str,
        argv: Sequence[str],
        *,
        timeout: float,
        say: Callable[[str], None] = lambda _m: None,
        clock: wait.Clock = wait.REAL_CLOCK,
    ) -> None:
        self.api, self.image, self.argv = api, image, list(argv)
        self.timeout, self._say, self._clock = timeout, say, clock
        self._objs = objects(image, self.argv, deadline_s=int(timeout))

    def _pod(self) -> dict[str, Any] | None:
        pods = self.api.list("v1", "Pod", NAMESPACE, f"job-name={NAME}")
        return pods[0] if pods else None

    def cleanup(self) -> None:
        for ref in reversed(refs(self._objs)):
            if ref.kind in ("Namespace", "ClusterRoleBinding", "Job", "ConfigMap"):
                self.api.delete(ref, grace_seconds=0)

    def _gone(self, ref: ObjectRef) -> bool:
        return self.api.get(ref) is None

    def run(self) -> JobResult:
        leftovers = [ObjectRef("v1", "Namespace", "", n) for n in (NAMESPACE, *SUITE_NAMESPACES)]
        for ref in leftovers:
            if self.api.delete(ref):
                self._say(f"deleting {ref} (left by an earlier run, or still being deleted)")
        wait.until(
            lambda: all(self._gone(r) for r in leftovers),
            what="namespaces of an earlier conformance run to be deleted",
            timeout=300,
            interval=1.0,
            clock=self._clock,
        )
        t0 = self._clock.now()
        try:
            for obj in self._objs:
                self.api.apply(obj)
            seen: list[str] = []

            def ended() -> str | None:
                pod = self._pod()
                if pod is not None and (pod.get("status") or {}).get("phase") in (
                    "Running",
                    "Succeeded",
                    "Failed",
                ):
                    log = self.api.pod_log(NAMESPACE, pod["metadata"]["name"], "suite", tail_lines=None)
                    for name in started_tests(log)[len(seen) :]:
                        seen.append(name)
                        self._say(f"running {name} ({len(seen)})")
                state = job_state(self.api.get(ObjectRef("batch/v1", "Job", NAMESPACE, NAME)))
                return None if state == "running" else state

            state = wait.until(
                ended,
                what=f"Job {NAMESPACE}/{NAME} (the conformance suite) to finish",
                timeout=self.timeout + 120,
                interval=10.0,
                hint=f"kubectl -n {NAMESPACE} logs job/{NAME}",
                clock=self._clock,
            )
            pod = self._pod()
            if pod is None:
                raise BackendError(f"Job {NAMESPACE}/{NAME} ended ({state}) but its pod is gone")
            name = pod["metadata"]["name"]
            log = self.api.pod_log(NAMESPACE, name, "suite", tail_lines=None)
            return JobResult(state == "succeeded", log, self._clock.now() - t0, name)
        finally:
            self.cleanup()


def report_text(log: str) -> str:
    """The report the Job printed between the markers ("" when it wrote none)."""
    begin = log.rfind(REPORT_BEGIN)
    end = log.rfind(REPORT_END)
    if begin < 0 or end < begin:
        return ""
    body = log[begin + len(REPORT_BEGIN) : end].strip("\n")
    return body + "\n" if body.strip() else ""


# ---- the suite's argv ----------------------------------------------------------------------------
USABLE_ADDRESS = "infra-backend-v1.gateway-conformance-infra.svc.cluster.local"  # a Service hostname
CONTACT = "meshproof (a run of the upstream suite by meshproof; not Istio's own)"  # -contact splits on commas


@dataclass(frozen=True)
class SuiteOptions:
    profiles: tuple[str, ...]
    supported_features: tuple[str, ...]
    skip_tests: tuple[str, ...]
    namespace_labels: Mapping[str, str]
    istio_version: str
    run_test: str = ""
    gateway_class: str = "istio"
    timeout_s: int = 5400


def suite_argv(o: SuiteOptions, binary: str = "/usr/local/bin/conformance.test") -> list[str]:
    """The upstream TestConformance's own flags (``conformance/utils/flags``) for one run on Istio.

    Static addresses: Istio takes a Gateway address of type Hostname as the Service to use, so the
    usable one is a Service's cluster hostname and the unusable one a name that resolves to no
    Service (as Istio's own run sets them)."""
    argv = [
        binary,
        "-test.v",
        "-test.run=^TestConformance$",
        f"-test.timeout={o.timeout_s}s",
        f"-gateway-class={o.gateway_class}",
        f"-conformance-profiles={','.join(o.profiles)}",
        f"-supported-features={','.join(o.supported_features)}",
        f"-namespace-labels={','.join(f'{k}={v}' for k, v in sorted(o.namespace_labels.items()))}",
        f"-usable-address={USABLE_ADDRESS}",
        "-unusable-address=foo",
        "-organization=istio",
        "-project=istio",
        "-url=https://istio.io/",
        f"-version={o.istio_version}",
        f"-contact={CONTACT}",
        "-mode=default",
        f"-report-output={REPORT_PATH}",
    ]
    if o.skip_tests:
        argv.append(f"-skip-tests={','.join(o.skip_tests)}")
    if o.run_test:
        argv.append(f"-run-test={o.run_test}")
    return argv


CHANNEL_ANNOTATION = "gateway.networking.k8s.io/channel"


def crd_channel(api: KubeApi) -> str:
    """The Gateway API channel of the cluster's HTTPRoute CRD (its bundle annotation), "" when absent."""
    crd = api.get(
        ObjectRef(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "httproutes.gateway.networking.k8s.io"
        )
    )
    return str(((crd or {}).get("metadata") or {}).get("annotations", {}).get(CHANNEL_ANNOTATION, ""))


# ---- images into the cluster ---------------------------------------------------------------------
def load_images(
    info: Mapping[str, Any],
    settings: Settings,
    binaries: ConformanceBinaries,
    *,
    say: Callable[[str], None],
    run: proc.Runner = proc.run,
    which: proc.Which = proc.which,
) -> str:
    """Build (cached) the suite's images, tag them with the manifests' names, ``kind load`` them into
    the mesh's cluster (``info``: its record); returns the runner image's ref."""
    from harness.backends.kube.kind import meshimages
    from harness.backends.kube.kind.conformance_images import ConformanceImages, unknown_images
    from harness.backends.kube.kind.images import ImageBuilder
    from harness.toolchain import gateway_conformance
    from harness.toolchain.kind import kind_which

    cluster = str(info.get("kind_cluster") or "")
    if not cluster:
        raise StateError("the mesh's record names no kind cluster. Fix: meshproof up --backend kind --detach")
    lookup = kind_which(settings.cache_dir, which)
    docker, kind = lookup("docker"), lookup("kind")
    if not docker or not kind:
        raise ToolMissing("docker and kind", "loading the conformance images", "meshproof docker install")
    nice = ("nice", "-n", "19", "ionice", "-c3")
    builder = ImageBuilder(settings.cache_dir, docker=docker, run=run, which=which, prefix=nice, say=say)
    sources = meshimages.MeshSources(istio=binaries.label)
    manifest = gateway_conformance.suite_manifest_images(Path(binaries.suite_dir))
    if unknown := unknown_images(manifest):
        say(f"warning: the suite's manifests name images meshproof does not build: {', '.join(unknown)}")
    images = ConformanceImages(
        builder,
        binaries,
        istio_base=lambda: meshimages.MeshImages(builder, sources).build("istio-base"),
        coredns=lambda v: gateway_conformance.build_coredns(
            settings.cache_dir, binaries.suite_version, v, say=say, prefix=nice, run=run, which=which
        ),
        run=run,
    )
    if settings.images == "official":
        say("MESHPROOF_IMAGES=official: the cluster pulls the suite's own images; building only the runner")
        suite_images, _ = images.build_runner_only()
    else:
        suite_images, _ = images.build([r for r in manifest if r not in unknown])
    refs = suite_images.refs()
    say(f"loading {', '.join(refs)} into kind cluster {cluster}")
    run([kind, "load", "docker-image", *refs, "--name", cluster], timeout=1800)  # one archive for all
    return suite_images.runner


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_NEEDED = 512  # kind's known-issues value


def inotify_warning(read: Callable[[], str] = INOTIFY_INSTANCES.read_text) -> str:
    """A warning when the host's inotify instance limit is below :data:`INOTIFY_NEEDED`: kind's nodes
    share it with the host, and every pilot-agent takes instances (its SDS server watches its
    certificates); past the limit a Gateway's proxy exits with "couldn't initialize inotify: too
    many open files" and its Gateway never becomes ready (seen on this machine at 128)."""
    try:
        limit = int(read().strip())
    except (OSError, ValueError):
        return ""
    if limit >= INOTIFY_NEEDED:
        return ""
    return (
        f"warning: fs.inotify.max_user_instances is {limit}: the suite's gateways may fail with 'couldn't "
        f"initialize inotify: too many open files'. Fix (root): sysctl -w fs.inotify.max_user_instances={INOTIFY_NEEDED}"
    )
