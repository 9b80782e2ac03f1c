"""The real-cluster backend: a kind cluster created for the run, or an existing cluster.

Modules, top to bottom::

    backend.py        KubeBackend: the Backend protocol over a Cluster and everything below
    cluster.py        the Cluster interface, the state record, ExistingCluster (a context; deletes only its own)
    kindcluster.py    KindCluster: Docker engine, node image, create/adopt/delete, images loaded, istioctl install
    diagnostics.py    write_diagnostics: Envoy dumps, container logs, istiod syncz, events, each best effort
    discovery.py      Discovery: the mesh's Deployments/Services, their pods as Workloads (forwarded addresses)
    faults.py         Faults: app faults on a replica, kills and replacements, istiod scaled away and back
    netloss.py        a replica's packet loss inside its pod's network namespace (from a node: kind only)
    pods.py           pure helpers over Pod/Service/Event dicts (owner Deployment, ports, readiness)
    doctor.py         doctor() entries: tools, Docker engine, the existing cluster and its istiod
    kind/             the kind command (KindCli) and the images the kind cluster runs (see kind/__init__.py)
    istio_install.py  istioctl install argv + IstioOperator overlay (tracing to Jaeger), istiod checks
    apply.py          manifests -> server-side apply / delete, image build
    readiness.py      Deployment rollout status, pods that cannot start, waiting for both
    convergence.py    IstiodSync: istiod's syncz/configz/metrics through forwards; wait until every proxy ACKed
    propagation.py    pure: parse istiod syncz/configz/metrics, decide "every proxy ACKed the config"
    portforward.py    PortForward: 127.0.0.1 listener, one API port-forward stream per connection; Forwards: the set
    relay.py          a sidecar-less TCP relay pod, so a plaintext client can reach a sidecar's port
    tools.py          locate docker/kind/istioctl/kubectl, check versions, preflight()
    api.py            KubeApi protocol + ClusterApi (the only importer of the kubernetes client)

Everything that talks to a cluster goes through :class:`~harness.backends.kube.api.KubeApi`, and
every subprocess through an injectable :class:`harness.proc.Runner`, so the
logic is testable offline with fakes.
"""
