"""The ``meshproof`` command: argument parsing and printing only; the work happens in the modules it calls.

Exit codes: 0 success; 1 a run-time failure (:class:`~harness.errors.HarnessError`); 2 a user error
(bad arguments, invalid configuration, no mesh in the state dir, a missing tool); 130 interrupted.
``meshproof test`` exits with pytest's code (5 = no tests ran, a failure). Errors are one line per
problem on stderr, never a traceback; ``--debug`` or ``MESHPROOF_DEBUG=1`` re-raises them instead.
The ``--json`` documents are described in docs/CLI.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness import __version__, proc
from harness.errors import ConfigError, HarnessError, MeshproofError, StateError, UserError
from harness.settings import BACKENDS, Settings, from_env
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES

if TYPE_CHECKING:
    from harness.backends.base import Backend
    from harness.doctor import ToolStatus
    from harness.istio.model import Bundle

SUITES_DIR = "suites"
Handler = Callable[[argparse.Namespace, Settings, "Output"], int]


# ---------------------------------------------------------------------------------------------
# output


class Output:
    """Human output through rich on stdout, JSON as plain text, diagnostics on stderr."""

    def __init__(self) -> None:
        # Consoles resolve sys.stdout/sys.stderr when writing, so redirected streams are honoured.
        # Not a terminal (a log, a pipe): do not squeeze tables into 80 columns.
        width = None if sys.stdout.isatty() else 200
        self.console = Console(highlight=False, width=width)
        self.err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)

    def print(self, *objects: Any, style: str | None = None) -> None:
        """Print; strings are taken literally (no rich markup: config paths contain brackets) and
        are not wrapped, so lines stay greppable in logs."""
        plain = all(isinstance(o, str) for o in objects)
        self.console.print(
            *(Text(o) if isinstance(o, str) else o for o in objects), style=style, soft_wrap=plain
        )

    def note(self, message: str) -> None:
        self.err.print(Text(message), style="dim", soft_wrap=True)

    def warn(self, message: str) -> None:
        for line in message.splitlines() or [""]:
            print(f"meshproof: warning: {line}", file=sys.stderr)

    @staticmethod
    def json(doc: object) -> None:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        sys.stdout.flush()


def _table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, pad_edge=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    return table


def _row(table: Table, *cells: object) -> None:
    table.add_row(*(Text("" if c is None else str(c)) for c in cells))


# ---------------------------------------------------------------------------------------------
# verbs


def _cmd_up(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import create

    backend = create(settings)
    if args.detach:
        with _progress(out, backend, "bringing the mesh up"):
            backend.up(detach=True)
        _print_status(out, _status_doc(backend, settings))
        out.print(
            f"\nThe mesh runs in the background (state dir {settings.state_dir}). "
            f"Try `meshproof send -n 400`; stop it with `meshproof down --state {settings.state_dir}`."
        )
        return 0
    with backend:
        with _progress(out, backend, "bringing the mesh up"):
            backend.up()
        _print_status(out, _status_doc(backend, settings))
        out.print("\nThe mesh is up. Press Ctrl-C to take it down.")
        try:
            _wait_for_interrupt()
        except KeyboardInterrupt:
            out.print("taking the mesh down ...")
    out.print("The mesh is down.")
    return 0


def _cmd_apply(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    return _apply_or_delete(args, settings, out, delete=False)


def _cmd_delete(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    return _apply_or_delete(args, settings, out, delete=True)


def _apply_or_delete(args: argparse.Namespace, settings: Settings, out: Output, *, delete: bool) -> int:
    from harness.backends import attach
    from harness.istio.loader import load_paths
    from harness.istio.validate import validate_paths

    files: list[Path] = args.files
    backend = attach(settings)
    # Validate in the context of what the mesh runs, so references to subsets, gateways and
    # services defined elsewhere resolve.
    bundle = validate_paths(
        files, bundle_context=_running_config(backend, settings), istio_version=settings.istio_version
    )
    for w in bundle.warnings:
        out.warn(str(w))
    documents = len(load_paths(files))
    seconds = backend.delete(files) if delete else backend.apply(files)
    verb = "deleted" if delete else "applied"
    if args.json:
        out.json(
            {
                "action": verb,
                "files": [str(f) for f in files],
                "documents": documents,
                "propagation_s": round(seconds, 3),
            }
        )
    else:
        out.print(
            f"{verb} {_plural(documents, 'document')} from {', '.join(map(str, files))}; "
            f"every proxy had the change after {seconds:.2f} s"
        )
    return 0


def _cmd_send(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import attach

    headers = _parse_headers(args.header)
    if args.n < 1:
        raise UserError(f"-n {args.n}: the number of requests must be at least 1")
    if args.concurrency < 1:
        raise UserError(f"--concurrency {args.concurrency}: must be at least 1")
    backend = attach(settings)

    from harness.traffic.client import Sampler

    with Sampler(max_connections=max(64, args.concurrency)) as sampler:
        result = sampler.sample(
            backend,
            source=args.source,
            method=args.method,
            path=args.path,
            n=args.n,
            concurrency=args.concurrency,
            headers=headers,
        )
    summary = result.summary_json()
    if args.json:
        out.json(summary)
        return 0
    out.print(
        f"{summary['total']} × {args.method} {args.path} from {args.source} in {result.wall_s:.2f} s",
        style="bold",
    )
    _print_counts(out, "status", summary["status"], summary["total"])
    ok = summary["status"].get("200", 0)
    _print_counts(out, "version (200s)", summary["versions"], ok)
    _print_counts(out, "pod (200s)", summary["pods"], ok)
    lat = summary["latency_ms"]
    out.print(f"latency ms: p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}")
    errors = result.errors()
    if errors:
        out.print("failures", style="bold")
        table = _table("requests", "error (no HTTP response)")
        for message, count in errors.items():
            _row(table, count, message)
        out.print(table)
    return 0


def _cmd_fault(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import attach
    from harness.backends.base import Fault

    if args.clear:
        if args.status is not None or args.delay_ms is not None or args.rate is not None:
            raise UserError("--clear removes the fault; it takes no --status, --rate or --delay-ms")
        attach(settings).clear_fault(args.pod)
        out.print(f"fault on {args.pod} cleared")
        return 0
    delay = args.delay_ms or 0
    rate = 1.0 if args.rate is None else args.rate
    if args.status is None and delay == 0:
        raise UserError(
            "say what to inject: --status CODE and/or --delay-ms D (or --clear to remove a fault)"
        )
    if args.status is not None and not 100 <= args.status <= 599:
        raise UserError(f"--status {args.status}: an HTTP status code is between 100 and 599")
    if not 0.0 < rate <= 1.0:
        raise UserError(f"--rate {rate}: the share of requests to fail must be in (0, 1]")
    if delay < 0:
        raise UserError(f"--delay-ms {delay}: must not be negative")
    attach(settings).inject_fault(args.pod, Fault(status=args.status, rate=rate, delay_ms=delay))
    what = [f"status {args.status}"] if args.status is not None else []
    if delay:
        what.append(f"{delay} ms delay")
    out.print(f"fault on {args.pod}: {' + '.join(what)} for {rate:.0%} of requests")
    return 0


def _cmd_status(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import attach

    doc = _status_doc(attach(settings), settings)
    if args.json:
        out.json(doc)
    else:
        _print_status(out, doc)
    return 0


def _cmd_traces(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    import httpx

    from harness.backends import attach

    base = attach(settings).trace_query_url()
    if base is None:
        raise UserError(
            "tracing is not deployed in this mesh (the backend reports no Jaeger query URL). "
            "Fix: use a backend/manifests that deploy Jaeger"
        )
    base = base.rstrip("/")
    try:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            if not args.service:
                resp = client.get(f"{base}/api/services")
                resp.raise_for_status()
                services = sorted(resp.json().get("data") or [])
                if args.json:
                    out.json({"services": services})
                else:
                    out.print("services with traces: " + (", ".join(services) or "(none yet)"))
                    out.print("Show traces with `meshproof traces --service NAME`.")
                return 0
            resp = client.get(
                f"{base}/api/traces", params={"service": args.service, "limit": str(args.limit)}
            )
            resp.raise_for_status()
            traces = [_trace_summary(t) for t in resp.json().get("data") or []]
    except httpx.HTTPError as e:
        raise HarnessError(f"could not query Jaeger at {base}: {e}") from e
    except ValueError as e:
        raise HarnessError(f"Jaeger at {base} answered with something that is not JSON: {e}") from e
    if args.json:
        out.json({"service": args.service, "traces": traces})
        return 0
    out.print(f"traces of {args.service}", style="bold")
    table = _table("trace", "start", "ms", "spans", "root", "services")
    for t in traces:
        _row(
            table,
            t["trace_id"],
            t["start"],
            t["duration_ms"],
            t["spans"],
            t["root"],
            ", ".join(t["services"]),
        )
    out.print(table if traces else f"no traces of {args.service} yet")
    return 0


def _cmd_test(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    pytest_args = list(args.pytest_args)
    if not any(_is_test_path(a) for a in pytest_args):
        pytest_args.insert(0, SUITES_DIR + "/")
    env = {
        "MESHPROOF_BACKEND": settings.backend,
        "MESHPROOF_STATE": str(settings.state_dir),
        "MESHPROOF_MANIFESTS": str(settings.manifests),
        "MESHPROOF_ISTIO": settings.istio_version,
    }
    with tempfile.TemporaryDirectory(prefix="meshproof-test-") as tmp:
        own_junit = not any(a.startswith(("--junitxml", "--junit-xml")) for a in pytest_args)
        junit = Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", *pytest_args]
        if own_junit:  # xunit1 keeps each test's record_property values (shown in the summary)
            argv += [f"--junitxml={junit}", "-o", "junit_family=xunit1"]
        out.note(
            f"$ MESHPROOF_BACKEND={settings.backend} MESHPROOF_STATE={settings.state_dir} {' '.join(argv)}"
        )
        started = time.monotonic()
        code, interrupted = _run_attached(argv, env, out)
        elapsed = time.monotonic() - started
        results = _read_junit(junit) if own_junit and junit.is_file() else None
    _print_test_summary(out, settings, results, code, elapsed)
    return 130 if interrupted else code


def _cmd_down(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import attach, create

    marker = settings.state_dir / "backend.json"
    try:
        backend = attach(settings)
    except StateError as e:
        if not marker.is_file():
            out.print(f"no mesh is running with state dir {settings.state_dir}; nothing to take down")
            return 0
        # Recorded but not running any more (crashed, killed): a fresh instance cleans up what is left.
        out.note(str(e))
        recorded = str(json.loads(marker.read_text()).get("backend", settings.backend))
        backend = create(settings.with_overrides(backend=recorded))
    backend.down()
    out.print(f"mesh in {settings.state_dir} is down")
    return 0


def _cmd_doctor(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.doctor import probe

    tools: list[ToolStatus] = [
        probe(
            "python",
            "all",
            "the harness itself (Python >= 3.11)",
            "install Python 3.11+",
            ["--version"],
            path=sys.executable,
        ),
        probe(
            "node",
            "all",
            "the sample service and its tests (npm test)",
            "install Node.js >= 20",
            ["--version"],
        ),
        probe("npm", "all", "installing the sample service (npm ci)", "comes with Node.js", ["--version"]),
        probe(
            "go",
            "local",
            "building istiod and pilot-agent",
            "install Go >= 1.26",
            ["version"],
            pattern=r"go(\d[\w.]*)",
        ),
    ]
    notes: list[str] = []
    checked: dict[str, bool] = {}
    for backends, check in ((("local",), _local_doctor), (("kind", "existing"), _kube_doctor)):
        try:
            tools.extend(check(settings))
        except ImportError as e:
            notes.append(f"checks for backend {'/'.join(backends)} are not available: {e}")
            continue
        except MeshproofError as e:
            notes.append(f"checks for backend {'/'.join(backends)} failed: {e}")
            continue
        checked.update(dict.fromkeys(backends, True))
    # Our own probes come first; a backend's entry for a tool probed for "all" backends is a repeat.
    general = {t.name for t in tools if t.backend == "all"}
    unique: dict[tuple[str, str], ToolStatus] = {}
    for t in tools:
        if t.backend == "all" or t.name not in general:
            unique.setdefault((t.name, t.backend), t)
    tools = list(unique.values())
    ready: dict[str, bool | None] = {
        b: (all(t.found for t in tools if t.backend in (b, "all")) if checked.get(b) else None)
        for b in BACKENDS
    }
    if args.json:
        out.json({"tools": [t.as_json() for t in tools], "ready": ready, "notes": notes})
        return 0
    for b in ("all", *BACKENDS):
        group = [t for t in tools if t.backend == b]
        if not group:
            continue
        out.print("every backend" if b == "all" else f"backend {b}", style="bold")
        for t in group:
            if t.found:
                found = " ".join(x for x in (t.name, t.version) if x)
                out.print(f"  ok       {found}  {t.path}  (for {t.needed_for})")
            else:
                out.print(f"  MISSING  {t.name}  (for {t.needed_for}). Fix: {t.how_to_get}", style="red")
    out.print("")
    for b, ok in ready.items():
        state = (
            "unknown (no checks available)"
            if ok is None
            else ("ready" if ok else "missing tools (see above)")
        )
        out.print(f"backend {b}: {state}")
    for n in notes:
        out.warn(n)
    return 0


def _cmd_validate(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.istio.validate import validate_paths

    try:
        bundle = validate_paths(args.files, istio_version=settings.istio_version)
    except ConfigError as e:
        if not args.json:
            raise
        out.json({"valid": False, "documents": None, "problems": [asdict(p) for p in e.problems]})
        return e.exit_code
    if args.json:
        out.json(
            {
                "valid": True,
                "documents": len(bundle),
                "problems": [],
                "warnings": [asdict(w) for w in bundle.warnings],
            }
        )
        return 0
    for w in bundle.warnings:
        out.warn(str(w))
    out.print(f"{_plural(len(bundle), 'document')} valid")
    return 0


def _cmd_install(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends.local import install as local_install

    with out.err.status("installing the embedded mesh") as status:

        def progress(message: str) -> None:
            status.update(Text(message))
            out.note(f"• {message}")

        installed = local_install.install(settings, progress, force=args.force)
    doc = asdict(installed) if is_dataclass(installed) and not isinstance(installed, type) else {}
    if args.json:
        out.json(doc)
        return 0
    out.print(f"Istio {settings.istio_version} for the local backend", style="bold")
    table = _table("what", "value")
    for key, value in doc.items():
        if key != "sha256":
            _row(table, key, value)
    out.print(table)
    return 0


# ---------------------------------------------------------------------------------------------
# helpers (presentation only)


def _running_config(backend: Backend, settings: Settings) -> Bundle:
    """What the mesh runs now: the manifests, updated by the backend's applied config (if it has one).

    TODO(backends): a backend method returning this would be more exact than --manifests.
    """
    from harness.istio.loader import load_paths
    from harness.istio.model import Bundle

    context = Bundle(load_paths([settings.manifests]) if settings.manifests.exists() else ())
    config = backend.config_dir()
    if config is not None and config.is_dir():
        context = context.merged(load_paths([config]))
    return context


def _local_doctor(settings: Settings) -> list[ToolStatus]:
    from harness.backends.local.install import doctor

    return doctor(settings)


def _kube_doctor(settings: Settings) -> list[ToolStatus]:
    from harness.backends.kube.tools import doctor

    return doctor(release=ISTIO_RELEASES[settings.istio_version], context=settings.kube_context)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _parse_headers(raw: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for h in raw:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UserError(f"-H {h!r} is not a header. Fix: write it as -H 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _print_counts(out: Output, what: str, counts: Mapping[str, int], total: int) -> None:
    table = _table(what, "requests", "share")
    for key, n in counts.items():
        _row(table, key, n, f"{n / total:.1%}" if total else "-")
    out.print(table)


@contextlib.contextmanager
def _progress(out: Output, backend: Any, title: str) -> Iterator[None]:
    """Show a backend's progress messages while it works (for backends that report progress)."""
    with out.err.status(title) as status:
        if hasattr(backend, "progress"):

            def show(message: str) -> None:
                status.update(Text(message))
                out.note(message)

            # TODO(backends): let harness.backends.create take progress= instead of setting it here.
            backend.progress = show
        yield


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (both arrive here as KeyboardInterrupt)."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while True:
            signal.pause()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_attached(argv: Sequence[str], env: Mapping[str, str], out: Output) -> tuple[int, bool]:
    """Run a child on this terminal; on Ctrl-C keep waiting so it can tear its mesh down.

    TODO(proc): belongs in harness.proc (a foreground variant of run() that streams output);
    subprocess.run would SIGKILL the child on KeyboardInterrupt and leak mesh processes.
    """
    interrupted = False
    child = subprocess.Popen(argv, env=proc.merged_env(env))
    while True:
        try:
            return child.wait(), interrupted
        except KeyboardInterrupt:  # noqa: PERF203 - waiting loop
            interrupted = True
            out.warn("interrupted: waiting for pytest to tear the mesh down")


