"""SPDY/3.1 wire format: dictionary, header blocks, frames, Go-made vectors."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_bridge.spdy import (
    NEED_DATA,
    SERVER,
    DataReceived,
    GoAwayReceived,
    HeadersReceived,
    PingReceived,
    Setting,
    SettingsReceived,
    SpdyConnection,
    StreamOpened,
    StreamReset,
)
from cloud_bridge.spdy import _frames as f
from cloud_bridge.spdy._headers import (
    DICTIONARY,
    HeaderBlockError,
    HeaderCompressor,
    HeaderDecompressor,
    HeaderEncodeError,
    decode_block,
    encode_block,
)

# Written by github.com/moby/spdystream v0.5.1 spdy.Framer (the library that
# kube-apiserver uses towards kubelets), one direction of one connection:
# SYN_STREAM 1 {Streamtype: error, Requestid: 0}; SYN_STREAM 3 priority 2
# {Streamtype: stdin, Requestid: 0, X-Multi: [a b]}; DATA 3 "hello" FIN; PING 1;
# SETTINGS {INITIAL_WINDOW_SIZE: 65536}; HEADERS 1 {Streamtype: stdout};
# WINDOW_UPDATE 1 +1000; RST_STREAM 1 CANCEL; GOAWAY 0 OK.
GO_VECTOR = bytes.fromhex(
    "80030001000000340000000100000000000078f9e3c6a7c202e50e060606ce2248fc6482d2"
    "2da30138e59514a526e6420b17d65450d003000000ffff80030001000000290000000300"
    "000000400002a5504ca9e29294cc3cac66b057e8e696e6946482cb5a862400000000ffff"
    "000000030100000568656c6c6f800300060000000400000001800300040000000c000000"
    "01000000070001000080030008000000150000000102096368672b2e49c92f2d01000000"
    "ffff800300090000000800000001000003e880030003000000080000000100000005800300"
    "07000000080000000000000000"
)


def drain(conn: SpdyConnection) -> list:
    events = []
    while (ev := conn.next_event()) is not NEED_DATA:
        events.append(ev)
    return events


def test_dictionary_is_the_spdy3_constant() -> None:
    # Length and digest of the bytes in moby/spdystream spdy/dictionary.go.
    assert len(DICTIONARY) == 1423
    assert hashlib.sha256(DICTIONARY).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )


def test_go_framer_vector_decodes() -> None:
    server = SpdyConnection(role=SERVER)
    server.receive_data(GO_VECTOR)
    events = drain(server)
    assert [type(e) for e in events] == [
        StreamOpened,
        StreamOpened,
        DataReceived,
        PingReceived,
        SettingsReceived,
        HeadersReceived,
        StreamReset,
        GoAwayReceived,
    ]
    first, second = events[0], events[1]
    assert sorted(first.headers) == [("requestid", "0"), ("streamtype", "error")]
    assert sorted(second.headers) == [
        ("requestid", "0"),
        ("streamtype", "stdin"),
        ("x-multi", "a"),
        ("x-multi", "b"),
    ]
    assert second.priority == 2
    assert events[2] == DataReceived(3, b"hello", fin=True)
    assert events[3] == PingReceived(1)
    assert events[4] == SettingsReceived((Setting(f.SettingId.INITIAL_WINDOW_SIZE, 65536),))
    assert events[5] == HeadersReceived(1, (("streamtype", "stdout"),))
    assert events[6].stream_id == 1 and events[6].status == f.RstStatus.CANCEL
    assert events[7] == GoAwayReceived(0, 0)
    assert server.data_to_send() == f.encode_ping(1)  # the ping echo, nothing else


def test_our_first_block_matches_go_layout() -> None:
    # Go's framer and ours both start the zlib stream with the dictionary id,
    # so the peer's decompressor asks for exactly this dictionary.
    block = HeaderCompressor().compress([("streamtype", "error")], limit=1024)
    assert block[0] == 0x78  # deflate, 32 KiB window
    assert block[1] & 0x20  # FDICT: a preset dictionary follows
    assert struct.unpack(">I", block[2:6])[0] == zlib.adler32(DICTIONARY)
    assert block.endswith(b"\x00\x00\xff\xff")  # sync flush: block stands alone


headers_st = st.lists(
    st.tuples(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-:", min_size=1, max_size=20),
        st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=40),
    ),
    max_size=12,
)


def _grouped(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What a block round trip yields: repeats of a name gathered at its first place."""
    order: dict[str, list[str]] = {}
    for name, value in headers:
        order.setdefault(name, []).append(value)
    return [(n, v) for n, vs in order.items() for v in vs]


@given(headers_st)
def test_block_round_trip(headers: list[tuple[str, str]]) -> None:
    decoded, problem = decode_block(encode_block(headers))
    assert list(decoded) == _grouped(headers)
    assert problem is None


@given(st.lists(headers_st, min_size=1, max_size=30))
def test_shared_context_many_blocks(blocks: list[list[tuple[str, str]]]) -> None:
    comp, decomp = HeaderCompressor(), HeaderDecompressor(1 << 20)
    for headers in blocks:
        decoded, problem = decomp.decompress(comp.compress(headers, limit=1 << 20))
        assert list(decoded) == _grouped(headers) and problem is None


