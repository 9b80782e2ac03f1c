"""Verbs that act on the running mesh's traffic: ``send``, ``fault``, ``traces``."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import asdict

from harness.cli.output import Output, print_counts, row, table
from harness.errors import UserError
from harness.settings import Settings


def cmd_send(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import attach

    headers = parse_headers(args.header)
    if args.n < 1:
        raise UserError(f"-n {args.n}: the number of requests must be at least 1")
    if args.concurrency < 1:
        raise UserError(f"--concurrency {args.concurrency}: must be at least 1")
    if args.gateway and args.source != "ingress":
        raise UserError(f"--gateway sends through the ingress gateway; drop --from {args.source}")
    if args.gateway and any(k.lower() == "host" for k in headers):
        raise UserError(
            "--gateway sets the Host header from the Gateway's HTTP listener; drop -H 'Host: ...'"
        )
    backend = attach(settings)
    target = None
    if args.gateway:
        from harness.traffic.gateway import ingress_service_host, resolve

        ingress = backend.workload("ingress")
        target = resolve(backend.gateway_api_objects(), args.gateway, ingress_service_host(ingress.namespace))

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
            host_header=target.host if target else None,
        )
    summary = result.summary_json()
    if target is not None:
        summary["gateway"] = target.as_json()
    if args.json:
        out.json(summary)
        return 0
    through = f"through Gateway {target.ref} (Host {target.host})" if target else f"from {args.source}"
    out.print(
        f"{summary['total']} × {args.method} {args.path} {through} in {result.wall_s:.2f} s",
        style="bold",
    )
    if target is not None and target.note:
        out.print(target.note)
    print_counts(out, "status", summary["status"], summary["total"])
    ok = summary["status"].get("200", 0)
    print_counts(out, "version (200s)", summary["versions"], ok)
    print_counts(out, "pod (200s)", summary["pods"], ok)
    lat = summary["latency_ms"]
    out.print(f"latency ms: p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}")
    errors = result.errors()
    if errors:
        out.print("failures", style="bold")
        t = table("requests", "error (no HTTP response)")
        for message, count in errors.items():
            row(t, count, message)
        out.print(t)
    return 0


def cmd_fault(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import attach
    from harness.mesh import AppFault

    if args.clear:
        if args.status is not None or args.delay_ms is not None or args.rate is not None:
            raise UserError("--clear removes the fault; it takes no --status, --rate or --delay-ms")
        backend = attach(settings)
        ref = backend.workload(args.pod).ref
        backend.clear_fault(ref)
        if getattr(args, "json", False):
            out.json({"pod": ref, "cleared": True})
        else:
            out.print(f"fault on {ref} cleared (sidecar EnvoyFilter and app admin fault)")
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
    backend = attach(settings)
    fault = AppFault(status=args.status, rate=rate, delay_ms=delay, via=args.via)
    evidence = backend.inject_fault(args.pod, fault)
    what = [f"status {args.status}"] if args.status is not None else []
    if delay:
        what.append(f"{delay} ms delay")
    doc = {"fault": {"status": args.status, "rate": rate, "delay_ms": delay}, **evidence}
    if getattr(args, "json", False):
        out.json(doc)
        return 0
    how = (
        f"by its own sidecar (EnvoyFilter {evidence.get('envoy_filter')}; its inbound Envoy runs "
        f"{'; '.join(evidence.get('sidecar') or [])}; {evidence.get('scope')})"
        if args.via == "sidecar"
        else "by the app's admin endpoint"
    )
    out.print(
        f"fault on {evidence.get('pod', args.pod)}: {' + '.join(what)} for {rate:.0%} of requests, {how}"
    )
    out.print("Remove it with `meshproof fault POD --clear`.")
    return 0


def cmd_traces(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import attach
    from harness.tracing.jaeger import JaegerClient

    if args.limit < 1:
        raise UserError(f"--limit {args.limit}: must be at least 1")
    if args.trace_id is not None and not re.fullmatch(r"[0-9a-fA-F]{1,32}", args.trace_id):
        raise UserError(f"--trace-id {args.trace_id!r} is not a trace id. Fix: up to 32 hex digits")
    backend = attach(settings)
    base = backend.trace_query_url()
    hint = backend.trace_hint()
    if base is None:
        raise UserError(
            "tracing is not deployed in this mesh (the backend reports no Jaeger query URL). "
            + (hint or "Fix: bring the mesh up with manifests that include manifests/40-jaeger.yaml")
        )
    with JaegerClient(base, hint=hint) as jaeger:
        if args.trace_id:
            trace = jaeger.trace(args.trace_id.lower())
            if trace is None:
                raise UserError(f"Jaeger at {base} has no trace {args.trace_id} (yet)")
            if args.json:
                out.json({**trace.summary(), "span_list": [asdict(s) for s in trace.spans]})
            else:
                out.print(trace.tree())
            return 0
        if not args.service:
            services = jaeger.services()
            if args.json:
                out.json({"services": services, "query_url": base})
            else:
                out.print("services with traces: " + (", ".join(services) or "(none yet)"))
                out.print("Show traces with `meshproof traces --service NAME`.")
            return 0
        traces = [t.summary() for t in jaeger.find_traces(args.service, limit=args.limit)]
    if args.json:
        out.json({"service": args.service, "query_url": base, "traces": traces})
        return 0
    out.print(f"traces of {args.service}", style="bold")
    t = table("trace", "start", "ms", "spans", "root", "services")
    for tr in traces:
        row(
            t,
            tr["trace_id"],
            tr["start"],
            tr["duration_ms"],
            tr["spans"],
            tr["root"],
            ", ".join(tr["services"]),
        )
    out.print(t if traces else f"no traces of {args.service} yet")
    if traces:
        out.print("One trace's spans: `meshproof traces --trace-id ID`.")
    return 0


def parse_headers(raw: Sequence[str]) -> dict[str, str]:
    """``-H 'Name: value'`` options of `send` and `load` as a dict; UserError names a malformed one."""
    headers: dict[str, str] = {}
    for h in raw:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UserError(f"-H {h!r} is not a header. Fix: write it as -H 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers
