"""Message and channel framing: round trips under any chunking, bounded sizes, clear errors."""

from __future__ import annotations

import contextlib
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fleetproto as fp
from fleetproto.framing import pack


def drain(decoder: fp.MessageDecoder) -> list[dict]:
    out = []
    while (message := decoder.next_message()) is not None:
        out.append(message)
    return out


def test_message_round_trip_byte_by_byte() -> None:
    wire = fp.encode_message({"type": "A", "x": 1}) + fp.encode_message({"type": "B", "blob": b"\0" * 300})
    decoder = fp.MessageDecoder()
    got = []
    for byte in wire:
        decoder.feed(bytes([byte]))
        got += drain(decoder)
    decoder.eof()
    assert got == [{"type": "A", "x": 1}, {"type": "B", "blob": b"\0" * 300}]
    assert decoder.messages == 2


def test_encode_needs_a_type_and_respects_the_limit() -> None:
    with pytest.raises(ValueError, match="type"):
        fp.encode_message({"x": 1})
    with pytest.raises(ValueError, match="cannot be encoded"):
        fp.encode_message({"type": "A", "x": 2**70})
    with pytest.raises(fp.MessageTooLarge):
        fp.encode_message({"type": "A", "blob": b"x" * 100}, max_size=50)


def test_oversized_length_breaks_the_stream_for_good() -> None:
    decoder = fp.MessageDecoder(max_size=1000)
    decoder.feed(struct.pack(">I", 1001) + b"x" * 10)
    with pytest.raises(fp.MessageTooLarge, match="1001 bytes exceeds the limit of 1000"):
        decoder.next_message()
    assert decoder.buffered == 0, "nothing of the oversized message is kept"
    decoder.feed(fp.encode_message({"type": "A"}))
    with pytest.raises(fp.MessageTooLarge):
        decoder.next_message()


def test_bad_body_is_skipped_and_the_stream_goes_on() -> None:
    bodies = [b"\xc1", pack([1, 2]), pack({"no": "type"}), pack({"type": 5}), b"\xa3ab"]
    wire = b"".join(struct.pack(">I", len(b)) + b for b in bodies) + fp.encode_message({"type": "Ok"})
    decoder = fp.MessageDecoder()
    decoder.feed(wire)
    errors = 0
    while True:
        try:
            message = decoder.next_message()
        except fp.MessageError:
            errors += 1
            continue
        break
    assert message == {"type": "Ok"}
    assert errors == len(bodies) == decoder.bad_messages


def test_invalid_utf8_and_extension_types_are_message_errors() -> None:
    decoder = fp.MessageDecoder()
    body = b"\x81\xa4type\xa2\xff\xfe"  # {"type": <invalid utf-8>}
    decoder.feed(struct.pack(">I", len(body)) + body)
    with pytest.raises(fp.MessageError):
        decoder.next_message()
    ext = msgpack.packb({"type": "A", "t": msgpack.ExtType(5, b"x")})
    decoder.feed(struct.pack(">I", len(ext)) + ext)
    assert decoder.next_message()["t"] == msgpack.ExtType(5, b"x")  # framing is fine; schemas reject it
    with pytest.raises(fp.SchemaError):
        fp.decode({"type": "PodDelete", "uid": msgpack.ExtType(5, b"x")})


def test_truncated_message_at_eof() -> None:
    decoder = fp.MessageDecoder()
    decoder.feed(fp.encode_message({"type": "A"})[:-1])
    assert decoder.next_message() is None
    with pytest.raises(fp.FramingError, match="ended inside a message"):
        decoder.eof()


@given(
    st.lists(st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1), max_size=3), max_size=5), st.data()
)
def test_any_chunking_gives_the_same_messages(maps, data) -> None:
    messages = [{"type": "T", **m} for m in maps]
    wire = b"".join(fp.encode_message(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    decoder = fp.MessageDecoder()
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        decoder.feed(wire[start:end])
        got += drain(decoder)
    decoder.eof()
    assert got == messages


@settings(max_examples=1000)
@given(st.binary(max_size=200), st.integers(1, 64))
def test_random_bytes_only_raise_protocol_errors(data, max_size) -> None:
    decoder = fp.MessageDecoder(max_size=max_size)
    decoder.feed(data)
    for _ in range(len(data) + 2):
        try:
            if decoder.next_message() is None:
                break
        except fp.FramingError:
            break
        except fp.MessageError:
            continue
    with contextlib.suppress(fp.FramingError):
        decoder.eof()


# ------------------------------------------------------------------ channels


def test_channel_frames_round_trip_and_unknown_channels_are_skipped() -> None:
    wire = (
        fp.encode_frame(fp.Channel.STDOUT, b"out")
        + fp.encode_frame(9, b"future")
        + fp.encode_frame(fp.Channel.STDIN)
        + fp.resize_frame(80, 24)
        + fp.exit_frame(3)
    )
    decoder = fp.ChannelDecoder()
    frames = []
    for byte in wire:
        decoder.feed(bytes([byte]))
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    decoder.eof()
    assert [f.channel for f in frames] == [fp.Channel.STDOUT, fp.Channel.STDIN, fp.Channel.RESIZE, fp.Channel.STATUS]
    assert frames[0].payload == b"out" and frames[1].payload == b""
    assert fp.TerminalSize.decode(frames[2].payload) == fp.TerminalSize(80, 24)
    assert fp.ExitStatus.decode(frames[3].payload) == fp.ExitStatus(exit_code=3)
    assert decoder.unknown_frames == 1


def test_status_payloads() -> None:
    error = fp.ExitStatus(error="NotFound", reason="no container x")
    assert fp.ExitStatus.decode(error.encode()) == error
    assert not error.success and fp.ExitStatus(exit_code=0).success
    with pytest.raises(fp.SchemaError, match="exactly one"):
        fp.ExitStatus.decode(pack({"exit_code": 1, "error": "x"}))
    with pytest.raises(fp.SchemaError):
        fp.ExitStatus.decode(pack({"exit_code": True}))
    with pytest.raises(fp.SchemaError):
        fp.TerminalSize.decode(pack({"width": 70000, "height": 1}))
    with pytest.raises(fp.MessageError):
        fp.TerminalSize.decode(b"\xc1")


def test_channel_frame_limit_and_chunking() -> None:
    decoder = fp.ChannelDecoder(max_payload=10)
    decoder.feed(fp.encode_chunks(fp.Channel.STDOUT, b"x" * 25, max_payload=10))
    sizes = []
    while (frame := decoder.next_frame()) is not None:
        sizes.append(len(frame.payload))
    assert sizes == [10, 10, 5]
    decoder.feed(fp.encode_frame(fp.Channel.STDOUT, b"y" * 11))
    with pytest.raises(fp.MessageTooLarge, match="channel frame of 11 bytes"):
        decoder.next_frame()


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_channel_decoder_fuzz(data) -> None:
    decoder = fp.ChannelDecoder(max_payload=64)
    decoder.feed(data)
    with contextlib.suppress(fp.FramingError):
        while (frame := decoder.next_frame()) is not None:
            if frame.channel is fp.Channel.STATUS:
                with contextlib.suppress(fp.MessageError):
                    fp.ExitStatus.decode(frame.payload)
            elif frame.channel is fp.Channel.RESIZE:
                with contextlib.suppress(fp.MessageError):
                    fp.TerminalSize.decode(frame.payload)
        decoder.eof()
