"""The upgrade check on a cluster (``--backend kind`` or ``existing``), under in-cluster Locust load.

The same check as :mod:`.local` (it reuses its suites run, config diff, phases and report), with
the steps Istio documents for a cluster (:mod:`.kube` plans them):

1. bad input first, before anything is created: the kubeconfig context exists (existing), the
   cluster runs Istio, and it runs FROM (one revision) and not TO already (:func:`check_cluster`);
2. kind: the cluster comes up on FROM (FROM's istioctl and images, as ``up --backend kind --istio
   FROM``); TO's istioctl and its pilot/proxyv2 images are built only now, when missing, and
   loaded into the nodes before TO is installed; existing: meshproof's mesh goes up on the
   cluster's Istio;
3. suites before; every proxy's config_dump; every proxy's and istiod's version, read from them;
4. in-cluster Locust (:class:`~harness.backends.kube.load_runner.KubeLocustRun`) through the
   ingress gateway across every phase: ``baseline``; the control plane (canary: TO's ``istioctl
   install --set revision=TO``; in-place: TO's ``istioctl install`` over FROM), with the overlay
   the mesh was installed with; per namespace (one at a time) the move (canary: the revision
   label) and a rolling restart of its Deployments; canary: ``istioctl uninstall --revision FROM``;
   ``after``. Each step is a phase that lasts until the load completed ``--phase-requests`` more
   requests; an istioctl failure is raised as istioctl reported it;
5. versions, config_dumps and the suites again; the report (:mod:`.report`).

Ctrl-C during the steps (:func:`.kube.recovery`): canary goes back to FROM (moved namespaces
relabelled and restarted, TO uninstalled) unless FROM's removal had started (then forward to TO);
in-place has one revision. The message names the revision the cluster is left on.

Proxies are keyed ``namespace/deployment#i`` (the i-th live pod by name): a restart replaces the
pods under new names, and the config diff and the version checks compare the same place.
"""

from __future__ import annotations

import datetime
import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness import proc
from harness.errors import UserError
from harness.report import compare
from harness.report.runs import write_upgrade
from harness.settings import Settings
from harness.upgrade import configdiff, kube, running, skew
from harness.upgrade import held as held_mod
from harness.upgrade.local import (
    ALLOWANCES,
    LocalUpgrade,
    UpgradeConfig,
    _Run,
    config_dumps,
    diff_all,
    load_allowances,
)
from harness.upgrade.report import UpgradeReport, chart
from harness.versions import ISTIO_RELEASES

BACKENDS = ("kind", "existing")


# ---- bad input, before anything is created (pure, or on an injected API) --------------------------


def check_context(wanted: str, contexts: Sequence[str], kubeconfig: str) -> None:
    """``wanted`` must be a context of the kubeconfig ("" = its current one, which must exist)."""
    where = kubeconfig or "the kubeconfig"
    if not contexts:
        raise UserError(f"{where} has no contexts. Fix: point KUBECONFIG at a cluster's kubeconfig")
    if wanted and wanted not in contexts:
        raise UserError(
            f"--kube-context {wanted!r} is not a context of {where} (it has: {', '.join(sorted(contexts))}). "
            "Fix: pass one of those"
        )


def kube_contexts(kubeconfig: str = "") -> list[str]:
    """The context names of ``kubeconfig`` (KUBECONFIG / ~/.kube/config by default); [] when unreadable."""
    import os

    from kubernetes import config as kconfig

    # KUBECONFIG read now: the client library reads it once, when first imported
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        contexts, _current = kconfig.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - no file, or not a kubeconfig: reported as "no contexts"
        return []
    return [str(c.get("name")) for c in contexts or []]


def installed_revisions(api: Any) -> dict[str, str]:
    """Revision (``default`` for an install without one) -> the Istio release its istiod runs (its
    image tag, as a pinned label where the minor matches one)."""
    from harness.backends.kube.istio_install import ISTIO_NAMESPACE, image_version

    out = {}
    for dep in api.list("apps/v1", "Deployment", ISTIO_NAMESPACE, "app=istiod"):
        meta = dep.get("metadata") or {}
        rev = str((meta.get("labels") or {}).get(kube.REV_LABEL) or "default")
        containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
            "containers"
        ) or []
        image = next((str(c.get("image", "")) for c in containers if c.get("name") == "discovery"), "")
        out[rev] = kube.minor_label(image_version(image)) if image_version(image) else "?"
    return out


