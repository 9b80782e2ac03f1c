"""The real-cluster backend: a kind cluster created for the run, or an existing cluster.

Modules, top to bottom::

    backend.py        KubeBackend: the Backend protocol over everything below
    tools.py          locate docker/kind/istioctl/kubectl, check versions, doctor() entries
    kind.py           KindCluster: create (ingress NodePort mapped to 127.0.0.1), load images, delete
    istio_install.py  istioctl install argv + IstioOperator overlay (tracing to Jaeger), istiod checks
    apply.py          manifests -> server-side apply / delete, Deployment readiness, image build
    propagation.py    pure: parse istiod syncz/configz/metrics, decide "every proxy ACKed the config"
    portforward.py    PortForward: 127.0.0.1 listener, one API port-forward stream per connection
    relay.py          a sidecar-less TCP relay pod, so a plaintext client can reach a sidecar's port
    api.py            KubeApi protocol + ClusterApi (the only importer of the kubernetes client)

Everything that talks to a cluster goes through :class:`~harness.backends.kube.api.KubeApi`, and
every subprocess through an injectable runner with :func:`harness.proc.run`'s signature, so the
logic is testable offline with fakes.
"""
