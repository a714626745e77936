"""SpdyConnection driven as a client/server pair over an in-memory link."""

from __future__ import annotations

import ast
import itertools
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cloud_bridge.spdy as spdy
from cloud_bridge.spdy import (
    CLIENT,
    NEED_DATA,
    SERVER,
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    GoAwayReceived,
    GoAwayStatus,
    HeadersReceived,
    LocalProtocolError,
    PingAcknowledged,
    PingReceived,
    ReplyReceived,
    RstStatus,
    SpdyConfig,
    SpdyConnection,
    StreamClosedError,
    StreamOpened,
    StreamReset,
    StreamState,
)
from cloud_bridge.spdy import _frames as f


def drain(conn: SpdyConnection) -> list:
    events = []
    while (ev := conn.next_event()) is not NEED_DATA:
        events.append(ev)
        if isinstance(ev, ConnectionClosed):
            break
    return events


class Pair:
    """A client and a server joined by explicit transfers."""

    def __init__(self, config: SpdyConfig | None = None) -> None:
        self.client = SpdyConnection(role=CLIENT, config=config)
        self.server = SpdyConnection(role=SERVER, config=config)

    def to_server(self) -> list:
        self.server.receive_data(self.client.data_to_send())
        return drain(self.server)

    def to_client(self) -> list:
        self.client.receive_data(self.server.data_to_send())
        return drain(self.client)


def frames(raw: bytes) -> list[tuple[f.FrameHeader, bytes]]:
    out, pos = [], 0
    while pos < len(raw):
        head = f.parse_header(raw[pos : pos + 8])
        out.append((head, raw[pos + 8 : pos + 8 + head.length]))
        pos += 8 + head.length
    return out


def merge_data(events: list) -> list:
    """Join DataReceived pieces of one frame run, so chunkings compare equal."""
    out: list = []
    for ev in events:
        prev = out[-1] if out else None
        if (
            isinstance(ev, DataReceived)
            and isinstance(prev, DataReceived)
            and prev.stream_id == ev.stream_id
            and not prev.fin
        ):
            out[-1] = DataReceived(ev.stream_id, prev.data + ev.data, ev.fin)
        else:
            out.append(ev)
    return out


def test_exec_like_session() -> None:
    """The stream layout of a kubelet exec without tty: error, stdin, stdout, stderr."""
    p = Pair()
    ids = {
        kind: p.client.open_stream([("streamtype", kind), ("requestid", "0")])
        for kind in ("error", "stdin", "stdout", "stderr")
    }
    assert list(ids.values()) == [1, 3, 5, 7]
    opened = p.to_server()
    assert [type(e) for e in opened] == [StreamOpened] * 4
    assert [dict(e.headers)["streamtype"] for e in opened] == list(ids)
    for sid in ids.values():
        p.server.reply(sid, [])
    assert [type(e) for e in p.to_client()] == [ReplyReceived] * 4

    p.client.send_data(ids["stdin"], b"echo hi\n", fin=True)
    assert p.to_server() == [DataReceived(ids["stdin"], b"echo hi\n", fin=True)]
    assert p.server.stream_state(ids["stdin"]) is StreamState.HALF_CLOSED_REMOTE
    p.server.send_data(ids["stdin"], b"", fin=True)
    assert p.server.stream_state(ids["stdin"]) is None  # both FINs: forgotten

    p.server.send_data(ids["stdout"], b"hi\n", fin=True)
    p.server.send_data(ids["stderr"], b"", fin=True)
    status = b'{"kind":"Status","apiVersion":"v1","status":"Success"}'
    p.server.send_data(ids["error"], status, fin=True)
    got = p.to_client()
    assert DataReceived(ids["stdout"], b"hi\n", fin=True) in got
    assert DataReceived(ids["error"], status, fin=True) in got
    for sid in (ids["error"], ids["stdout"], ids["stderr"]):
        p.client.send_data(sid, b"", fin=True)
    p.to_server()
    assert p.client.open_stream_ids == [] and p.server.open_stream_ids == []


def test_port_forward_headers_and_headers_frame() -> None:
    p = Pair()
    sid = p.client.open_stream([("streamtype", "data"), ("port", "8080"), ("requestid", "1")], priority=3)
    (ev,) = p.to_server()
    assert ev.headers == (("streamtype", "data"), ("port", "8080"), ("requestid", "1"))
    assert ev.priority == 3 and not ev.fin and not ev.unidirectional
    p.server.reply(sid, [("x-reply", "ok")])
    p.server.send_headers(sid, [("x-extra", "1"), ("x-extra", "2")], fin=True)
    assert p.to_client() == [
        ReplyReceived(sid, (("x-reply", "ok"),)),
        HeadersReceived(sid, (("x-extra", "1"), ("x-extra", "2")), fin=True),
    ]
    assert p.client.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE


def test_header_compression_shared_across_many_frames() -> None:
    p = Pair()
    sizes = []
    for i in range(300):
        p.client.open_stream([("streamtype", "data"), ("port", str(1000 + i)), ("requestid", str(i))])
        raw = p.client.data_to_send()
        sizes.append(len(raw))
        p.server.receive_data(raw)
        (ev,) = drain(p.server)
        assert dict(ev.headers) == {
            "streamtype": "data",
            "port": str(1000 + i),
            "requestid": str(i),
        }
        p.server.reply(ev.stream_id, [("streamtype", "data"), ("port", str(1000 + i))], fin=True)
        (rep,) = p.to_client()
        assert dict(rep.headers)["port"] == str(1000 + i) and rep.fin
    assert max(sizes[10:]) < sizes[0]  # later blocks lean on the shared history


def test_send_data_splits_frames() -> None:
    p = Pair(SpdyConfig(max_data_frame_size=1000))
    sid = p.client.open_stream([("a", "b")])
    p.client.data_to_send()
    p.client.send_data(sid, bytes(range(256)) * 18, fin=True)  # 4608 bytes
    out = frames(p.client.data_to_send())
    assert [h.length for h, _ in out] == [1000, 1000, 1000, 1000, 608]
    assert [h.flags for h, _ in out] == [0, 0, 0, 0, f.FLAG_FIN]
    assert all(not h.control and h.stream_id == sid for h, _ in out)
    assert b"".join(body for _, body in out) == bytes(range(256)) * 18


def test_send_data_empty() -> None:
    p = Pair()
    sid = p.client.open_stream([])
    p.client.data_to_send()
    p.client.send_data(sid, b"")
    assert p.client.data_to_send() == b""
    p.client.send_data(sid, memoryview(b""), fin=True)
    assert p.client.data_to_send() == f.encode_data(sid, b"", fin=True)


def test_big_peer_frame_is_streamed_not_buffered() -> None:
    """Go's spdystream writes one DATA frame per Write, whatever its size."""
    server = SpdyConnection(role=SERVER)
    client = SpdyConnection(role=CLIENT)
    sid = client.open_stream([("streamtype", "stdin")])
    server.receive_data(client.data_to_send())
    drain(server)
    payload = bytes(1 << 20)
    raw = f.encode_data(sid, payload, fin=True)
    pieces = []
    for pos in range(0, len(raw), 65536):
        server.receive_data(raw[pos : pos + 65536])
        events = drain(server)
        pieces += events
        assert len(server._inbuf) == 0  # nothing held back
    assert b"".join(e.data for e in pieces) == payload
    assert [e.fin for e in pieces].count(True) == 1 and pieces[-1].fin


def _session_bytes() -> bytes:
    c = SpdyConnection(role=CLIENT)
    a = c.open_stream([("streamtype", "error")])
    b = c.open_stream([("streamtype", "stdin"), ("x", "1"), ("x", "2")], priority=1)
    c.send_data(b, b"hello " * 50)
    c.ping()
    c.send_data(b, b"", fin=True)
    c.open_stream([("streamtype", "resize")], fin=True)
    c.send_headers(a, [("late", "yes")])
    c.reset(a)
    return c.data_to_send() + f.encode_window_update(0, 1 << 20) + f.encode_settings([(4, 1, 0)])


SESSION = _session_bytes()


def _one_shot() -> list:
    server = SpdyConnection(role=SERVER)
    server.receive_data(SESSION)
    server.receive_data(b"")
    return drain(server)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SESSION)), max_size=40))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    server = SpdyConnection(role=SERVER)
    events = []
    bounds = [0, *sorted(cuts), len(SESSION)]
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            server.receive_data(SESSION[lo:hi])
        events += drain(server)
    server.receive_data(b"")
    events += drain(server)
    assert merge_data(events) == merge_data(_one_shot())
    assert isinstance(events[-1], ConnectionClosed)
    assert not any(isinstance(e, ConnectionFailed) for e in events)


def test_pings_both_ways() -> None:
    p = Pair()
    assert p.client.ping() == 1 and p.client.ping() == 3
    assert p.to_server() == [PingReceived(1), PingReceived(3)]
    assert p.to_client() == [PingAcknowledged(1), PingAcknowledged(3)]
    assert p.server.ping() == 2
    assert p.to_client() == [PingReceived(2)]
    assert p.to_server() == [PingAcknowledged(2)]
    # A ping with our own parity that we never sent is ignored (2.6.5).
    p.server.receive_data(f.encode_ping(40))
    assert drain(p.server) == [] and p.server.data_to_send() == b""


def test_goaway_refuses_new_streams_both_ways() -> None:
    p = Pair()
    first = p.client.open_stream([("n", "1")])
    p.to_server()
    late = p.client.open_stream([("n", "2")])  # crosses the server's GOAWAY
    p.server.goaway()
    p.server.goaway()  # idempotent
    assert p.to_server() == []  # the late SYN_STREAM is ignored (2.6.6)
    got = p.to_client()
    assert got == [
        GoAwayReceived(first, GoAwayStatus.OK),
        StreamReset(late, RstStatus.REFUSED_STREAM, "not processed by peer (GOAWAY)", remote=True),
    ]
    with pytest.raises(LocalProtocolError):
        p.client.open_stream([])
    p.server.reply(first, [], fin=True)  # streams before the GOAWAY carry on
    assert p.to_client() == [ReplyReceived(first, (), fin=True)]
    assert p.client.state is spdy.ConnectionState.CLOSING


