"""Unknown pods, offline devices, and malformed or unauthenticated requests."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time

import pytest

from tests.bridge.conftest import BridgePki, make_pod
from tests.bridge.harness import ServerThread
from tests.bridge.kubetools import Background, raw_exchange, status_code, tls_context
from tests.support.kube import ControlPlane


@pytest.fixture(scope="module")
def ghost(control_plane: ControlPlane, bridge: ServerThread, namespace: str, node: str) -> str:
    """A pod the apiserver has on our node but the provider does not know."""
    return make_pod(control_plane, bridge, namespace, node, "ghost", known=False)


@pytest.fixture(scope="module")
def offline(control_plane: ControlPlane, bridge: ServerThread, namespace: str, node: str) -> str:
    name = make_pod(control_plane, bridge, namespace, node, "offline-device")
    bridge.call(bridge.provider.offline.add, (namespace, name))
    bridge.call(bridge.provider.ports.__setitem__, 7001, bridge.echo_port)
    return name


def test_unknown_pod_fails_fast_with_not_found(control_plane: ControlPlane, namespace: str, ghost: str) -> None:
    t0 = time.monotonic()
    proc = control_plane.kubectl("exec", ghost, "-n", namespace, "--", "true", check=False, timeout=30)
    assert proc.returncode != 0
    assert 'pod "ghost" not found' in proc.stderr, proc.stderr
    proc = control_plane.kubectl("logs", ghost, "-n", namespace, check=False, timeout=30)
    assert proc.returncode != 0
    assert "NotFound" in proc.stderr, proc.stderr
    proc = control_plane.kubectl("attach", ghost, "-n", namespace, check=False, timeout=30)
    assert proc.returncode != 0 and "not found" in proc.stderr, proc.stderr
    assert time.monotonic() - t0 < 15


def test_offline_device_is_reported_clearly(
    control_plane: ControlPlane, namespace: str, offline: str, bridge: ServerThread
) -> None:
    proc = control_plane.kubectl("exec", offline, "-n", namespace, "--", "true", check=False, timeout=30)
    assert proc.returncode != 0
    assert f"device for pod {namespace}/{offline} is offline" in proc.stderr, proc.stderr
    proc = control_plane.kubectl("logs", offline, "-n", namespace, check=False, timeout=30)
    assert proc.returncode != 0 and "ServiceUnavailable" in proc.stderr, proc.stderr

    with Background(control_plane, "port-forward", "-n", namespace, f"pod/{offline}", ":7001") as pf:
        match = re.match(rb"Forwarding from 127\.0\.0\.1:(\d+)", pf.line())
        assert match
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10) as sock:
            sock.settimeout(15)
            assert sock.recv(100) == b""  # kubectl drops the connection
        assert pf.wait(20) != 0  # kubectl port-forward gives up on an error from the kubelet
        assert b"is offline" in pf.stderr, pf.stderr


def test_malformed_and_unauthenticated_requests(
    bridge: ServerThread, bridge_pki: BridgePki, control_plane: ControlPlane, namespace: str, pod: str
) -> None:
    assert control_plane.kubelet_client is not None
    client_cert = control_plane.kubelet_client
    authed = tls_context(bridge_pki.ca.cert_path, client_cert.cert_path, client_cert.key_path)
    anonymous = tls_context(bridge_pki.ca.cert_path)
    port = bridge.port
    # The apiserver may hold keep-alive connections; ours must all be gone at the end.
    before = bridge.call(lambda: bridge.server.connection_count)

    def get(target: str, ctx=authed, extra: str = "") -> bytes:
        return raw_exchange(port, ctx, f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())

    assert status_code(get("/healthz", anonymous)) == 200
    denied = get("/pods", anonymous)
    assert status_code(denied) == 401 and b"client certificate is required" in denied
    assert status_code(get("/exec/a/b/c?command=ls&output=1", anonymous)) == 401

    # A client certificate from a CA the bridge does not trust fails the handshake.
    alien = tls_context(bridge_pki.ca.cert_path, bridge_pki.serving.cert_path, bridge_pki.serving.key_path)
    try:
        answer = get("/pods", alien)
    except (ssl.SSLError, ConnectionError):
        answer = b""
    assert answer == b"", answer[:200]  # TLS 1.3: the alert comes after the client's handshake

    pods = get("/pods")
    assert status_code(pods) == 200
    body = json.loads(pods.partition(b"\r\n\r\n")[2])
    assert body["kind"] == "PodList" and any(p["metadata"]["name"] == pod for p in body["items"])

    cases = {
        "/nope": 404,
        "/containerLogs/a/b": 404,
        f"/containerLogs/{namespace}/{pod}/main?tailLines=abc": 400,
        f"/containerLogs/{namespace}/{pod}/main?sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z": 400,
        f"/containerLogs/{namespace}/{pod}/main?follow=maybe": 400,
        f"/exec/{namespace}/{pod}/main?command=ls&output=1": 400,  # no upgrade
        f"/exec/{namespace}/{pod}/main?output=1": 400,  # no command
        f"/exec/{namespace}/{pod}/main?command=ls": 400,  # no streams
        f"/portForward/{namespace}/{pod}/a/b": 404,
    }
    for target, code in cases.items():
        answer = get(target)
        assert status_code(answer) == code, (target, answer[:300])
        doc = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert doc["kind"] == "Status" and doc["code"] == code and doc["message"]

    spdy = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    answer = get(f"/exec/{namespace}/{pod}/main?command=ls&output=1", extra=spdy + "X-Stream-Protocol-Version: v9\r\n")
    assert status_code(answer) == 403
    assert b"x-accepted-stream-protocol-versions: v4.channel.k8s.io" in answer.lower()
    answer = get(f"/exec/{namespace}/{pod}/main?command=ls&output=1", extra=spdy)
    assert status_code(answer) == 400 and b"X-Stream-Protocol-Version is required" in answer
    answer = get(f"/exec/{namespace}/{pod}/main?command=ls&output=1", extra="Connection: Upgrade\r\nUpgrade: h2c\r\n")
    assert status_code(answer) == 400
    ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    answer = get(f"/exec/{namespace}/{pod}/main?command=ls&output=1", extra=ws + "Sec-WebSocket-Version: 8\r\n")
    assert status_code(answer) == 426
    answer = get(
        f"/exec/{namespace}/{pod}/main?command=ls&output=1",
        extra=ws + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n",
    )
    assert status_code(answer) == 403

    post = b"POST /pods HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    assert status_code(raw_exchange(port, authed, post)) == 405
    assert status_code(raw_exchange(port, authed, b"\x00\x01garbage\r\n\r\n")) == 400
    huge = "X-Big: " + "a" * (100 * 1024) + "\r\n"
    assert status_code(get("/healthz", extra=huge)) == 431
    # A client that goes away mid-request leaves nothing behind.
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        authed.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost")

    # Two requests on one keep-alive connection.
    pipelined = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /pods HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    both = raw_exchange(port, authed, pipelined, until_close=True)
    assert both.count(b"HTTP/1.1 200") == 2, both

    # Still healthy, and every connection above is gone.
    assert status_code(get("/healthz")) == 200
    deadline = time.monotonic() + 10
    while bridge.call(lambda: bridge.server.connection_count) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bridge.call(lambda: bridge.server.connection_count) <= before
