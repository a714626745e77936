"""The frame decoder must turn any byte string into frames or a FrameError."""

import contextlib
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from seqstream import Role, Session
from seqstream import frames as f
from seqstream.events import InputRejected

HEADER = f.encode_header(f.PacketHeader(5, 0, 1, 0, 0))

frame_values = st.one_of(
    st.builds(f.Data, st.integers(0, 2**32 - 1), st.integers(0, 2**63), st.binary(max_size=64), st.booleans()),
    st.builds(f.Ack, st.integers(0, 2**32 - 1), st.integers(0, 2**40), st.integers(0, 2**40)),
    st.builds(
        f.Reset, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**63), st.text(max_size=20)
    ),
    st.builds(f.ResetAck, st.integers(0, 2**32 - 1), st.integers(0, 2**63)),
    st.builds(f.Closed, st.integers(0, 2**32 - 1)),
    st.builds(f.MaxData, st.integers(0, 2**63)),
    st.builds(f.Ping, st.integers(0, 2**32 - 1)),
    st.builds(f.Pong, st.integers(0, 2**32 - 1)),
    st.builds(f.Close, st.integers(0, 2**32 - 1), st.text(max_size=20)),
    st.builds(
        f.Open,
        st.integers(0, 2**32 - 1),
        st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=3),
    ),
    st.builds(
        f.Hello, st.booleans(), st.integers(1, 2**20), st.integers(1, 2**30), st.integers(1, 2**30), st.text(max_size=8)
    ),
)


@given(st.lists(frame_values, max_size=6))
def test_encode_decode_round_trip(values):
    header, decoded = f.decode_packet(f.encode_packet(f.PacketHeader(5, 7, 1, 2, 3), values))
    assert (header.src_epoch, header.dst_epoch, header.ts) == (5, 7, 1)
    assert decoded == values


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_frame_error(data):
    with contextlib.suppress(f.FrameError):
        f.decode_packet(data)


@settings(max_examples=1000)
@given(st.lists(frame_values, min_size=1, max_size=4), st.data())
def test_mutated_packets_never_crash_the_session(values, data):
    packet = bytearray(f.encode_packet(f.PacketHeader(5, 0, 1, 0, 0), values))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(packet) - 1))
        packet[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(f.HEADER_SIZE // 2, len(packet)))
    session = Session(role=Role.CLOUD, epoch=9)
    session.connect(0.0)
    session.receive_packet(bytes(packet[:cut]), now=0.0)
    session.packets_to_send(0.0)
    while session.next_event() is not None:
        pass


def test_malformed_input_is_counted_and_reported():
    session = Session(role=Role.CLOUD, epoch=9)
    session.receive_packet(b"\x01\x00", now=0.0)
    session.receive_packet(b"\x09" + HEADER[1:], now=0.0)  # unknown version
    truncated = HEADER + struct.pack(">BI", f.FrameType.DATA, 100) + b"short"
    session.receive_packet(truncated, now=0.0)
    assert session.stats["malformed_packets"] == 3
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    assert len(events) == 3 and all(isinstance(e, InputRejected) for e in events)
    assert "version" in events[1].reason and "claims 100 bytes" in events[2].reason


def test_unknown_frame_types_are_skipped_not_fatal():
    hello = f.Hello(reply=True, max_packet=65536, stream_window=1 << 20, session_window=1 << 24, role="device")
    packet = HEADER + struct.pack(">BI", 0x7F, 3) + b"abc" + f.encode_frame(hello)
    _, frames = f.decode_packet(packet)
    assert frames[0] == f.UnknownFrame(0x7F, 3)
    assert frames[1] == hello


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=30), st.integers(0, 2**16))
def test_garbage_from_the_peer_never_corrupts_a_live_stream(garbage, seed):
    from seqstream import SessionState, StreamDataReceived, StreamReset

    from .sim import Pair

    pair = Pair(seed=seed)
    pair.connect()
    pair.run(lambda: pair.device.established and pair.cloud.established, max_time=5)
    payload = bytes(range(256)) * 200
    sid = pair.device.open_stream({"kind": "victim"}, now=pair.now)
    pair.device.send_stream_data(sid, payload, end_stream=True, now=pair.now)
    got = bytearray()
    resets = []

    def cloud(name, event):
        if isinstance(event, StreamReset) and event.stream_id == sid:
            resets.append(event)
        if isinstance(event, StreamDataReceived) and event.stream_id == sid:
            got.extend(event.data)
            pair.cloud.stream_consumed(sid, len(event.data), now=pair.now)
            if event.end_stream:
                pair.cloud.send_stream_data(sid, b"", end_stream=True, now=pair.now)

    pair.handlers["cloud"] = cloud
    header = f.encode_header(f.PacketHeader(pair.device.epoch, pair.cloud.epoch, 0, 0, 0))
    for i, junk in enumerate(garbage):
        # Valid header from the right epoch, then junk frames - including ones naming our stream.
        body = junk if i % 2 else struct.pack(">BI", junk[0] % 12, len(junk) - 1) + junk[1:]
        pair.cloud.receive_packet(header + body, now=pair.now)
        pair.step()
    pair.run(
        lambda: (not pair.device.stream_ids and not pair.cloud.stream_ids) or pair.cloud.state is SessionState.CLOSED,
        max_time=30,
    )
    # Junk may legitimately reset the stream or close the session (it can spell
    # a valid RESET or CLOSE); it must never deliver wrong bytes.
    if resets or pair.cloud.state is SessionState.CLOSED:
        assert payload.startswith(bytes(got))
    else:
        assert bytes(got) == payload
