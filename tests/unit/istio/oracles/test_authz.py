"""AuthorizationPolicy oracle: Istio's documented semantics, case by case."""

from __future__ import annotations

from typing import Any

import pytest

from harness.errors import UnsupportedFeature
from harness.istio.model import AuthorizationPolicy
from harness.istio.oracles.authz import Peer, Request, decide, decision, selecting

OTHER = Peer("other-namespace/client", "other-namespace", "cluster.local/ns/other-namespace/sa/client")
TRUSTED = Peer(
    "trusted-namespace/client", "trusted-namespace", "cluster.local/ns/trusted-namespace/sa/client"
)
PLAIN = Peer("ingress-plaintext", "", "")
GET = Request("GET", "/api/greet")
POST = Request("POST", "/api/greet")


def policy(
    action: str = "ALLOW", rules: list[dict[str, Any]] | None = None, **kw: Any
) -> AuthorizationPolicy:
    return AuthorizationPolicy(
        name=kw.get("name", "p"),
        namespace=kw.get("namespace", "sample"),
        selector=kw.get("selector", {}),
        action=action,
        rules=tuple(rules or ()),
    )


DESIGN = policy(
    rules=[
        {
            "from": [{"source": {"notNamespaces": ["trusted-namespace"]}}],
            "to": [{"operation": {"methods": ["GET"]}}],
        }
    ]
)


def test_no_policy_allows_everything() -> None:
    d = decision([], OTHER, POST)
    assert d.allow and "no ALLOW policy" in d.reason


def test_allow_policy_must_match() -> None:
    assert decide([DESIGN], OTHER, GET)
    assert not decide([DESIGN], OTHER, POST)
    assert not decide([DESIGN], TRUSTED, GET)
    assert "none matches" in decision([DESIGN], TRUSTED, GET).reason


def test_not_namespaces_never_excludes_a_plaintext_peer_but_namespaces_never_match_it() -> None:
    assert decide([DESIGN], PLAIN, GET)  # no identity: notNamespaces does not exclude it
    only_other = policy(rules=[{"from": [{"source": {"namespaces": ["other-namespace"]}}]}])
    assert decide([only_other], OTHER, GET)
    assert not decide([only_other], TRUSTED, GET)
    assert not decide([only_other], PLAIN, GET)


def test_principals_and_not_principals() -> None:
    p = policy(rules=[{"from": [{"source": {"principals": ["cluster.local/ns/other-namespace/*"]}}]}])
    assert decide([p], OTHER, GET) and not decide([p], TRUSTED, GET) and not decide([p], PLAIN, GET)
    n = policy(rules=[{"from": [{"source": {"notPrincipals": ["*/sa/client"]}}]}])
    assert not decide([n], OTHER, GET) and decide([n], PLAIN, GET)


def test_deny_wins_over_allow() -> None:
    deny = policy("DENY", [{"from": [{"source": {"namespaces": ["trusted-namespace"]}}]}], name="deny")
    allow_all = policy(rules=[{}], name="all")
    assert not decide([allow_all, deny], TRUSTED, GET)
    assert decision([allow_all, deny], TRUSTED, GET).reason == "DENY policy sample/deny matches"
    assert decide([allow_all, deny], OTHER, GET)


def test_empty_rules() -> None:
    assert not decide([policy(rules=[])], OTHER, GET)  # ALLOW without rules: allow nothing
    assert decide([policy(rules=[{}])], OTHER, GET)  # one empty rule matches everything
    assert decide([policy("DENY", rules=[])], OTHER, GET)  # DENY without rules denies nothing
    assert not decide([policy("DENY", rules=[{}])], OTHER, GET)


def test_audit_never_decides() -> None:
    assert decide([policy("AUDIT", rules=[{}])], OTHER, GET)


def test_custom_is_not_predictable() -> None:
    with pytest.raises(UnsupportedFeature, match="external authorizer"):
        decide([policy("CUSTOM", rules=[{}])], OTHER, GET)


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("/api/greet", "/api/greet", True),
        ("/api/greet", "/api/greeting", False),
        ("/api/*", "/api/greet", True),
        ("*/greet", "/api/greet", True),
        ("*", "/x", True),
        ("/api/*", "/health", False),
    ],
)
def test_path_matching(pattern: str, path: str, hit: bool) -> None:
    p = policy(rules=[{"to": [{"operation": {"paths": [pattern]}}]}])
    assert decide([p], OTHER, Request("GET", path + "?q=1")) is hit


def test_not_methods_and_not_paths() -> None:
    p = policy(rules=[{"to": [{"operation": {"notMethods": ["POST"], "notPaths": ["/admin*"]}}]}])
    assert decide([p], OTHER, GET)
    assert not decide([p], OTHER, POST)
    assert not decide([p], OTHER, Request("GET", "/admin/x"))


def test_from_and_to_entries_are_alternatives() -> None:
    p = policy(
        rules=[
            {
                "from": [{"source": {"namespaces": ["a"]}}, {"source": {"namespaces": ["other-namespace"]}}],
                "to": [{"operation": {"methods": ["PUT"]}}, {"operation": {"methods": ["GET"]}}],
            }
        ]
    )
    assert decide([p], OTHER, GET) and not decide([p], OTHER, POST)


@pytest.mark.parametrize(
    "rule",
    [
        {"from": [{"source": {"ipBlocks": ["1.2.3.4"]}}]},
        {"to": [{"operation": {"hosts": ["x"]}}]},
        {"when": [{"key": "request.headers[x]", "values": ["y"]}]},
    ],
)
def test_unmodelled_fields_refuse(rule: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedFeature, match="oracles/authz.py"):
        decide([policy(rules=[rule])], OTHER, GET)


def test_selecting_own_namespace_and_root_namespace() -> None:
    own = policy(selector={"app": "microservice-1"}, name="own")
    wrong_labels = policy(selector={"app": "other"}, name="wrong")
    ns_wide = policy(name="ns")
    mesh_wide = policy(namespace="istio-system", name="mesh")
    elsewhere = policy(namespace="other-namespace", name="elsewhere")
    got = selecting([own, wrong_labels, ns_wide, mesh_wide, elsewhere], "sample", {"app": "microservice-1"})
    assert [p.name for p in got] == ["own", "ns", "mesh"]