def _is_test_path(arg: str) -> bool:
    """Whether a pytest argument selects tests by path (then suites/ is not added)."""
    if arg.startswith("-"):
        return False
    path = arg.split("::", 1)[0]
    return ("::" in arg or path.endswith((".py", "/"))) and Path(path).exists()


def _status_doc(backend: Backend, settings: Settings) -> dict[str, Any]:
    workloads = [
        {
            "name": w.name,
            "namespace": w.namespace,
            "deployment": w.deployment,
            "version": w.version,
            "address": w.address,
            "ready": w.ready,
            "role": w.role,
            "app_url": w.app_url,
            "proxy_admin_url": w.proxy_admin_url,
        }
        for w in backend.workloads()
    ]
    try:
        ingress: str | None = backend.ingress_url()
    except UserError:
        ingress = None
    doc: dict[str, Any] = {
        "backend": backend.name,
        "state_dir": str(settings.state_dir),
        "ingress_url": ingress,
        "trace_query_url": backend.trace_query_url(),
        "workloads": workloads,
        "ejections": None,
        "ejections_by_cluster": None,
    }
    ejections = getattr(backend, "ejections", None)
    if callable(ejections):
        by_proxy: dict[str, list[str]] = {}
        by_cluster: dict[str, dict[str, list[str]]] = {}
        for proxy, hosts in dict(ejections()).items():
            if isinstance(hosts, Mapping):
                by_cluster[str(proxy)] = {str(c): sorted(map(str, hs)) for c, hs in hosts.items() if hs}
                by_proxy[str(proxy)] = sorted({str(h) for hs in hosts.values() for h in hs})
            else:
                by_proxy[str(proxy)] = sorted({str(h) for h in hosts})
        doc["ejections"] = by_proxy
        doc["ejections_by_cluster"] = by_cluster or None
    return doc