def test_reset_both_ways_and_no_rst_storm() -> None:
    p = Pair()
    sid = p.client.open_stream([])
    p.to_server()
    p.server.reply(sid, [])
    p.server.send_data(sid, b"in flight")
    p.client.reset(sid, RstStatus.CANCEL)
    assert p.to_server() == [StreamReset(sid, RstStatus.CANCEL, "reset by peer", remote=True)]
    assert p.to_client() == []  # frames for the reset stream are dropped quietly
    assert p.client.data_to_send() == b""
    p.client.reset(sid)  # already gone: a no-op, no frame
    assert p.client.data_to_send() == b""
    with pytest.raises(StreamClosedError):
        p.server.send_data(sid, b"x")


def test_unidirectional_streams() -> None:
    p = Pair()
    sid = p.client.open_stream([("streamtype", "push")], unidirectional=True)
    assert p.client.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE
    (ev,) = p.to_server()
    assert ev.unidirectional
    assert p.server.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
    with pytest.raises(LocalProtocolError):
        p.server.reply(sid, [])
    with pytest.raises(StreamClosedError):
        p.server.send_data(sid, b"x")
    p.client.send_data(sid, b"one way", fin=True)
    assert p.to_server() == [DataReceived(sid, b"one way", fin=True)]
    assert p.server.open_stream_ids == []


def test_syn_stream_with_fin_and_server_push_ids() -> None:
    p = Pair()
    sid = p.client.open_stream([("a", "b")], fin=True)
    assert p.to_server() == [StreamOpened(sid, (("a", "b"),), fin=True)]
    p.server.reply(sid, [], fin=True)
    assert p.server.open_stream_ids == []
    pushed = p.server.open_stream([("pushed", "1")], unidirectional=True, associated_id=sid)
    assert pushed == 2
    reply, ev = p.to_client()
    assert reply == ReplyReceived(sid, (), fin=True)
    assert ev.stream_id == 2 and ev.associated_id == sid and ev.unidirectional


def test_local_misuse_raises() -> None:
    p = Pair()
    sid = p.client.open_stream([])
    p.to_server()
    with pytest.raises(LocalProtocolError, match="reply"):
        p.server.send_data(sid, b"too early")
    with pytest.raises(LocalProtocolError):
        p.client.reply(sid, [])  # our own stream
    p.server.reply(sid, [])
    with pytest.raises(LocalProtocolError):
        p.server.reply(sid, [])  # twice
    p.server.send_data(sid, b"", fin=True)
    with pytest.raises(StreamClosedError, match="HALF_CLOSED_LOCAL"):
        p.server.send_data(sid, b"after fin")
    with pytest.raises(LocalProtocolError, match="never opened"):
        p.server.reset(99)
    with pytest.raises(LocalProtocolError):
        p.client.open_stream([("bad\x00name", "x")])
    with pytest.raises(LocalProtocolError):
        SpdyConnection(role=CLIENT, config=SpdyConfig(max_header_block_size=64)).open_stream([("x", "y" * 100)])
    with pytest.raises(ValueError):
        SpdyConfig(max_data_frame_size=0)
    p.server.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        p.server.receive_data(b"more")


def test_failed_header_encoding_keeps_context_in_sync() -> None:
    p = Pair()
    with pytest.raises(LocalProtocolError):
        p.client.open_stream([("x", "\u20ac")])
    assert p.client.data_to_send() == b""
    sid = p.client.open_stream([("x", "y")])
    assert p.to_server() == [StreamOpened(sid, (("x", "y"),))]


def test_no_flow_control_blocking() -> None:
    p = Pair()
    sid = p.client.open_stream([])
    p.to_server()
    p.server.reply(sid, [])
    p.server.send_data(sid, bytes(10 << 20))  # far beyond any SPDY window
    reply, *got = p.to_client()
    assert isinstance(reply, ReplyReceived)
    assert sum(len(e.data) for e in got) == 10 << 20
    p.server.receive_data(f.encode_window_update(sid, 12345))
    assert drain(p.server) == [] and p.server.data_to_send() == b""


def test_eof_handling() -> None:
    p = Pair()
    p.client.ping()
    raw = p.client.data_to_send()
    p.server.receive_data(raw)
    p.server.receive_data(b"")
    assert drain(p.server) == [PingReceived(1), ConnectionClosed()]
    assert p.server.next_event() == ConnectionClosed()  # stays closed

    s = SpdyConnection(role=SERVER)
    s.receive_data(raw[:5])
    assert s.next_event() is NEED_DATA
    s.receive_data(b"")
    ev = s.next_event()
    assert isinstance(ev, ConnectionFailed) and "middle of a frame" in ev.reason
    assert s.next_event() == ConnectionClosed()


def test_events_validate_stream_ids() -> None:
    with pytest.raises(ValueError):
        StreamOpened(0, ())
    with pytest.raises(ValueError):
        DataReceived(1 << 31, b"")


def test_core_is_sans_io() -> None:
    banned = {"asyncio", "socket", "time", "random", "threading", "select", "selectors"}
    for path in pathlib.Path(spdy.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
