"""The WebSocket path: the Python kubernetes client, through the apiserver
(v4: proxied as-is to the bridge; v5: translated to SPDY) and directly."""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
from urllib.parse import urlencode

import pytest
import websocket
from kubernetes import client, config
from kubernetes.stream import stream
from kubernetes.stream.ws_client import WSClient

from tests.bridge.conftest import BridgePki
from tests.bridge.harness import ServerThread
from tests.support.kube import ControlPlane

SCRIPT = "echo hi; echo err >&2; exit 4"


@pytest.fixture(scope="module")
def core(control_plane: ControlPlane):
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig_path))
    with api:
        yield client.CoreV1Api(api)


@pytest.mark.parametrize(
    ("protocol", "reaches_bridge_as"),
    [
        ("v4.channel.k8s.io", "over WebSocket (v4.channel.k8s.io)"),  # the apiserver proxies it as is
        (None, "over SPDY (v4.channel.k8s.io)"),  # v5: the apiserver translates to SPDY
    ],
)
def test_python_client_exec_through_apiserver(
    core, namespace: str, pod: str, protocol: str | None, reaches_bridge_as: str, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="cloud_bridge.kubelet.server")
    headers = {"sec-websocket-protocol": protocol} if protocol else None
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        container="main",
        command=["sh", "-c", SCRIPT],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
        _headers=headers,
    )
    resp.run_forever(timeout=20)
    assert resp.read_stdout(timeout=1) == "hi\n"
    assert resp.read_stderr(timeout=1) == "err\n"
    assert resp.returncode == 4
    assert any(reaches_bridge_as in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def _direct_config(bridge: ServerThread, pki: BridgePki, cp: ControlPlane) -> client.Configuration:
    assert cp.kubelet_client is not None
    cfg = client.Configuration()
    cfg.host = f"https://127.0.0.1:{bridge.port}"
    cfg.ssl_ca_cert = str(pki.ca.cert_path)
    cfg.cert_file = str(cp.kubelet_client.cert_path)
    cfg.key_file = str(cp.kubelet_client.key_path)
    return cfg


def test_v5_direct_with_stdin_close(
    bridge: ServerThread, bridge_pki: BridgePki, control_plane: ControlPlane, namespace: str, pod: str
) -> None:
    cfg = _direct_config(bridge, bridge_pki, control_plane)
    url = f"wss://127.0.0.1:{bridge.port}/exec/{namespace}/{pod}/main?command=cat&input=1&output=1&error=1"
    ws = WSClient(cfg, url, headers=None, capture_all=True)
    try:
        assert ws.subprotocol == "v5.channel.k8s.io"
        ws.write_stdin("hello over v5\n")
        ws.close_channel(0)  # v5: end of stdin; cat exits
        ws.run_forever(timeout=20)
        assert not ws.is_open()
        assert ws.read_stdout(timeout=1) == "hello over v5\n"
        assert ws.returncode == 0
    finally:
        ws.close()


def _raw_ws(bridge: ServerThread, pki: BridgePki, cp: ControlPlane, path: str, protocol: str):
    assert cp.kubelet_client is not None
    return websocket.create_connection(
        f"wss://127.0.0.1:{bridge.port}{path}",
        subprotocols=[protocol],
        sslopt={
            "cert_reqs": ssl.CERT_REQUIRED,
            "ca_certs": str(pki.ca.cert_path),
            "certfile": str(cp.kubelet_client.cert_path),
            "keyfile": str(cp.kubelet_client.key_path),
        },
        timeout=20,
    )


def _collect(ws, decode) -> dict[int, bytes]:
    channels: dict[int, bytes] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            opcode, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            break
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        channel, payload = decode(data)
        channels[channel] = channels.get(channel, b"") + payload
    return channels


def test_base64_and_resize_channels(
    bridge: ServerThread, bridge_pki: BridgePki, control_plane: ControlPlane, namespace: str, pod: str
) -> None:
    query = urlencode([("command", "sh"), ("command", "-c"), ("command", "read x; echo got $x; exit 5")])
    path = f"/exec/{namespace}/{pod}/main?{query}&input=1&output=1&error=1"
    ws = _raw_ws(bridge, bridge_pki, control_plane, path, "v4.base64.channel.k8s.io")
    try:
        assert ws.subprotocol == "v4.base64.channel.k8s.io"
        ws.send("0" + base64.b64encode(b"base64 works\n").decode())
        channels = _collect(ws, lambda d: (int(chr(d[0])), base64.b64decode(d[1:])))
    finally:
        ws.close()
    assert channels[1] == b"got base64 works\n"
    status = json.loads(channels[3])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]

    # Binary v4 with a TTY: the resize channel sets the size `stty` reports.
    query = urlencode([("command", "sh"), ("command", "-c"), ("command", "sleep 0.5; stty size")])
    path = f"/exec/{namespace}/{pod}/main?{query}&output=1&tty=1&input=1"
    ws = _raw_ws(bridge, bridge_pki, control_plane, path, "v4.channel.k8s.io")
    try:
        ws.send_binary(b"\x04" + json.dumps({"Width": 91, "Height": 33}).encode())
        channels = _collect(ws, lambda d: (d[0], d[1:]))
    finally:
        ws.close()
    assert b"33 91" in channels[1]
    assert json.loads(channels[3]) == {"metadata": {}, "status": "Success"}