def check_cluster(api: Any, from_label: str, to_label: str, where: str) -> str:
    """The cluster must run Istio FROM as its only revision, and not TO's revision: one line each
    otherwise (exit 2). Returns FROM's revision."""
    revs = installed_revisions(api)
    if not revs:
        raise UserError(
            f"{where} runs no Istio (no istiod Deployment, app=istiod, in istio-system). "
            f"Fix: install Istio {from_label} first, or use --backend kind (it installs FROM)"
        )
    seen = ", ".join(f"{r} runs {v}" for r, v in sorted(revs.items()))
    if len(revs) > 1:
        raise UserError(
            f"{where} runs several Istio revisions ({seen}): an upgrade is already under way. "
            "Fix: finish or undo it (istioctl uninstall --revision R) first"
        )
    rev, version = next(iter(revs.items()))
    if version != from_label:
        fix = f"--from {version}" if version in ISTIO_RELEASES else f"install Istio {from_label} first"
        raise UserError(f"{where} runs Istio {version} ({seen}), not --from {from_label}. Fix: {fix}")
    if rev == skew.revision_of(to_label):
        raise UserError(
            f"{where}: revision {rev} is TO's revision name already. Fix: install FROM without that revision"
        )
    return rev


def cluster_allowances(mode: str, path: Path = ALLOWANCES) -> tuple[configdiff.Allowance, ...]:
    """The reviewed differences a canary on a cluster makes whatever the releases (the control
    plane's Services change): ``allowed_diffs.yaml``'s ``canary on a cluster``; none in place."""
    if mode != "canary":
        return ()
    table = yaml.safe_load(path.read_text()) or {}
    return configdiff.allowances_for({"x->y": table.get(CANARY_KEY) or []}, "x", "y")


CANARY_KEY = "canary on a cluster"


# ---- stable proxy keys ---------------------------------------------------------------------------


