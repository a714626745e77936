"""SPDY cases kubectl does not produce, against an in-process server (no
control plane): older protocol versions, missing or stray streams,
port-forward pairing rules, a provider that never reads stdin, shutdown."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud_bridge.kubelet import KubeletServer, ServerConfig
from tests.bridge.conftest import BridgePki
from tests.bridge.local_provider import LocalProvider
from tests.bridge.spdy_client import SpdyClient, UpgradeRefused

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def served(bridge_pki: BridgePki, tmp_path: Path) -> AsyncIterator[tuple[KubeletServer, LocalProvider, int]]:
    provider = LocalProvider(tmp_path)
    provider.add_pod("ns", "pod")
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    provider.ports[80] = echo.sockets[0].getsockname()[1]
    config = ServerConfig(
        cert_file=bridge_pki.serving.cert_path,
        key_file=bridge_pki.serving.key_path,
        insecure=True,
        host="127.0.0.1",
        port=0,
        stream_creation_timeout=1.0,
        shutdown_timeout=2.0,
    )
    async with KubeletServer(provider, config=config) as server:
        yield server, provider, server.port
        assert not provider.running
    echo.close()
    await echo.wait_closed()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()


@pytest.fixture
def ctx(bridge_pki: BridgePki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(bridge_pki.ca.cert_path))


EXEC = "/exec/ns/pod/main?command=sh&command=-c&command=cat%3B+echo+err+%3E%262%3B+exit+2&input=1&output=1&error=1"


@pytest.mark.parametrize("version", ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io"])
async def test_exec_protocol_versions(served, ctx, version: str) -> None:
    _server, _provider, port = served
    c = await SpdyClient.connect(port, ctx, EXEC, ["v5.channel.k8s.io", version, "channel.k8s.io"])
    try:
        assert c.protocol == version  # v5 over SPDY is not offered, like the kubelet
        err = await c.open(streamtype="error")
        stdin = await c.open(streamtype="stdin")
        out = await c.open(streamtype="stdout")
        errout = await c.open(streamtype="stderr")
        c.send(stdin, b"piped\n", fin=True)
        assert await c.read_all(out) == b"piped\n"
        assert await c.read_all(errout) == b"err\n"
        status = await c.read_all(err)
        if version == "v4.channel.k8s.io":
            doc = json.loads(status)
            assert doc["status"] == "Failure" and doc["reason"] == "NonZeroExitCode"
            assert doc["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]
        else:
            assert status == b"command terminated with non-zero exit code: exit status 2"
        await asyncio.wait_for(c.closed.wait(), 5)  # the server closes after the status
    finally:
        await c.close()


async def test_success_status_and_stray_streams(served, ctx) -> None:
    _server, _provider, port = served
    c = await SpdyClient.connect(port, ctx, "/exec/ns/pod/uid-1/main?command=true&output=1", ["v4.channel.k8s.io"])
    try:
        stray = await c.open(streamtype="bogus")
        err = await c.open(streamtype="error")
        out = await c.open(streamtype="stdout")
        assert await c.read_all(out) == b""
        assert json.loads(await c.read_all(err)) == {"metadata": {}, "status": "Success"}
        assert c.streams[stray].reset is not None
    finally:
        await c.close()


async def test_missing_streams_time_out_and_nothing_leaks(served, ctx) -> None:
    server, provider, port = served
    c = await SpdyClient.connect(port, ctx, "/exec/ns/pod/main?command=cat&input=1&output=1", ["v4.channel.k8s.io"])
    try:
        await c.open(streamtype="error")  # never opens stdin/stdout
        await asyncio.wait_for(c.closed.wait(), 5)
    finally:
        await c.close()
    for _ in range(50):
        if server.connection_count == 0 and not provider.running:
            break
        await asyncio.sleep(0.05)
    assert server.connection_count == 0 and not provider.running


async def test_unread_stdin_does_not_wedge_output(served, ctx) -> None:
    """The command ignores stdin; the client floods it; output and status still arrive."""
    _server, _provider, port = served
    path = "/exec/ns/pod/main?command=sh&command=-c&command=sleep+0.3%3B+echo+done&input=1&output=1"
    c = await SpdyClient.connect(port, ctx, path, ["v4.channel.k8s.io"])
    try:
        err = await c.open(streamtype="error")
        stdin = await c.open(streamtype="stdin")
        out = await c.open(streamtype="stdout")
        for _ in range(40):
            c.send(stdin, b"x" * 65536)
        assert await c.read_all(out, timeout=15) == b"done\n"
        assert json.loads(await c.read_all(err))["status"] == "Success"
    finally:
        await c.close()


async def test_unknown_pod_is_refused_before_upgrading(served, ctx) -> None:
    _server, _provider, port = served
    with pytest.raises(UpgradeRefused) as info:
        await SpdyClient.connect(port, ctx, "/exec/ns/nope/main?command=true&output=1", ["v4.channel.k8s.io"])
    assert info.value.status == 404
    doc = json.loads(info.value.body.partition(b"\r\n\r\n")[2] or info.value.body)
    assert doc["kind"] == "Status" and doc["reason"] == "NotFound"


async def test_port_forward_pairs(served, ctx) -> None:
    _server, _provider, port = served
    c = await SpdyClient.connect(port, ctx, "/portForward/ns/pod", ["portforward.k8s.io"])
    try:
        assert c.protocol == "portforward.k8s.io"
        # Two interleaved pairs, data stream first for one of them.
        d1 = await c.open(streamtype="data", port="80", requestid="1")
        e2 = await c.open(streamtype="error", port="80", requestid="2")
        e1 = await c.open(streamtype="error", port="80", requestid="1")
        d2 = await c.open(streamtype="data", port="80", requestid="2")
        c.send(d1, b"one", fin=True)
        c.send(d2, b"two", fin=True)
        assert await c.read_all(d1) == b"one"
        assert await c.read_all(d2) == b"two"
        assert await c.read_all(e1) == b"" and await c.read_all(e2) == b""

        # Without a requestid (old clients): error id N pairs with data id N+2.
        e = await c.open(streamtype="error", port="80")
        d = await c.open(streamtype="data", port="80")
        c.send(d, b"legacy", fin=True)
        assert await c.read_all(d) == b"legacy"

        # Bad port, unknown port, and a pair that never completes.
        e = await c.open(streamtype="error", port="http", requestid="3")
        d = await c.open(streamtype="data", port="http", requestid="3")
        assert b"invalid port header" in await c.read_all(e)
        e = await c.open(streamtype="error", port="81", requestid="4")
        d = await c.open(streamtype="data", port="81", requestid="4")
        assert (
            await c.read_all(e) == b"error forwarding port 81 to pod pod, uid : nothing listens on port 81 in pod pod"
        )
        lonely = await c.open(streamtype="error", port="80", requestid="5")
        assert b"timed out waiting for streams" in await c.read_all(lonely, timeout=5)
    finally:
        await c.close()


async def test_close_cancels_running_sessions(bridge_pki: BridgePki, tmp_path: Path, ctx) -> None:
    provider = LocalProvider(tmp_path)
    provider.add_pod("ns", "pod")
    config = ServerConfig(
        cert_file=bridge_pki.serving.cert_path,
        key_file=bridge_pki.serving.key_path,
        insecure=True,
        host="127.0.0.1",
        port=0,
        shutdown_timeout=0.5,
    )
    server = KubeletServer(provider, config=config)
    await server.start()
    c = await SpdyClient.connect(
        server.port, ctx, "/exec/ns/pod/main?command=sleep&command=60&output=1", ["v4.channel.k8s.io"]
    )
    await c.open(streamtype="error")
    await c.open(streamtype="stdout")
    for _ in range(50):
        if provider.running:
            break
        await asyncio.sleep(0.05)
    assert provider.running
    await asyncio.wait_for(server.close(), 10)
    assert server.connection_count == 0 and not provider.running
    await asyncio.wait_for(c.closed.wait(), 5)
    await c.close()


async def test_slow_and_idle_clients_are_timed_out(bridge_pki: BridgePki, tmp_path: Path, ctx) -> None:
    config = ServerConfig(
        cert_file=bridge_pki.serving.cert_path,
        key_file=bridge_pki.serving.key_path,
        insecure=True,
        host="127.0.0.1",
        port=0,
        header_timeout=0.3,
        idle_timeout=0.3,
    )
    async with KubeletServer(LocalProvider(tmp_path), config=config) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx, server_hostname="127.0.0.1")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408 ")
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx, server_hostname="127.0.0.1")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # idle: closed without a word
        writer.close()
        for _ in range(50):
            if server.connection_count == 0:
                break
            await asyncio.sleep(0.05)
        assert server.connection_count == 0