def _print_status(out: Output, doc: Mapping[str, Any]) -> None:
    table = _table("pod", "namespace", "deployment", "version", "role", "address", "ready", "proxy admin")
    for w in doc["workloads"]:
        _row(
            table,
            w["name"],
            w["namespace"],
            w["deployment"],
            w["version"],
            w["role"],
            w["address"],
            "yes" if w["ready"] else "NO",
            w["proxy_admin_url"],
        )
    out.print(f"backend {doc['backend']} · state dir {doc['state_dir']}", style="bold")
    out.print(table)
    out.print(f"ingress: {doc['ingress_url'] or '(no gateway)'}")
    out.print(f"tracing: {doc['trace_query_url'] or 'not deployed'}")
    ejections = doc.get("ejections")
    if ejections is None:
        out.print("ejections: not reported by this backend")
        return
    ejected = {proxy: hosts for proxy, hosts in ejections.items() if hosts}
    if not ejected:
        out.print("ejections: no proxy has ejected any host")
        return
    out.print("outlier ejections", style="bold")
    etable = _table("calling proxy", "ejected hosts")
    for proxy, hosts in ejected.items():
        _row(etable, proxy, ", ".join(hosts))
    out.print(etable)


def _trace_summary(trace: Mapping[str, Any]) -> dict[str, Any]:
    """One Jaeger trace as {trace_id, start, duration_ms, spans, root, services}. Times are in µs."""
    spans = list(trace.get("spans") or [])
    processes = trace.get("processes") or {}
    starts = [int(s.get("startTime", 0)) for s in spans]
    ends = [int(s.get("startTime", 0)) + int(s.get("duration", 0)) for s in spans]
    ids = {s.get("spanID") for s in spans}
    roots = [s for s in spans if not any(r.get("spanID") in ids for r in s.get("references") or [])]
    root = roots[0] if roots else (spans[0] if spans else {})
    begin = min(starts) if starts else 0
    return {
        "trace_id": str(trace.get("traceID", "")),
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(begin / 1e6)) if begin else "",
        "duration_ms": round((max(ends) - begin) / 1000, 3) if spans else 0.0,
        "spans": len(spans),
        "root": str(root.get("operationName", "")),
        "services": sorted({str(p.get("serviceName", "")) for p in processes.values()}),
    }


