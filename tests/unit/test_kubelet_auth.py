"""Kubelet request attributes for bearer-token clients (pure)."""

from __future__ import annotations

from cloud_bridge.kubelet.auth import bearer_token, request_attributes


def test_attributes_follow_the_kubelet_mapping() -> None:
    assert request_attributes("GET", "/metrics/resource", "pi-1") == request_attributes(
        "GET", "/metrics/resource", "pi-1"
    )
    a = request_attributes("GET", "/metrics/resource", "pi-1")
    assert (a.verb, a.subresource, a.node) == ("get", "metrics", "pi-1")
    assert request_attributes("GET", "/stats/summary", None).subresource == "stats"
    assert request_attributes("GET", "/stats", "n").subresource == "stats"
    assert request_attributes("GET", "/statsx", "n").subresource == "proxy"  # a subpath, not a prefix
    assert request_attributes("GET", "/logs/x", "n").subresource == "log"
    exec_ = request_attributes("POST", "/exec/ns/p/c", None)
    assert (exec_.verb, exec_.subresource, exec_.node) == ("create", "proxy", "")
    assert request_attributes("GET", "/pods", "n").subresource == "proxy"


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic dXNlcg==") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
