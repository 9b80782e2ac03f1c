"""The upgrade check on the embedded local mesh: in-place and canary, under Locust load.

Flow (each step's wall time and the load's request/failure counts are kept per phase):

1. the skew rule on FROM -> TO (exit 2 before anything starts); both releases installed
   (TO lazily: ``meshproof install --istio TO`` is what runs);
2. the mesh up on FROM; the suites run against it (``suites-report.json`` = the figures before);
   every proxy's config_dump is recorded; every proxy's and istiod's version is read from it
   (:mod:`.running`: Envoy's ``/server_info``, istiod's ``/version``) and must be FROM's;
3. Locust starts (the load issue's :class:`~harness.load.LocustRun`, a subprocess); phase
   ``baseline`` lasts until the load completed ``--phase-requests`` requests;
4. control plane: *in-place* replaces istiod by the TO build on the same ports; *canary* starts
   a TO istiod of its own revision beside it;
5. data plane: each proxy (replicas, then the ingress gateway; in canary one namespace at a
   time) restarts on the TO build: the new pilot-agent + Envoy starts beside the old one, is
   ready and has ACKed its config, then the old one drains and stops. The skew rule is checked
   before each step on the versions read at the end of the previous phase, and each step is its
   own phase; at its end the versions are read again (a restarted proxy, a new istiod must run TO's).
   Across each proxy step two connections to the ingress gateway are held (:mod:`.held`: an
   HTTP/1.1 keep-alive connection, an HTTP/2 stream kept open) and their fate reported;
6. canary: the old istiod is removed; phase ``after``; Locust stops;
7. every proxy's and istiod's version is read and must be TO's; every proxy's config_dump is
   compared with its baseline; the suites run again on TO, their records paired with the first
   run's on their stable ``id``.

A phase ends only after the load completed ``phase_requests`` further requests, so every phase
holds evidence (counts), whatever the machine's speed. What each phase cost (failed requests,
error-seconds, the longest gap without a successful response) comes from the load report
(:meth:`.report.Phase.of`); the held connections' fate is shown, never decided.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness import httpclient, paths, proc, wait
from harness.errors import BackendError, HarnessError
from harness.report import compare
from harness.report.runs import write_upgrade
from harness.settings import Settings
from harness.upgrade import configdiff, running, skew
from harness.upgrade import held as held_mod
from harness.upgrade.report import Phase, Point, UpgradeReport, chart
from harness.versions import ISTIO_RELEASES

MODES = ("in-place", "canary")
ALLOWANCES = Path(__file__).with_name("allowed_diffs.yaml")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class UpgradeConfig:
    from_label: str
    to_label: str
    mode: str = "in-place"
    users: int = 10
    phase_requests: int = 300  # requests the load must complete in each phase before it ends
    max_failures: int = 0  # the bound per phase
    run_suites: bool = True
    suites: tuple[str, ...] = ("suites/",)  # pytest arguments for the before/after suites
    to_config: tuple[Path, ...] = ()  # extra Istio YAML applied with the TO control plane
    out_dir: Path | None = None  # report, chart, suite reports (default: <state>/upgrade)
    step_timeout: float = 300.0
    # internal, never a CLI option: False kills each old proxy before its successor starts (no
    # drain, a gap): the negative control of what the report says a restart costs
    drain: bool = True

    def __post_init__(self) -> None:
        from harness.errors import UserError

        if self.mode not in MODES:
            raise UserError(f"unknown --mode {self.mode!r}. Fix: use one of {', '.join(MODES)}")
        if self.users < 1:
            raise UserError(f"--users {self.users}: at least 1 user. Fix: --users 10")
        if self.phase_requests < 1:
            raise UserError(f"--phase-requests {self.phase_requests}: at least 1")
        if self.max_failures < 0:
            raise UserError(f"--max-failures {self.max_failures} must not be negative")
        skew.check_upgrade(self.from_label, self.to_label)


def load_allowances(
    from_label: str, to_label: str, path: Path = ALLOWANCES
) -> tuple[configdiff.Allowance, ...]:
    table = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return configdiff.allowances_for(table or {}, from_label, to_label)


def config_dumps(http: httpx.Client, admin_urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``ns/pod`` -> normalised config_dump of its proxy."""
    out = {}
    for ref, url in admin_urls.items():
        try:
            r = http.get(f"{url}/config_dump")
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise BackendError(f"cannot read the config_dump of {ref} at {url}: {e}") from e
        out[ref] = configdiff.normalise(r.json())
    return out