def test_context_is_shared_not_reset() -> None:
    comp = HeaderCompressor()
    headers = [("streamtype", "stdout"), ("port", "8080"), ("requestid", "7")]
    first = comp.compress(headers, limit=1024)
    second = comp.compress(headers, limit=1024)
    assert len(second) < len(first)  # the repeat is a back-reference
    fresh = HeaderDecompressor(1024)
    with pytest.raises(HeaderBlockError):
        fresh.decompress(second)  # meaningless without the first block


def test_encode_lowercases_and_rejects_bad_headers() -> None:
    assert decode_block(encode_block([("Content-Type", "x")])) == ((("content-type", "x"),), None)
    for bad in ([("", "x")], [("a", "b\x00c")], [("a", "\u20ac")]):
        with pytest.raises(HeaderEncodeError):
            encode_block(bad)


def _raw_block(*pairs: tuple[str, str]) -> bytes:
    out = [struct.pack(">I", len(pairs))]
    for name, value in pairs:
        out += [struct.pack(">I", len(name)), name.encode(), struct.pack(">I", len(value))]
        out.append(value.encode())
    return b"".join(out)


def test_header_problems() -> None:
    headers, problem = decode_block(_raw_block(("a", "1\x002"), ("b", "")))
    assert headers == (("a", "1"), ("a", "2"), ("b", "")) and problem is None
    assert "lower-case" in (decode_block(_raw_block(("Host", "x")))[1] or "")
    assert "twice" in (decode_block(_raw_block(("a", "1"), ("b", "2"), ("a", "3")))[1] or "")
    assert "empty" in (decode_block(_raw_block(("", "1")))[1] or "")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x00\x00",
        b"\x00\x00\x00\x01",  # one pair announced, none present
        b"\x00\x00\x00\x01\x00\x00\x00\x05ab\x00\x00\x00\x00",  # name overruns
        b"\x00\x00\x00\x00x",  # stray byte
        b"\xff\xff\xff\xff" + b"\x00" * 16,  # absurd count
    ],
)
def test_decode_block_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(HeaderBlockError):
        decode_block(raw)


def test_decompressor_caps_expansion() -> None:
    comp = HeaderCompressor()
    block = comp.compress([("x", "a" * 100_000)], limit=1 << 20)
    assert len(block) < 1000
    with pytest.raises(HeaderBlockError, match="expands"):
        HeaderDecompressor(10_000).decompress(block)


def test_decompressor_rejects_garbage_and_wrong_dictionary() -> None:
    with pytest.raises(HeaderBlockError):
        HeaderDecompressor(1024).decompress(b"\x00garbage-not-zlib")
    other = zlib.compressobj(zdict=b"some other dictionary")
    block = other.compress(encode_block([("a", "b")])) + other.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(HeaderBlockError):
        HeaderDecompressor(1024).decompress(block)


def test_frame_header_layout() -> None:
    raw = f.encode_rst_stream(5, f.RstStatus.CANCEL)
    assert raw[:8] == bytes.fromhex("8003000300000008")
    head = f.parse_header(raw)
    assert (head.control, head.version, head.type, head.flags, head.length) == (True, 3, 3, 0, 8)
    data = f.encode_data(0x7FFFFFFF, b"abc", fin=True)
    assert data[:8] == bytes.fromhex("7fffffff01000003")
    head = f.parse_header(data)
    assert (head.control, head.stream_id, head.flags, head.length) == (False, 0x7FFFFFFF, 1, 3)


def test_syn_stream_layout() -> None:
    raw = f.encode_syn_stream(7, b"BLOCK", associated_id=2, priority=5, flags=f.FLAG_FIN)
    assert raw == bytes.fromhex("800300010100000f0000000700000002a000") + b"BLOCK"
    syn = f.parse_syn_stream(raw[8:])
    assert (syn.stream_id, syn.associated_id, syn.priority, syn.block) == (7, 2, 5, b"BLOCK")


def test_settings_round_trip() -> None:
    raw = f.encode_settings([(4, 100, 1), (7, 65536, 0)], clear=True)
    head = f.parse_header(raw)
    assert head.flags == f.FLAG_SETTINGS_CLEAR_SETTINGS
    assert f.parse_settings(raw[8:]) == [(4, 100, 1), (7, 65536, 0)]


@pytest.mark.parametrize(
    ("parser", "payload"),
    [
        (f.parse_syn_stream, b"\x00" * 9),
        (f.parse_syn_stream, b"\x00" * 10),  # stream 0
        (f.parse_rst_stream, b"\x00\x00\x00\x01\x00\x00\x00\x00"),  # status 0
        (f.parse_rst_stream, b"\x00\x00\x00\x01\x00\x00\x00\x01\x00"),
        (f.parse_settings, b"\x00\x00\x00\x02" + b"\x00" * 8),
        (f.parse_ping, b"\x00\x00\x00"),
        (f.parse_goaway, b"\x00\x00\x00\x00"),
        (f.parse_window_update, b"\x00" * 12),
    ],
)
def test_payload_parsers_reject(parser: Callable[[bytes], object], payload: bytes) -> None:
    with pytest.raises(f.FrameError):
        parser(payload)
