"""The pure parts: request targets, protocol negotiation, Status documents,
the bounded inbox and the resize decoder."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from cloud_bridge.kubelet import NotFound, Unavailable, negotiate, routes
from cloud_bridge.kubelet import status as st
from cloud_bridge.kubelet._inbox import Inbox
from cloud_bridge.kubelet._streamio import _Resizes
from cloud_bridge.kubelet.provider import LogOptions, TerminalSize


def test_exec_targets() -> None:
    r = routes.parse_target(
        "POST", "/exec/ns/p/c?command=sh&command=-c&command=echo%20a&input=1&output=1&tty=1&error=1"
    )
    assert isinstance(r, routes.Exec)
    assert (r.namespace, r.pod, r.uid, r.container) == ("ns", "p", None, "c")
    assert r.command == ("sh", "-c", "echo a")
    assert r.streams == routes.StreamOptions(stdin=True, stdout=True, stderr=False, tty=True)  # no stderr with tty
    r = routes.parse_target("GET", "/exec/ns/p/uid-1/c?command=ls&output=true")
    assert isinstance(r, routes.Exec) and r.uid == "uid-1" and r.container == "c"
    a = routes.parse_target("GET", "/attach/ns/p/c?output=1&error=1")
    assert isinstance(a, routes.Attach) and a.streams.stderr
    pf = routes.parse_target("GET", "/portForward/ns/p?port=80,443&port=8080")
    assert isinstance(pf, routes.PortForward) and pf.ports == (80, 443, 8080)


@pytest.mark.parametrize(
    ("method", "target", "code"),
    [
        ("GET", "/exec/ns/p/c?output=1", 400),
        ("GET", "/exec/ns/p/c?command=ls", 400),
        ("GET", "/exec/ns/p/c?command=ls&output=yes", 400),
        ("GET", "/exec/ns/p", 404),
        ("DELETE", "/exec/ns/p/c?command=ls&output=1", 405),
        ("POST", "/pods", 405),
        ("GET", "/containerLogs/ns//c", 404),
        ("GET", "/containerLogs/ns/p/c?tailLines=-1", 400),
        ("GET", "/containerLogs/ns/p/c?limitBytes=0", 400),
        ("GET", "/containerLogs/ns/p/c?sinceTime=yesterday", 400),
        ("GET", "/containerLogs/ns/p/c?sinceTime=2024-01-01T00:00:00", 400),
        ("GET", "/containerLogs/ns/p/c?stream=Both", 400),
        ("GET", "/portForward/ns/p?port=0", 400),
        ("GET", "*", 400),
        ("GET", "/" + "a" * 70000, 414),
    ],
)
def test_bad_targets(method: str, target: str, code: int) -> None:
    with pytest.raises(routes.RouteError) as info:
        routes.parse_target(method, target)
    assert info.value.status == code and info.value.message


def test_log_options() -> None:
    r = routes.parse_target(
        "GET",
        "/containerLogs/ns/p/c?follow=true&previous=1&timestamps=True&tailLines=10&limitBytes=5"
        "&sinceTime=2024-01-02T03:04:05.123456789Z&stream=Stdout",
    )
    assert isinstance(r, routes.ContainerLogs)
    assert r.options == LogOptions(
        follow=True,
        previous=True,
        timestamps=True,
        tail_lines=10,
        limit_bytes=5,
        since_time=dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC),
        stream="Stdout",
    )
    assert isinstance(routes.parse_target("GET", "/healthz"), routes.Healthz)
    assert isinstance(routes.parse_target("GET", "/stats/summary/"), routes.StatsSummary)


def test_negotiation() -> None:
    h = [("connection", "Upgrade"), ("upgrade", "SPDY/3.1"), ("x-stream-protocol-version", "v5.channel.k8s.io")]
    h.append(("x-stream-protocol-version", "v4.channel.k8s.io, v3.channel.k8s.io"))
    assert negotiate.upgrade_kind(h) is negotiate.Upgrade.SPDY
    assert negotiate.negotiate_spdy(h, negotiate.SPDY_REMOTECOMMAND) == "v4.channel.k8s.io"
    with pytest.raises(routes.RouteError) as info:
        negotiate.negotiate_spdy(h, negotiate.SPDY_PORTFORWARD)
    assert info.value.status == 403 and (negotiate.ACCEPTED_HEADER, "portforward.k8s.io") in info.value.headers
    assert negotiate.upgrade_kind([("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")]) is (
        negotiate.Upgrade.WEBSOCKET
    )
    assert negotiate.upgrade_kind([("upgrade", "websocket")]) is negotiate.Upgrade.NONE
    p = negotiate.negotiate_websocket(["chat", "v4.base64.channel.k8s.io", "v5.channel.k8s.io"])
    assert (p.name, p.base64, p.status_json, p.close_channel) == ("v4.base64.channel.k8s.io", True, True, False)
    assert negotiate.negotiate_websocket(["v5.channel.k8s.io"]).close_channel
    assert not negotiate.negotiate_websocket(["base64.channel.k8s.io"]).status_json


def test_status_documents() -> None:
    assert st.encode(st.exit_code(0), as_json=True) == b'{"metadata":{},"status":"Success"}'
    doc = json.loads(st.encode(st.exit_code(3), as_json=True))
    assert doc["reason"] == "NonZeroExitCode" and doc["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert st.encode(st.success(), as_json=False) == b""
    assert st.from_error(NotFound("no pod"))["reason"] == "NotFound"
    assert st.from_error(Unavailable("offline"))["code"] == 503
    internal = st.from_error(RuntimeError("boom"))
    assert internal["code"] == 500 and "boom" in internal["message"]
    body = json.loads(st.http_body(404, "gone"))
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "gone",
        "reason": "NotFound",
        "code": 404,
    }


async def test_inbox_bounds_and_eof() -> None:
    box = Inbox(10)
    box.feed(b"0123456789ab")
    assert box.full
    waiter = asyncio.create_task(box.wait_room())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert await box.read(5) == b"01234"
    await asyncio.wait_for(waiter, 1)
    box.feed_eof()
    assert await box.read() == b"56789ab"
    assert await box.read() == b""
    box.discard()
    box.feed(b"ignored")
    assert await box.read() == b""


async def test_resize_decoder_keeps_latest_and_skips_junk() -> None:
    box = Inbox(1 << 20)
    sizes = _Resizes()
    pump = asyncio.create_task(sizes.pump(box))
    box.feed(b'{"Width":80,"Height":24}\n{"Width":')
    box.feed(b'100,"Height":30}[1,2]{"Width":-1,"Height":2}"x"')
    for i in range(20):
        box.feed(json.dumps({"Width": 200 + i, "Height": 50}).encode())
    box.feed_eof()
    await asyncio.wait_for(pump, 1)
    got = [s async for s in sizes]
    assert len(got) == 8 and got[-1] == TerminalSize(219, 50)  # only the latest few are kept