def diff_all(
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    allowances: Sequence[configdiff.Allowance],
) -> configdiff.Classified:
    diffs: list[configdiff.Difference] = []
    for ref in sorted(set(before) | set(after)):
        if ref not in after:
            diffs.append(configdiff.Difference(ref, "proxy", "removed"))
        elif ref not in before:
            diffs.append(configdiff.Difference(ref, "proxy", "added"))
        else:
            diffs += configdiff.diff(ref, before[ref], after[ref])
    allowed, unexpected = configdiff.classify(diffs, allowances)
    return configdiff.Classified(
        tuple(allowed), tuple(unexpected), len(before), sum(len(v) for v in before.values())
    )


def proxy_order(proxies: dict[str, dict[str, Any]], gateway_key: str, mode: str) -> list[list[str]]:
    """Groups of proxy keys (``ns.pod``) restarted one at a time: workloads first, the ingress
    gateway last (its clients are outside the mesh); canary: one group per namespace."""
    keys = sorted(k for k in proxies if k != gateway_key)
    if mode == "canary":
        groups: dict[str, list[str]] = {}
        for k in keys:
            groups.setdefault(k.split(".", 1)[0], []).append(k)
        out = [groups[ns] for ns in sorted(groups)]
    else:
        out = [keys] if keys else []
    if gateway_key in proxies:
        out.append([gateway_key])
    return out