def stable_keys(workloads: Sequence[Any]) -> dict[str, Any]:
    """``namespace/deployment#i`` -> workload (the i-th of its Deployment's live pods by name)."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for w in workloads:
        if w.proxy_admin_url:
            groups.setdefault((w.namespace, w.deployment or w.name), []).append(w)
    out = {}
    for (ns, dep), ws in sorted(groups.items()):
        for i, w in enumerate(sorted(ws, key=lambda w: w.name)):
            out[f"{ns}/{dep}#{i}"] = w
    return out


def expected_of_cluster(settings: Settings, label: str) -> running.Expected:
    """What release ``label``'s images run: its label, and the build string of the Envoy its
    proxyv2 image holds (the cluster binaries' Envoy, ``envoy --version``)."""
    from harness.toolchain import istio_cluster

    bins = istio_cluster.load(settings.cache_dir, label)
    out = proc.run([bins.envoy, "--version"], timeout=60)
    return running.Expected(label, running.parse_envoy_version_output(out.stdout + out.stderr))


class KubeUpgrade(LocalUpgrade):
    """One upgrade check on a cluster; :meth:`run` returns the report (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        config: UpgradeConfig,
        progress: Callable[[str], None] | None = None,
        *,
        expected_of: Callable[[str], running.Expected] | None = None,
        contexts: Callable[[str], list[str]] = kube_contexts,
        api_factory: Callable[[str, str], Any] | None = None,
    ) -> None:
        if settings.backend not in BACKENDS:
            raise UserError(f"KubeUpgrade runs on {', '.join(BACKENDS)}, not {settings.backend}")
        super().__init__(
            settings,
            config,
            progress,
            expected_of=expected_of or functools.partial(expected_of_cluster, settings),
        )
        self._contexts = contexts
        self._api_factory = api_factory
        self.plan: kube.KubePlan | None = None

    # ---- before anything is created -------------------------------------------------------------
    def preflight(self) -> None:
        """Existing: the context exists, the cluster runs FROM and only FROM; nothing is created."""
        if self.settings.backend != "existing":
            return
        ctx = self.settings.kube_context
        check_context(ctx, self._contexts(""), "the kubeconfig (KUBECONFIG or ~/.kube/config)")
        from harness.backends.kube.api import ClusterApi

        factory = self._api_factory or (lambda kc, c: ClusterApi(kc or None, c or None))
        api = factory("", ctx)
        where = f"context {ctx or '(current)'}"
        try:
            api.server_version()
            check_cluster(api, self.config.from_label, self.config.to_label, where)
        finally:
            api.close()

    def install(self) -> float:
        """FROM's and TO's istioctl (and the rest of their cluster binaries), built when missing."""
        from harness.toolchain import istio_cluster

        t0 = time.monotonic()
        for label in dict.fromkeys((self.config.from_label, self.config.to_label)):
            istio_cluster.ensure(self.settings.cache_dir, label, say=self.say, prefix=("nice", "-n", "19"))
        return time.monotonic() - t0

    def suite_env(self, label: str) -> dict[str, str]:
        s = self.settings
        return {
            "MESHPROOF_BACKEND": s.backend,
            "MESHPROOF_STATE": str(s.state_dir.resolve()),
            "MESHPROOF_MANIFESTS": str(s.manifests.resolve()),
            "MESHPROOF_ISTIO": label,
            "MESHPROOF_KIND_CLUSTER": s.kind_cluster,
            "MESHPROOF_KUBE_CONTEXT": s.kube_context,
            "MESHPROOF_KEEP_CLUSTER": "1",  # the suites attach; the cluster is this check's
        }

    def _admin_urls(self, mesh: Any) -> dict[str, str]:
        return {k: w.proxy_admin_url for k, w in stable_keys(mesh.workloads()).items()}

    def read_versions(self, mesh: Any, when: str) -> running.Snapshot:
        monitoring = {rev: str(cp["monitoring_url"]) for rev, cp in mesh.control_planes().items()}
        return running.snapshot(self.http, when, self._admin_urls(mesh), monitoring)

    # ---- the flow ---------------------------------------------------------------------------------
    def run(self) -> UpgradeReport:
        from harness.backends.kube.backend import KubeBackend

        cfg = self.config
        self.preflight()
        t_start = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        book = _Run()
        book.timings["install_s"] = self.install()
        expected_from, expected_to = self.expected_of(cfg.from_label), self.expected_of(cfg.to_label)
        allowances = load_allowances(cfg.from_label, cfg.to_label) + cluster_allowances(cfg.mode)
        s_from = self.settings.with_overrides(istio_version=cfg.from_label)
        t0 = time.monotonic()
        self.say(f"mesh up on Istio {cfg.from_label} ({s_from.backend})")
        with KubeBackend(s_from, progress=self.say) as mesh:
            mesh.up()
            book.timings["up_s"] = time.monotonic() - t0
            if s_from.backend == "existing":
                where = f"context {mesh.recorded.get('context') or '(current)'}"
                rev_from = check_cluster(mesh.api, cfg.from_label, cfg.to_label, where)
            else:
                rev_from = "default"
            before_suites: dict[str, Any] = {}
            if cfg.run_suites:
                t0 = time.monotonic()
                before_suites = self.run_suites(cfg.from_label, "before")
                book.timings["suites_before_s"] = time.monotonic() - t0
            dumps_before = config_dumps(self.http, self._admin_urls(mesh))
            book.read = versions_before = self.read_versions(mesh, "before the upgrade")
            self.say(f"versions before: {versions_before.compact()}")
            t0 = time.monotonic()
            self.prepare_to(mesh)
            book.timings["to_images_s"] = time.monotonic() - t0
            load_report = self._upgrade_under_load(mesh, book, expected_to, rev_from)
            versions_after = self.read_versions(mesh, "after the upgrade")
            self.say(f"versions after: {versions_after.compact()}")
            dumps_after = config_dumps(self.http, self._admin_urls(mesh))
            after_suites: dict[str, Any] = {}
            if cfg.run_suites:
                t0 = time.monotonic()
                after_suites = self.run_suites(cfg.to_label, "after")
                book.timings["suites_after_s"] = time.monotonic() - t0
        classified = diff_all(dumps_before, dumps_after, allowances)
        versions = running.VersionReport(
            expected_from, expected_to, versions_before, versions_after, tuple(book.step_mismatches)
        )
        phases, timeline = self._phases(load_report, book)
        rep = UpgradeReport(
            from_label=cfg.from_label,
            to_label=cfg.to_label,
            mode=cfg.mode,
            backend=self.settings.backend,
            users=cfg.users,
            max_failures=cfg.max_failures,
            phases=tuple(phases),
            suites=compare.compare(before_suites, after_suites) if cfg.run_suites else None,
            config=classified,
            versions=versions,
            timeline=tuple(timeline),
            wall_s=time.monotonic() - t_start,
            timings=book.timings,
            load_tool="in-cluster Locust (harness.backends.kube.load_runner.KubeLocustRun)",
        )
        png = chart(
            rep.phases,
            rep.timeline,
            self.out_dir / "upgrade.png",
            f"Istio {cfg.from_label} -> {cfg.to_label} ({cfg.mode}, {self.settings.backend}), "
            f"{cfg.users} Locust users",
        )
        rep = UpgradeReport(**{**rep.__dict__, "chart": str(png)})
        (self.out_dir / "upgrade-report.json").write_text(json.dumps(rep.as_json(), indent=2) + "\n")
        write_upgrade(self.out_dir, rep.as_json())
        return rep

    def prepare_to(self, mesh: Any) -> None:
        """TO's images where the cluster runs them (kind: built when missing, loaded into the nodes)."""
        load = getattr(mesh.cluster, "load_release_images", None)
        if callable(load):
            load(self.config.to_label)

    def _overlay(self, mesh: Any) -> str:
        """The IstioOperator overlay for TO's install: the mesh's own, with TO's image tag."""
        write = getattr(mesh.cluster, "upgrade_overlay", None)
        return str(write(self.config.to_label)) if callable(write) else ""

    def _plan(self, mesh: Any, rev_from: str) -> tuple[kube.KubePlan, dict[str, list[str]], str]:
        from harness.toolchain import istio_cluster

        cfg = self.config
        deployments: dict[str, list[str]] = {}
        for w in mesh.workloads():
            if w.role == "gateway" or not w.deployment:
                continue
            deployments.setdefault(w.namespace, [])
            if w.deployment not in deployments[w.namespace]:
                deployments[w.namespace].append(w.deployment)
        # the workloads are the manifests' Deployments: Locust's (the load's) are not among them
        deployments = {ns: sorted(d) for ns, d in sorted(deployments.items())}
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        info = mesh.recorded
        p = kube.plan(
            cfg.from_label,
            cfg.to_label,
            cfg.mode,
            list(deployments),
            deployments,
            istioctl_to=istio_cluster.load(self.settings.cache_dir, cfg.to_label).istioctl,
            when=when,
            rev_from=rev_from,
            overlay=self._overlay(mesh),
            kubeconfig=str(info.get("kubeconfig") or ""),
            context=str(info.get("context") or ""),
            timeout_s=int(max(cfg.step_timeout, 300)),
        )
        return p, deployments, when

    def _upgrade_under_load(  # type: ignore[override]
        self, mesh: Any, book: _Run, expected_to: running.Expected, rev_from: str
    ) -> Any:
        from harness.backends.kube.api import ObjectRef
        from harness.load import LoadConfig

        cfg = self.config
        p, deployments, when = self._plan(mesh, rev_from)
        self.plan = p
        self.say("plan: " + "; ".join(s.name for s in p.steps))
        labels_before = {}  # meshproof's labels of each namespace, for a rollback
        for ns in deployments:
            live = mesh.api.get(ObjectRef("v1", "Namespace", "", ns)) or {}
            labels = (live.get("metadata") or {}).get("labels") or {}
            labels_before[ns] = {k: str(v) for k, v in labels.items() if not k.startswith("kubernetes.io/")}
        run = functools.partial(_run_verbatim, self.say, self.out_dir)
        load = mesh.load_runner(
            LoadConfig(users=cfg.users, user_class="ingress"), workdir=self.out_dir / "load"
        )
        started = -1
        with load:

            def phase(
                name: str, kind: str, step: Callable[[], dict[str, Any]] | None, runs_to: running.Check
            ) -> None:
                load.phase(name)
                # across a step, two connections to the ingress held (held.py); the gateway restarts
                # in the control plane's step here (istioctl install changes its Deployment)
                restarts = kind in ("control-plane", "data-plane") and ingress is not None
                held = held_mod.hold(held_mod.PROTOCOLS, *ingress) if restarts and ingress else []
                self._phase(
                    mesh,
                    book,
                    load,
                    name,
                    kind,
                    step,
                    runs_to,
                    held,
                    interval=0.5,
                    hint="in-cluster Locust is not completing requests: see " + str(self.out_dir / "load"),
                )

            url = httpx.URL(mesh.ingress_url())
            # kind publishes the ingress on 127.0.0.1; a port-forward (existing) is not held across
            # the gateway's restart, so nothing is held there
            ingress = (url.host, url.port or 80) if url.host == "127.0.0.1" else None

            def control_plane_version(rev: str) -> str:
                assert book.read is not None
                cp = book.read.control_plane(rev or "default")
                return cp.istio_version if cp is not None and cp.istio_version else cfg.to_label

            rev_to = skew.revision_of(cfg.to_label) if cfg.mode == "canary" else "default"
            try:
                phase("baseline", "baseline", None, lambda _r: [])
                for i, s in enumerate(p.steps):
                    started = i

                    def step(s: kube.KubeStep = s) -> dict[str, Any]:
                        return kube.run_step(
                            s,
                            cfg.mode,
                            mesh.api,
                            run,
                            control_plane_version=control_plane_version,
                            rollout_timeout=cfg.step_timeout,
                        )

                    phase(s.name, s.kind, step, self._runs_to(s, mesh, rev_to, expected_to))
                    if i == 0 and cfg.to_config:
                        phase(
                            "apply --to-config",
                            "control-plane",
                            lambda: {"ack_s": round(mesh.apply(list(cfg.to_config)), 3)},
                            lambda _r: [],
                        )
                started = len(p.steps)
                phase("after", "after", None, lambda _r: [])
            except KeyboardInterrupt:
                self._interrupted(mesh, p, started, rev_from, labels_before, deployments, when, run)
                raise
        return load.report

    def _runs_to(
        self, s: kube.KubeStep, mesh: Any, rev_to: str, expected_to: running.Expected
    ) -> running.Check:
        """What must run TO's build at the end of step ``s``'s phase: the new istiod, or every proxy
        of the namespace moved."""
        if s.kind == "control-plane" and s.argv[1:2] == ("install",):
            return running.control_plane_runs(rev_to, expected_to)
        if s.kind == "data-plane":
            ns = s.namespace

            def check(read: running.Snapshot) -> list[str]:
                out: list[str] = []
                for p in read.proxies:
                    if p.proxy.startswith(f"{ns}/"):
                        out += running.proxy_runs(p.proxy, expected_to)(read)
                return out

            return check
        return lambda _r: []

    def _reinstall_from(self, mesh: Any, p: kube.KubePlan) -> tuple[str, ...]:
        """FROM's install as ``up`` ran it (FROM's istioctl and overlay), for a rollback; () where
        meshproof did not install FROM (existing: the control plane's options are the user's)."""
        from harness.toolchain import istio_cluster

        write = getattr(getattr(mesh, "cluster", None), "upgrade_overlay", None)
        if not callable(write):
            return ()
        istioctl = istio_cluster.load(self.settings.cache_dir, p.from_label).istioctl
        where = kube._where(p.steps[0].argv)
        return kube.install_argv(
            istioctl,
            overlay=str(write(p.from_label)),
            timeout_s=int(max(self.config.step_timeout, 300)),
            **where,
        )

    def _interrupted(
        self,
        mesh: Any,
        p: kube.KubePlan,
        started: int,
        rev_from: str,
        labels_before: Mapping[str, Mapping[str, str]],
        deployments: Mapping[str, Sequence[str]],
        when: str,
        run: Callable[..., Any],
    ) -> None:
        """Ctrl-C: the decision (:func:`.kube.recovery`), carried out where the cluster stays."""
        rec = kube.recovery(
            p,
            started,
            rev_from=rev_from,
            labels_before=labels_before,
            deployments=deployments,
            when=when,
            reinstall_from=self._reinstall_from(mesh, p) if p.mode == "canary" and started >= 0 else (),
        )
        stays = self.settings.backend == "existing" or self.settings.keep_cluster
        if not stays:
            self.say(f"interrupted at step {started}: the kind cluster is deleted (no --keep-cluster)")
            return
        self.say(f"interrupted: going to revision {rec.revision} ({rec.why})")
        for s in rec.steps:
            self.say(f"recovery: {s.name}")
            kube.run_step(
                s,
                p.mode,
                mesh.api,
                run,
                control_plane_version=lambda _r: "",
                rollout_timeout=self.config.step_timeout,
                check_skew=False,
            )
        self.say(rec.message())


def _run_verbatim(say: Callable[[str], None], out_dir: Path, argv: list[str], *, timeout: float) -> Any:
    """An istioctl command, its whole output kept in ``out_dir/istioctl-<n>.log``; a failure is
    raised as istioctl reported it (its exit code and last lines), naming that log."""
    from harness.errors import CommandFailed

    n = len(list(out_dir.glob("istioctl-*.log"))) + 1
    log = out_dir / f"istioctl-{n}.log"
    say("running " + " ".join(argv))
    try:
        done = proc.run(argv, timeout=timeout)
    except CommandFailed as e:
        log.write_text(
            f"$ {' '.join(argv)}\nexit {e.returncode}\n--- stdout\n{e.stdout}\n--- stderr\n{e.stderr}"
        )
        e.add_note(f"istioctl's whole output: {log}")
        raise
    log.write_text(f"$ {' '.join(argv)}\nexit 0\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    # what istioctl said, its lines as printed (a warning it proceeds past included), but its banner
    for line in (done.stdout + done.stderr).splitlines():
        if any(c.isalnum() for c in line):
            say(f"  istioctl: {line.rstrip()}")
    return done