@dataclass(frozen=True)
class _Case:
    name: str
    outcome: str  # passed, failed, error, skipped
    seconds: float
    message: str
    properties: tuple[tuple[str, str], ...]


def _read_junit(path: Path) -> list[_Case] | None:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    cases = []
    for case in root.iter("testcase"):
        if not case.get("name"):  # e.g. the placeholder of an interrupted session
            continue
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                lines = (el.get("message") or el.text or "").strip().splitlines()
                message = lines[0] if lines else ""
                break
        props = tuple((p.get("name", ""), p.get("value", "")) for p in case.iter("property") if p.get("name"))
        cases.append(
            _Case(
                f"{case.get('classname', '')}::{case.get('name', '')}",
                outcome,
                float(case.get("time") or 0.0),
                message,
                props,
            )
        )
    return cases


def _print_test_summary(
    out: Output, settings: Settings, cases: list[_Case] | None, code: int, elapsed: float
) -> None:
    out.print("")
    out.print(
        f"meshproof test summary · backend {settings.backend} · state {settings.state_dir} · {elapsed:.1f} s",
        style="bold",
    )
    if cases:
        table = _table("result", "test", "s")
        styles = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}
        for c in cases:
            table.add_row(Text(c.outcome.upper(), style=styles[c.outcome]), Text(c.name), f"{c.seconds:.1f}")
            detail = [c.message] if c.outcome != "passed" and c.message else []
            detail += [f"{k}: {v}" for k, v in c.properties]
            for line in detail:
                table.add_row("", Text(f"  ↳ {line}", style="dim"), "")
        out.print(table)
        counts = {
            k: sum(1 for c in cases if c.outcome == k) for k in ("passed", "failed", "skipped", "error")
        }
        out.print(
            f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped, "
            f"{counts['error']} errors"
        )
    verdict = {
        0: "PASSED: every check held",
        1: "FAILED: some checks did not hold (see above)",
        2: "INTERRUPTED or aborted (pytest exit 2)",
        3: "INTERNAL ERROR in pytest or the harness (pytest exit 3)",
        4: "USAGE ERROR in the pytest arguments (pytest exit 4)",
        5: "FAILED: no tests ran (pytest exit 5): check the paths and -k/-m selection",
    }.get(code, f"FAILED: pytest exited {code}")
    out.print(verdict, style="bold green" if code == 0 else "bold red")