@dataclass
class _Run:
    """Mutable bookkeeping of one upgrade run (the report is frozen at the end)."""

    marks: list[tuple[str, str, float, dict[str, Any]]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    read: running.Snapshot | None = None  # the versions read last (at the end of the last phase)
    step_mismatches: list[str] = field(default_factory=list)
    held: dict[str, list[held_mod.Held]] = field(default_factory=dict)  # phase -> held connections


class LocalUpgrade:
    """Runs one upgrade check on the local backend; :meth:`run` returns the report."""

    def __init__(
        self,
        settings: Settings,
        config: UpgradeConfig,
        progress: Progress | None = None,
        *,
        expected_of: Callable[[str], running.Expected] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.say = progress or (lambda _m: None)
        # what a release runs: from its installed binaries (a test may inject another expectation)
        self.expected_of = expected_of or functools.partial(running.expected_of, settings)
        self.out_dir = (config.out_dir or settings.state_dir / "upgrade").resolve()
        self.http = httpclient.client(timeout=15.0)

    # ---- pieces ------------------------------------------------------------------------
    def install(self) -> float:
        from harness.toolchain import istio_local

        t0 = time.monotonic()
        for label in dict.fromkeys((self.config.from_label, self.config.to_label)):
            istio_local.install(self.settings.with_overrides(istio_version=label), self.say)
        return time.monotonic() - t0

    def run_suites(self, label: str, name: str) -> dict[str, Any]:
        """pytest on the running mesh (it attaches through the state dir); the suites' report."""
        report = self.settings.state_dir / "suites-report.json"
        report.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "pytest", *self.config.suites, "-q", "-p", "no:cacheprovider"]
        env = self.suite_env(label)
        self.say(f"suites on Istio {label}: {' '.join(argv[1:])}")
        done = proc.run(argv, env=env, cwd=paths.CHECKOUT, timeout=3600, check=False)
        log = self.out_dir / f"suites-{name}.log"
        log.write_text(done.stdout + done.stderr)
        if not report.is_file():
            raise HarnessError(
                f"the suites on Istio {label} wrote no suites-report.json (pytest exit {done.returncode}); "
                f"see {log}"
            )
        shutil.copy(report, self.out_dir / f"suites-{name}.json")
        page = report.with_name("suites-report.html")
        if page.is_file():  # the suites' own page (harness.report), kept beside its JSON
            shutil.copy(page, self.out_dir / f"suites-{name}.html")
        doc: dict[str, Any] = json.loads(report.read_text())
        return doc

    def suite_env(self, label: str) -> dict[str, str]:
        """The suites attach to the running mesh through its state dir."""
        return {
            "MESHPROOF_BACKEND": "local",
            "MESHPROOF_STATE": str(self.settings.state_dir.resolve()),
            "MESHPROOF_MANIFESTS": str(self.settings.manifests.resolve()),
            "MESHPROOF_ISTIO": label,
        }

    def _admin_urls(self, mesh: Any) -> dict[str, str]:
        return {w.ref: w.proxy_admin_url for w in mesh.workloads() if w.proxy_admin_url}

    def read_versions(self, mesh: Any, when: str) -> running.Snapshot:
        """Every proxy's and istiod's version, read from them (not from the supervisor's plan)."""
        admins = {k: f"http://127.0.0.1:{p['admin']}" for k, p in mesh.proxy_versions().items()}
        monitoring = {rev: str(cp["monitoring_url"]) for rev, cp in mesh.control_planes().items()}
        return running.snapshot(self.http, when, admins, monitoring)

    def _check_skew(
        self, mesh: Any, read: running.Snapshot, cp_label: str, proxy_label: str, what: str
    ) -> None:
        """The skew rule for the step, and for every proxy left on its control plane, on the versions
        ``read`` from them (an unreadable or unknown one is skipped here; the version check fails it)."""
        skew.check_step(cp_label, proxy_label, what)
        revisions = {k: p["revision"] for k, p in mesh.proxy_versions().items()}  # who connects where
        for p in read.proxies:
            cp = read.control_plane(revisions.get(p.proxy, ""))
            if p.istio_version in ISTIO_RELEASES and cp is not None and cp.istio_version in ISTIO_RELEASES:
                skew.check_step(cp.istio_version, p.istio_version, f"{what} (proxy {p.proxy})")

    # ---- the flow ----------------------------------------------------------------------
    def run(self) -> UpgradeReport:
        from harness.backends.local.backend import LocalBackend

        cfg = self.config
        t_start = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        book = _Run()
        book.timings["install_s"] = self.install()
        expected_from, expected_to = self.expected_of(cfg.from_label), self.expected_of(cfg.to_label)
        allowances = load_allowances(cfg.from_label, cfg.to_label)
        s_from = self.settings.with_overrides(istio_version=cfg.from_label, backend="local")
        t0 = time.monotonic()
        self.say(f"mesh up on Istio {cfg.from_label}")
        with LocalBackend(s_from, self.say) as mesh:
            mesh.up()
            book.timings["up_s"] = time.monotonic() - t0
            before_suites: dict[str, Any] = {}
            if cfg.run_suites:
                t0 = time.monotonic()
                before_suites = self.run_suites(cfg.from_label, "before")
                book.timings["suites_before_s"] = time.monotonic() - t0
                mesh.reload_plan()  # the suites may have restarted proxies (a ServiceAccount change)
            dumps_before = config_dumps(self.http, self._admin_urls(mesh))
            book.read = versions_before = self.read_versions(mesh, "before the upgrade")
            self.say(f"versions before: {versions_before.compact()}")
            load_report = self._upgrade_under_load(mesh, book, expected_to)
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
            expected_from,
            expected_to,
            versions_before,
            versions_after,
            tuple(book.step_mismatches),
        )
        phases, timeline = self._phases(load_report, book)
        rep = UpgradeReport(
            from_label=cfg.from_label,
            to_label=cfg.to_label,
            mode=cfg.mode,
            backend="local",
            users=cfg.users,
            max_failures=cfg.max_failures,
            phases=tuple(phases),
            suites=compare.compare(before_suites, after_suites) if cfg.run_suites else None,
            config=classified,
            versions=versions,
            timeline=tuple(timeline),
            wall_s=time.monotonic() - t_start,
            timings=book.timings,
            load_tool="Locust (harness.load.LocustRun)",
        )
        png = chart(
            rep.phases,
            rep.timeline,
            self.out_dir / "upgrade.png",
            f"Istio {cfg.from_label} -> {cfg.to_label} ({cfg.mode}), {cfg.users} Locust users",
        )
        rep = UpgradeReport(**{**rep.__dict__, "chart": str(png)})
        (self.out_dir / "upgrade-report.json").write_text(json.dumps(rep.as_json(), indent=2) + "\n")
        write_upgrade(self.out_dir, rep.as_json())
        return rep

    def _phase(
        self,
        mesh: Any,
        book: _Run,
        load: Any,
        name: str,
        kind: str,
        step: Callable[[], dict[str, Any]] | None,
        runs_to: running.Check,
        held: Sequence[held_mod.HeldConnection],
        *,
        interval: float,
        hint: str,
    ) -> None:
        """One phase (its load phase already marked, ``held`` opened): the step, then
        ``phase_requests`` more load requests (late failures show here), the held connections
        ended whatever happened, the versions read again and what the step started checked."""
        cfg = self.config
        t0 = time.monotonic()
        try:
            detail = step() if step is not None else {}
            detail["step_s"] = round(time.monotonic() - t0, 3)
            self.say(f"{name}: {detail}")
            start = load.progress().requests
            wait.until(
                lambda: load.progress().requests >= start + cfg.phase_requests,
                what=f"{cfg.phase_requests} load requests during phase {name!r}",
                timeout=cfg.step_timeout,
                interval=interval,
                hint=hint,
            )
        finally:
            book.held[name] = [h.stop() for h in held]
        book.read = read = self.read_versions(mesh, f"end of phase {name!r}")
        detail["versions"] = read.compact()
        book.step_mismatches += runs_to(read)
        book.marks.append((name, kind, time.monotonic() - t0, detail))

    def _upgrade_under_load(self, mesh: Any, book: _Run, expected_to: running.Expected) -> Any:
        from harness.load import LoadConfig

        cfg = self.config
        # Through the ingress: every hop after Locust is Envoy to Envoy, as in Kubernetes. Not the
        # in-mesh client path: locally a client's app outlives its sidecar's restart and its
        # connections to the old sidecar can race the socket's close, a hop Kubernetes does not
        # have (there the app restarts with its pod).
        load = mesh.load_runner(
            LoadConfig(users=cfg.users, user_class="ingress"), workdir=self.out_dir / "load"
        )
        with load:

            def phase(
                name: str,
                kind: str,
                step: Callable[[], dict[str, Any]] | None = None,
                runs_to: Callable[[running.Snapshot], list[str]] = lambda _r: [],
            ) -> None:
                """A step and N more load requests; then the versions read again, and what the
                step started (``runs_to``: a restarted proxy, a new istiod) must run TO's. A proxy
                restart holds two connections to the ingress gateway across it (:mod:`.held`)."""
                load.phase(name)
                held = held_mod.hold(held_mod.PROTOCOLS, *ingress) if kind == "data-plane" else []
                self._phase(
                    mesh,
                    book,
                    load,
                    name,
                    kind,
                    step,
                    runs_to,
                    held,
                    interval=0.1,
                    hint="Locust is not completing requests: see its log in " + str(self.out_dir / "load"),
                )

            url = httpx.URL(mesh.ingress_url())
            ingress = (url.host, url.port or 80)
            phase("baseline", "baseline")
            to, rev = cfg.to_label, skew.revision_of(cfg.to_label)
            if cfg.mode == "in-place":
                assert book.read is not None
                for p in book.read.proxies:
                    if p.istio_version in ISTIO_RELEASES:
                        skew.check_step(
                            to, p.istio_version, f"replacing istiod by {to} in place (proxy {p.proxy})"
                        )
                phase(
                    f"control-plane {cfg.from_label}->{to}",
                    "control-plane",
                    lambda: self._cp_replace(mesh),
                    running.control_plane_runs("default", expected_to),
                )
                target_rev = "default"
            else:
                phase(
                    f"control-plane canary {rev}",
                    "control-plane",
                    lambda: mesh.upgrade_step("istiod-add", istio=to, revision=rev, timeout=cfg.step_timeout),
                    running.control_plane_runs(rev, expected_to),
                )
                target_rev = rev
            if cfg.to_config:
                phase(
                    "apply --to-config",
                    "control-plane",
                    lambda: {"ack_s": round(mesh.apply(list(cfg.to_config)), 3)},
                )
            gw = mesh.plan.get("gateway") or {}
            gw_key = f"{gw['namespace']}.{gw['pod']}" if gw else ""
            for group in proxy_order(mesh.proxy_versions(), gw_key, cfg.mode):
                for key in group:
                    assert book.read is not None
                    plane = book.read.control_plane(target_rev)
                    known = plane is not None and plane.istio_version in ISTIO_RELEASES
                    cp = plane.istio_version if known and plane is not None else to
                    self._check_skew(mesh, book.read, cp, to, f"restarting proxy {key} on {to}")
                    ns, pod = key.split(".", 1)
                    phase(
                        f"proxy {ns}/{pod}",
                        "data-plane",
                        functools.partial(
                            mesh.upgrade_step,
                            "proxy-upgrade",
                            proxy=key,
                            istio=to,
                            revision=target_rev,
                            drain=cfg.drain,
                            timeout=cfg.step_timeout,
                        ),
                        running.proxy_runs(key, expected_to),
                    )
            if cfg.mode == "canary":
                phase(
                    "remove old control plane",
                    "cleanup",
                    lambda: mesh.upgrade_step("istiod-remove", revision="default", timeout=cfg.step_timeout),
                )
            phase("after", "after")
        return load.report

    def _cp_replace(self, mesh: Any) -> dict[str, Any]:
        return dict(
            mesh.upgrade_step("istiod-replace", istio=self.config.to_label, timeout=self.config.step_timeout)
        )

    def _phases(self, load_report: Any, book: _Run) -> tuple[list[Phase], list[Point]]:
        details = {name: (kind, detail) for name, kind, _, detail in book.marks}
        phases = []
        for p in load_report.phases:
            if p.name not in details:
                continue  # Locust's own spawn / first phase before the upgrade began
            kind, detail = details[p.name]
            phases.append(Phase.of(p, kind, detail, book.held.get(p.name, ())))
        timeline = [Point(b.t, b.requests, b.failures, b.width_s) for b in load_report.series]
        return phases, timeline
