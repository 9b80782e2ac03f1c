"""The one module that talks to the Kubernetes API: plain dicts in, plain dicts out.

:class:`KubeApi` is what the rest of the kube backend uses; :class:`ClusterApi` implements it with
the ``kubernetes`` client (dynamic client for objects, ``kubernetes.stream.portforward`` for port
streams). Tests inject a fake :class:`KubeApi` instead of patching the client.

The client's ``stream``/``portforward`` helpers swap ``ApiClient.call_api`` for the duration of
the call, so port-forward streams are opened on a second, dedicated ``ApiClient`` under a lock:
a concurrent ordinary request must never go out over a websocket.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.errors import BackendError, ToolMissing, UserError

FIELD_MANAGER = "meshproof"


@dataclass(frozen=True, order=True)
class ObjectRef:
    """What names one Kubernetes object. ``namespace`` is "" for cluster-scoped kinds."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"

    @classmethod
    def of(cls, obj: Mapping[str, Any], default_namespace: str = "") -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion", "")),
            str(obj.get("kind", "")),
            str(meta.get("namespace") or default_namespace),
            str(meta.get("name", "")),
        )


class Channel(Protocol):
    """A connected byte stream to a pod port (a socket, or the client's port-forward socket)."""

    def fileno(self) -> int: ...

    def recv(self, bufsize: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class KubeApi(Protocol):
    """The Kubernetes operations the backend needs."""

    def server_version(self) -> str:
        """The API server's version (e.g. ``v1.33.1``); raises BackendError when unreachable."""
        ...

    def has_kind(self, api_version: str, kind: str) -> bool: ...

    def get(self, ref: ObjectRef) -> dict[str, Any] | None: ...

    def list(
        self, api_version: str, kind: str, namespace: str = "", label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """Objects of a kind; ``namespace`` "" lists every namespace."""
        ...

    def apply(self, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply (field manager ``meshproof``, conflicts forced); returns the live object.
        Another ``field_manager`` owns only the fields ``obj`` names (a restart's annotation): an
        apply by a manager drops the fields it applied before and no longer names."""
        ...

    def delete(self, ref: ObjectRef, *, grace_seconds: int | None = None) -> bool:
        """Delete an object; False when it did not exist."""
        ...

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        tail_lines: int | None = 400,
        since_seconds: int | None = None,
    ) -> str:
        """The container's log: its last ``tail_lines`` lines (None: all) of the last
        ``since_seconds`` (None: from its start)."""
        ...

    def open_port(self, namespace: str, pod: str, port: int) -> Channel:
        """A new stream to ``pod:port`` (one per TCP connection)."""
        ...

    def close(self) -> None: ...


def kube_contexts(kubeconfig: str | None) -> tuple[list[str], str]:
    """The context names in a kubeconfig and the current one; ToolMissing when there is no kubeconfig."""
    from kubernetes import config as _config

    config: Any = _config  # the client's config module is untyped
    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError) as e:
        where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
        raise ToolMissing(
            f"a kubeconfig ({where})",
            "backend existing",
            "point KUBECONFIG at your cluster's kubeconfig (check with `kubectl config get-contexts`)",
        ) from e
    names = [str(c.get("name", "")) for c in contexts or []]
    return names, str((current or {}).get("name", ""))


class ClusterApi:
    """:class:`KubeApi` over the ``kubernetes`` client for one kubeconfig context."""

    def __init__(
        self,
        kubeconfig: str | Path | None = None,
        context: str | None = None,
        *,
        discovery_cache: Path | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        from kubernetes import client
        from kubernetes import config as _config

        config: Any = _config  # untyped module
        cfg_file = str(kubeconfig) if kubeconfig else None
        names, current = kube_contexts(cfg_file)
        if context and context not in names:
            raise UserError(
                f"kubeconfig context {context!r} does not exist (contexts: {', '.join(names) or 'none'}). "
                "Fix: pass --kube-context/MESHPROOF_KUBE_CONTEXT naming one of them"
            )
        self.context = context or current
        try:
            self._api: Any = config.new_client_from_config(
                config_file=cfg_file, context=self.context or None, persist_config=False
            )
            self._pf_api: Any = config.new_client_from_config(
                config_file=cfg_file, context=self.context or None, persist_config=False
            )
        except config.ConfigException as e:
            raise UserError(f"kubeconfig context {self.context!r} is unusable: {e}") from e
        self._core = client.CoreV1Api(self._api)
        self._pf_core = client.CoreV1Api(self._pf_api)
        self._pf_lock = threading.Lock()
        self._dyn: Any = None
        self._cache = str(discovery_cache) if discovery_cache else None
        self._timeout = request_timeout

    # ---- plumbing -------------------------------------------------------------------------
    def _dynamic(self) -> Any:
        if self._dyn is None:
            from kubernetes import dynamic

            dyn: Any = dynamic  # untyped module
            try:
                self._dyn = dyn.DynamicClient(self._api, cache_file=self._cache)
            except Exception as e:
                raise BackendError(f"cannot reach the Kubernetes API of context {self.context!r}: {e}") from e
        return self._dyn

    def _resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        dyn = self._dynamic()
        try:
            return dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            # CRDs installed since discovery ran (e.g. Istio's) are not cached yet: look again once.
            dyn.resources.invalidate_cache()
            try:
                return dyn.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError as e:
                raise BackendError(
                    f"the cluster does not serve {kind} ({api_version}). Fix: install the CRD that defines it "
                    "(for Istio kinds: install Istio first)"
                ) from e

    @staticmethod
    def _error(what: str, e: Exception) -> BackendError:
        summary = getattr(e, "summary", None)
        text = summary() if callable(summary) else str(e)
        return BackendError(f"{what} failed: {text}")

    # ---- KubeApi --------------------------------------------------------------------------
    def server_version(self) -> str:
        from kubernetes import client

        try:
            info = client.VersionApi(self._api).get_code(_request_timeout=10)
        except Exception as e:
            raise BackendError(f"cannot reach the Kubernetes API of context {self.context!r}: {e}") from e
        return str(info.git_version)

    def has_kind(self, api_version: str, kind: str) -> bool:
        try:
            self._resource(api_version, kind)
        except BackendError:
            return False
        return True

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        res = self._resource(ref.api_version, ref.kind)
        try:
            obj = res.get(name=ref.name, namespace=ref.namespace or None, _request_timeout=self._timeout)
        except NotFoundError:
            return None
        except Exception as e:
            raise self._error(f"get {ref}", e) from e
        out: dict[str, Any] = obj.to_dict()
        return out

    def list(
        self, api_version: str, kind: str, namespace: str = "", label_selector: str = ""
    ) -> list[dict[str, Any]]:
        res = self._resource(api_version, kind)
        try:
            obj = res.get(
                namespace=namespace or None,
                label_selector=label_selector or None,
                _request_timeout=self._timeout,
            )
        except Exception as e:
            raise self._error(f"list {kind} in {namespace or 'all namespaces'}", e) from e
        items: list[dict[str, Any]] = obj.to_dict().get("items") or []
        return items

    def apply(self, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        ref = ObjectRef.of(obj)
        res = self._resource(ref.api_version, ref.kind)
        body = dict(obj)
        if res.namespaced and not ref.namespace:
            body["metadata"] = {**dict(body.get("metadata") or {}), "namespace": "default"}
        try:
            live = self._dynamic().server_side_apply(
                res,
                body=body,
                namespace=(body["metadata"].get("namespace") if res.namespaced else None),
                field_manager=field_manager,
                force_conflicts=True,
                _request_timeout=self._timeout,
            )
        except Exception as e:
            raise self._error(f"server-side apply of {ref}", e) from e
        out: dict[str, Any] = live.to_dict()
        return out

    def delete(self, ref: ObjectRef, *, grace_seconds: int | None = None) -> bool:
        from kubernetes.dynamic.exceptions import NotFoundError

        res = self._resource(ref.api_version, ref.kind)
        try:
            res.delete(
                name=ref.name,
                namespace=ref.namespace or None,
                grace_period_seconds=grace_seconds,
                propagation_policy="Background",
                _request_timeout=self._timeout,
            )
        except NotFoundError:
            return False
        except Exception as e:
            raise self._error(f"delete {ref}", e) from e
        return True

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        tail_lines: int | None = 400,
        since_seconds: int | None = None,
    ) -> str:
        extra: dict[str, Any] = {}
        if tail_lines is not None:
            extra["tail_lines"] = tail_lines
        if since_seconds is not None:
            extra["since_seconds"] = max(1, since_seconds)
        try:
            text = self._core.read_namespaced_pod_log(
                pod, namespace, container=container, _request_timeout=self._timeout, **extra
            )
        except Exception as e:
            raise self._error(f"logs of {namespace}/{pod}/{container}", e) from e
        return str(text)

    def open_port(self, namespace: str, pod: str, port: int) -> Channel:
        from kubernetes.stream import portforward

        with self._pf_lock:
            try:
                pf: Any = portforward(
                    self._pf_core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)
                )
            except Exception as e:
                raise self._error(f"port-forward to {namespace}/{pod}:{port}", e) from e
        sock: Channel = pf.socket(port)
        return sock

    def close(self) -> None:
        for api in (self._api, self._pf_api):
            with contextlib.suppress(Exception):  # closing is best effort
                api.close()
