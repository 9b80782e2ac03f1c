"""A sidecar-less TCP relay pod, so the harness can reach a workload's *sidecar* from outside the mesh.

A port-forward to a pod lands on the pod's localhost, which Istio's iptables rules do not
redirect: it reaches the app directly (that is ``Workload.app_url``). To hit the inbound sidecar
listener the way a plaintext, non-mesh client would (``Workload.sidecar_url``, used to show that
STRICT mTLS refuses it), the connection has to arrive at the pod IP from another pod. The relay
is that other pod: it runs outside the mesh (its namespace has injection disabled), reads one
line ``TARGET <ip> <port>\\n`` that the harness's port-forward writes first, connects there, answers
``OK\\n`` (or ``ERR <why>\\n`` and closes, when it cannot connect), and then copies bytes both ways.
The port-forward waits for that answer, so a target the relay cannot reach is never mistaken for
one that accepted the connection and then closed it (what STRICT mTLS does to plaintext).
It runs the sample image, which already has ``node``.
"""

from __future__ import annotations

from typing import Any

from harness.backends.kube.api import KubeApi
from harness.backends.kube.apply import SAMPLE_IMAGE
from harness.backends.kube.pods import live, name_of, pod_ready
from harness.errors import BackendError

RELAY_NAMESPACE = "meshproof-system"
RELAY_NAME = "sidecar-relay"
RELAY_PORT = 15999
RELAY_LABELS = {"app": RELAY_NAME}

# Our relay: first line names the target, the rest is piped. Bounded header, no other protocol.
RELAY_JS = r"""
const net = require('net');
net.createServer((client) => {
  let head = Buffer.alloc(0);
  const onData = (chunk) => {
    head = Buffer.concat([head, chunk]);
    const nl = head.indexOf(10);
    if (nl < 0) { if (head.length > 512) client.destroy(); return; }
    client.removeListener('data', onData);
    client.pause();
    const m = /^TARGET (\S+) (\d+)\r?$/.exec(head.subarray(0, nl).toString());
    if (!m) { client.end('ERR bad TARGET line\n'); return; }
    const rest = head.subarray(nl + 1);
    let connected = false;
    const upstream = net.connect(Number(m[2]), m[1]);
    upstream.on('connect', () => {
      connected = true;
      client.write('OK\n');
      if (rest.length) upstream.write(rest);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    upstream.on('error', (e) => {
      if (connected) client.destroy();
      else client.end('ERR connect ' + m[1] + ':' + m[2] + ': ' + (e.code || e.message) + '\n');
    });
    upstream.on('close', () => { if (connected) client.destroy(); });
    client.on('close', () => upstream.destroy());
  };
  client.on('error', () => {});
  client.on('data', onData);
}).listen(Number(process.env.RELAY_PORT || 15999), process.env.RELAY_HOST || '0.0.0.0');
"""


def ready_pod(api: KubeApi) -> str:
    """The name of a ready relay pod; BackendError when none is."""
    sel = ",".join(f"{k}={v}" for k, v in RELAY_LABELS.items())
    pods = [p for p in api.list("v1", "Pod", RELAY_NAMESPACE, sel) if live(p) and pod_ready(p)]
    if not pods:
        raise BackendError(f"the sidecar relay ({RELAY_NAMESPACE}, {sel}) has no ready pod")
    return name_of(pods[0])


def preamble(ip: str, port: int) -> bytes:
    return f"TARGET {ip} {port}\n".encode()


def relay_objects(image: str = SAMPLE_IMAGE) -> list[dict[str, Any]]:
    """The relay's Namespace (no sidecar injection) and Deployment."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": RELAY_NAMESPACE, "labels": {"istio-injection": "disabled"}},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": RELAY_NAME, "namespace": RELAY_NAMESPACE, "labels": dict(RELAY_LABELS)},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": dict(RELAY_LABELS)},
                "template": {
                    "metadata": {
                        "labels": {**RELAY_LABELS, "sidecar.istio.io/inject": "false"},
                    },
                    "spec": {
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
                        "containers": [
                            {
                                "name": "relay",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                "command": ["node", "-e", RELAY_JS],
                                "env": [{"name": "RELAY_PORT", "value": str(RELAY_PORT)}],
                                "ports": [{"name": "relay", "containerPort": RELAY_PORT}],
                                "readinessProbe": {"tcpSocket": {"port": RELAY_PORT}, "periodSeconds": 2},
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": "32Mi"},
                                    "limits": {"memory": "64Mi"},
                                },
                                "securityContext": {"allowPrivilegeEscalation": False},
                            }
                        ],
                    },
                },
            },
        },
    ]
