"""Peer faults: stream errors become RST_STREAM, session errors GOAWAY; never raise."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_bridge.spdy import (
    CLIENT,
    NEED_DATA,
    SERVER,
    ConnectionClosed,
    ConnectionFailed,
    ConnectionState,
    DataReceived,
    GoAwayReceived,
    GoAwayStatus,
    HeadersReceived,
    PingAcknowledged,
    PingReceived,
    ReplyReceived,
    RstStatus,
    SettingsReceived,
    SpdyConfig,
    SpdyConnection,
    StreamOpened,
    StreamReset,
)
from cloud_bridge.spdy import _frames as f
from cloud_bridge.spdy._headers import DICTIONARY, HeaderCompressor

ALLOWED_EVENTS = (
    StreamOpened,
    ReplyReceived,
    HeadersReceived,
    DataReceived,
    StreamReset,
    PingReceived,
    PingAcknowledged,
    SettingsReceived,
    GoAwayReceived,
    ConnectionFailed,
    ConnectionClosed,
)


def drain(conn: SpdyConnection) -> list:
    events = []
    while (ev := conn.next_event()) is not NEED_DATA:
        events.append(ev)
        if isinstance(ev, ConnectionClosed):
            break
    return events


class Peer:
    """Crafts client frames by hand, keeping a compression context in step."""

    def __init__(self) -> None:
        self.z = zlib.compressobj(zdict=DICTIONARY)

    def block(self, raw: bytes) -> bytes:
        return self.z.compress(raw) + self.z.flush(zlib.Z_SYNC_FLUSH)

    def headers_block(self, headers: list[tuple[str, str]]) -> bytes:
        parts = [struct.pack(">I", len(headers))]
        for name, value in headers:  # no lower-casing, no merging: the raw truth
            parts += [struct.pack(">I", len(name)), name.encode(), struct.pack(">I", len(value))]
            parts.append(value.encode())
        return self.block(b"".join(parts))

    def syn(self, sid: int, headers: list[tuple[str, str]], flags: int = 0) -> bytes:
        return f.encode_syn_stream(sid, self.headers_block(headers), flags=flags)


def control(ftype: int, payload: bytes, *, version: int = 3, flags: int = 0) -> bytes:
    head = struct.pack(">II", 0x80000000 | version << 16 | ftype, flags << 24 | len(payload))
    return head + payload


def feed(data: bytes, conn: SpdyConnection | None = None) -> tuple[SpdyConnection, list]:
    conn = conn or SpdyConnection(role=SERVER)
    conn.receive_data(data)
    return conn, drain(conn)


def assert_failed(conn: SpdyConnection, events: list, match: str) -> None:
    failed = [e for e in events if isinstance(e, ConnectionFailed)]
    assert len(failed) == 1 and match in failed[0].reason, events
    assert failed[0].status == GoAwayStatus.PROTOCOL_ERROR
    out = conn.data_to_send()
    assert out[-16:-8] == bytes.fromhex("8003000700000008")  # ends with GOAWAY
    assert struct.unpack(">I", out[-4:])[0] == GoAwayStatus.PROTOCOL_ERROR
    assert conn.state is ConnectionState.FAILED


def test_bad_version_is_session_error_and_reading_stops() -> None:
    conn, events = feed(control(f.FrameType.PING, b"\x00\x00\x00\x01", version=2))
    assert_failed(conn, events, "unsupported SPDY version 2")
    conn.receive_data(f.encode_ping(1))
    assert drain(conn) == [] and conn.data_to_send() == b""


def test_oversized_control_frame_fails_before_payload_arrives() -> None:
    conn = SpdyConnection(role=SERVER, config=SpdyConfig(max_control_frame_size=1024))
    conn, events = feed(struct.pack(">II", 0x80030001, 2048), conn)
    assert_failed(conn, events, "exceeds 1024")


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (control(f.FrameType.SYN_STREAM, b"\x00\x00\x00\x01\x00"), "too short"),
        (control(f.FrameType.SYN_STREAM, b"\x00" * 10 + b"\x78"), "stream id 0"),
        (
            control(f.FrameType.SYN_STREAM, b"\x00\x00\x00\x01" + b"\x00" * 6 + b"junk"),
            "decompress",
        ),
        (control(f.FrameType.SYN_REPLY, b"\x00\x00"), "too short"),
        (control(f.FrameType.RST_STREAM, b"\x00\x00\x00\x01\x00\x00\x00\x00"), "status 0"),
        (control(f.FrameType.RST_STREAM, b"\x00" * 8), "stream id 0"),
        (control(f.FrameType.SETTINGS, b"\x00\x00\x00\x05"), "announces 5"),
        (control(f.FrameType.PING, b"\x00\x00\x00\x01\x00"), "PING"),
        (control(f.FrameType.GOAWAY, b"\x00" * 4), "GOAWAY"),
        (control(f.FrameType.WINDOW_UPDATE, b"\x00" * 9), "WINDOW_UPDATE"),
        (f.encode_data(0, b"x"), "stream 0"),
    ],
)
def test_malformed_frames_are_session_errors(frame: bytes, match: str) -> None:
    conn, events = feed(frame)
    assert_failed(conn, events, match)


def test_unknown_control_types_are_ignored() -> None:
    peer = Peer()
    data = (
        control(5, b"")  # SPDY/2 NOOP
        + control(10, b"\x00" * 12)  # SPDY/3 CREDENTIAL, gone in 3.1
        + control(0xFFFF, b"whatever", flags=0xFF)
        + peer.syn(1, [("streamtype", "error")])
    )
    conn, events = feed(data)
    assert events == [StreamOpened(1, (("streamtype", "error"),))]
    assert conn.data_to_send() == b""


def test_header_block_problems() -> None:
    peer = Peer()
    # Decompressed fine, so the context stays in sync: stream errors only.
    conn, events = feed(
        peer.syn(1, [("StreamType", "error")])
        + peer.syn(3, [("a", "1"), ("a", "2")])
        + peer.syn(5, [("", "x")])
        + peer.syn(7, [("streamtype", "ok")])
    )
    assert [(type(e), e.stream_id) for e in events] == [
        (StreamReset, 1),
        (StreamReset, 3),
        (StreamReset, 5),
        (StreamOpened, 7),
    ]
    assert all(e.status == RstStatus.PROTOCOL_ERROR and not e.remote for e in events[:3])
    assert "lower-case" in events[0].reason
    assert conn.data_to_send() == b"".join(f.encode_rst_stream(s, RstStatus.PROTOCOL_ERROR) for s in (1, 3, 5))


def test_structurally_broken_block_is_session_error() -> None:
    peer = Peer()
    raw = struct.pack(">I", 2) + struct.pack(">I", 1) + b"a" + struct.pack(">I", 1) + b"b"
    conn, events = feed(f.encode_syn_stream(1, peer.block(raw)))
    assert_failed(conn, events, "header block")


def test_header_bomb_is_session_error() -> None:
    peer = Peer()
    conn = SpdyConnection(role=SERVER, config=SpdyConfig(max_header_block_size=4096))
    conn, events = feed(peer.syn(1, [("x", "a" * 100_000)]), conn)
    assert_failed(conn, events, "expands beyond 4096")


def test_peer_finishing_its_zlib_stream_is_session_error() -> None:
    z = zlib.compressobj(zdict=DICTIONARY)
    block = z.compress(b"\x00\x00\x00\x00") + z.flush(zlib.Z_FINISH)
    conn, events = feed(f.encode_syn_stream(1, block) + f.encode_syn_stream(3, block))
    assert_failed(conn, events, "ended its header compression")


def test_stream_id_rules() -> None:
    peer = Peer()
    conn, events = feed(peer.syn(2, []))
    assert_failed(conn, events, "server's stream ids")

    peer = Peer()
    conn, events = feed(peer.syn(5, []) + peer.syn(3, []))
    assert isinstance(events[0], StreamOpened)
    assert_failed(conn, events, "ids must increase")

    peer = Peer()
    conn, events = feed(peer.syn(5, []) + peer.syn(5, []))
    assert events[1] == StreamReset(5, RstStatus.PROTOCOL_ERROR, "second SYN_STREAM for stream", remote=False)
    assert conn.state is ConnectionState.OPEN


def test_data_on_unknown_or_finished_streams() -> None:
    peer = Peer()
    conn, events = feed(
        f.encode_data(9, b"never opened")
        + peer.syn(1, [], flags=f.FLAG_FIN)
        + f.encode_data(1, b"after fin")
        + f.encode_data(1, b"again")  # stream now forgotten: ignored silently
        + peer.syn(3, [])
        + f.encode_data(3, b"fine")
    )
    assert events == [
        StreamReset(9, RstStatus.INVALID_STREAM, "DATA on a stream never opened", remote=False),
        StreamOpened(1, (), fin=True),
        StreamReset(1, RstStatus.STREAM_ALREADY_CLOSED, "DATA after the peer's FIN", remote=False),
        StreamOpened(3, ()),
        DataReceived(3, b"fine"),
    ]
    assert conn.data_to_send() == f.encode_rst_stream(9, RstStatus.INVALID_STREAM) + f.encode_rst_stream(
        1, RstStatus.STREAM_ALREADY_CLOSED
    )


def test_reply_and_headers_rules_on_client() -> None:
    client = SpdyConnection(role=CLIENT)
    sid = client.open_stream([])
    client.data_to_send()
    comp = HeaderCompressor()
    block = comp.compress([], limit=1024)
    again = comp.compress([], limit=1024)
    unknown = comp.compress([], limit=1024)
    client, events = feed(
        f.encode_syn_reply(sid, block) + f.encode_syn_reply(sid, again) + f.encode_headers(51, unknown),
        client,
    )
    assert events == [
        ReplyReceived(sid, ()),
        StreamReset(sid, RstStatus.STREAM_IN_USE, "unexpected SYN_REPLY", remote=False),
        StreamReset(51, RstStatus.INVALID_STREAM, "HEADERS on a stream never opened", remote=False),
    ]
    assert client.state is ConnectionState.OPEN


def test_rst_for_unknown_stream_is_not_answered() -> None:
    conn, events = feed(f.encode_rst_stream(7, RstStatus.CANCEL))
    assert events == [] and conn.data_to_send() == b""


# -- fuzzing ----------------------------------------------------------------


def check_never_raises(data: bytes, chunk: int = 0) -> list:
    conn = SpdyConnection(role=SERVER, config=SpdyConfig(max_control_frame_size=4096))
    events = []
    step = chunk or len(data) or 1
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        conn.receive_data(piece)
        events += drain(conn)
    conn.receive_data(b"")
    events += drain(conn)
    assert all(isinstance(e, ALLOWED_EVENTS) for e in events)
    assert isinstance(events[-1], ConnectionClosed)
    failures = [i for i, e in enumerate(events) if isinstance(e, ConnectionFailed)]
    assert len(failures) <= 1
    if failures:  # nothing but the close after a session error
        assert events[failures[0] + 1 :] == [ConnectionClosed()]
        assert conn.data_to_send()[-16:-8] == bytes.fromhex("8003000700000008")
    return events


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=512), st.integers(min_value=0, max_value=17))
def test_fuzz_random_bytes(data: bytes, chunk: int) -> None:
    check_never_raises(data, chunk)


@st.composite
def plausible_frames(draw: st.DrawFn) -> bytes:
    """Mostly well-formed headers with hostile payloads, to get past the version check."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            ftype = draw(st.sampled_from([*list(f.FrameType), 5, 10, 0, 0xFFFF]))
            payload = draw(st.binary(max_size=40))
            if ftype in (f.FrameType.SYN_STREAM, f.FrameType.SYN_REPLY, f.FrameType.HEADERS):
                payload = draw(st.binary(min_size=4, max_size=10)) + draw(
                    st.sampled_from([b"", b"\x78\xbb\xdf\xa2\x51\xb2", payload])
                )
            out.append(control(ftype, payload, flags=draw(st.integers(0, 255))))
        else:
            sid = draw(st.integers(0, 12))
            out.append(f.encode_data(sid, draw(st.binary(max_size=30)), fin=draw(st.booleans())))
    return b"".join(out)


@FUZZ
@given(plausible_frames(), st.integers(min_value=0, max_value=9))
def test_fuzz_plausible_frames(data: bytes, chunk: int) -> None:
    check_never_raises(data, chunk)


def _valid_stream() -> bytes:
    """A client session touching every frame type, to mutate."""
    c = SpdyConnection(role=CLIENT)
    a = c.open_stream([("streamtype", "error"), ("requestid", "0")])
    b = c.open_stream([("streamtype", "stdin"), ("x", "1"), ("x", "2")], priority=2)
    c.send_data(b, b"hello", fin=True)
    c.send_headers(a, [("streamtype", "stdout")])
    c.ping()
    c.reset(a)
    c.goaway()
    extra = f.encode_settings([(7, 65536, 0)]) + f.encode_window_update(1, 1000)
    return c.data_to_send() + extra


VALID = _valid_stream()


@FUZZ
@given(st.data())
def test_fuzz_mutated_go_stream(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    check_never_raises(bytes(raw[:cut]), data.draw(st.integers(0, 13)))