# ---------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    # Options every verb accepts, before or after the verb (SUPPRESS keeps a top-level value).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="state directory of the mesh (default: $MESHPROOF_STATE or .meshproof)",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks instead of one-line errors (also MESHPROOF_DEBUG=1)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON (schema in docs/CLI.md)")
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument(
        "--backend", choices=BACKENDS, help="where the mesh runs (default: $MESHPROOF_BACKEND or local)"
    )
    mesh = argparse.ArgumentParser(add_help=False)
    mesh.add_argument(
        "--manifests",
        metavar="DIR",
        help="workload and Istio YAML (default: $MESHPROOF_MANIFESTS or manifests)",
    )
    mesh.add_argument(
        "--istio-version",
        choices=sorted(ISTIO_RELEASES),
        help=f"pinned Istio release (default: $MESHPROOF_ISTIO or {DEFAULT_ISTIO})",
    )
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument(
        "-f",
        "--filename",
        dest="files",
        metavar="FILE",
        type=Path,
        action="extend",
        nargs="+",
        required=True,
        help="YAML file or directory (repeatable)",
    )

    parser = argparse.ArgumentParser(
        prog="meshproof",
        description="Prove that a service mesh does what its configuration says.",
        epilog="Run `meshproof VERB --help` for a verb's options. JSON schemas: docs/CLI.md.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"meshproof {__version__}")
    parser.add_argument("--state", metavar="DIR", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(
        name: str, handler: Handler, summary: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, parents=[common, *parents], help=summary, description=summary, allow_abbrev=False
        )
        p.set_defaults(func=handler)
        return p

    p = verb(
        "up", _cmd_up, "bring the mesh up (until Ctrl-C, or in the background with --detach)", backend, mesh
    )
    p.add_argument(
        "--detach", action="store_true", help="leave the mesh running; stop it with `meshproof down`"
    )

    verb("apply", _cmd_apply, "validate and apply YAML, wait until every proxy has it", files, mesh, as_json)
    verb(
        "delete",
        _cmd_delete,
        "validate and delete the objects in YAML files, wait for propagation",
        files,
        mesh,
        as_json,
    )

    p = verb("send", _cmd_send, "send requests into the mesh and count who answered", as_json)
    p.add_argument(
        "--from",
        dest="source",
        default="ingress",
        metavar="SOURCE",
        help="`ingress` (default) or NS/DEPLOYMENT or NS/POD of a client inside the mesh",
    )
    p.add_argument("--method", default="GET", help="HTTP method (default GET)")
    p.add_argument("--path", default="/api/greet", help="request path (default /api/greet)")
    p.add_argument(
        "-H", "--header", action="append", default=[], metavar="'K: V'", help="request header (repeatable)"
    )
    p.add_argument("-n", type=int, default=100, help="number of requests (default 100)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")

    p = verb("fault", _cmd_fault, "make a replica's app answer with an error status and/or a delay")
    p.add_argument("pod", metavar="POD", help="pod name, NS/POD or NS/DEPLOYMENT (see `meshproof status`)")
    p.add_argument("--status", type=int, metavar="CODE", help="HTTP status to answer with, e.g. 503")
    p.add_argument(
        "--rate", type=float, metavar="R", help="share of requests affected, in (0, 1] (default 1)"
    )
    p.add_argument("--delay-ms", type=int, metavar="D", help="delay each affected request by D ms")
    p.add_argument("--clear", action="store_true", help="remove the fault")

    verb("status", _cmd_status, "workloads, proxies and outlier ejections of the running mesh", as_json)

    p = verb(
        "traces", _cmd_traces, "recent traces from Jaeger (lists traced services without --service)", as_json
    )
    p.add_argument("--service", metavar="S", help="service name as Jaeger knows it")
    p.add_argument("--limit", type=int, default=20, help="at most this many traces (default 20)")

    verb(
        "test",
        _cmd_test,
        "run the suites with pytest (other arguments go to pytest) and print a summary",
        backend,
        mesh,
    )
    verb("down", _cmd_down, "take down the mesh recorded in the state dir")
    verb(
        "doctor",
        _cmd_doctor,
        "which tools each backend needs, which are present, how to get the rest",
        as_json,
    )
    verb(
        "validate",
        _cmd_validate,
        "validate Istio/Kubernetes YAML (schemas and cross-references)",
        files,
        as_json,
    )

    p = verb("install", _cmd_install, "build/install the pinned istiod, pilot-agent and Envoy into the cache")
    p.add_argument("--istio-version", choices=sorted(ISTIO_RELEASES), help="pinned Istio release")
    p.add_argument("--force", action="store_true", help="rebuild even if the same pins are installed")
    p.add_argument("--json", action="store_true", help="print what was installed as JSON")
    return parser


# ---------------------------------------------------------------------------------------------
# entry point


def _settings(args: argparse.Namespace) -> Settings:
    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    return from_env().with_overrides(
        state_dir=path(args.state),
        backend=getattr(args, "backend", None),
        manifests=path(getattr(args, "manifests", None)),
        istio_version=getattr(args, "istio_version", None),
    )


def _debug_requested(args: argparse.Namespace | None) -> bool:
    # TODO(settings): MESHPROOF_DEBUG is read here because it must work before Settings exist.
    if args is not None and getattr(args, "debug", False):
        return True
    return os.environ.get("MESHPROOF_DEBUG", "") not in ("", "0", "false")


def _report_error(e: MeshproofError) -> None:
    if isinstance(e, UserError):
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"meshproof: error: {line}", file=sys.stderr)
        return
    lines = str(e).splitlines() or [type(e).__name__]
    print(f"meshproof: failed: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)
    for note in getattr(e, "__notes__", ()):
        for line in str(note).splitlines():
            print(f"  {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args: argparse.Namespace | None = None
    try:
        args, extra = parser.parse_known_args(argv)
        if args.verb == "test":
            args.pytest_args = extra[1:] if extra[:1] == ["--"] else extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # argparse: --help, --version, usage errors (exit 2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    out = Output()
    try:
        settings = _settings(args)
        handler: Handler = args.func
        return handler(args, settings, out)
    except KeyboardInterrupt:
        if _debug_requested(args):
            raise
        print("meshproof: interrupted", file=sys.stderr)
        return 130
    except MeshproofError as e:
        if _debug_requested(args):
            raise
        _report_error(e)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
