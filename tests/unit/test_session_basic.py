from seqstream import HandshakeCompleted, StreamDataReceived, StreamFinished, StreamOpened

from .sim import LinkProfile, Pair


def echo_handler(pair, side):
    """The peer's app: read everything, echo it back when the writer half-closes."""
    received: dict[int, bytearray] = {}

    def handle(name, event):
        session = pair.sessions[side]
        if isinstance(event, StreamDataReceived):
            buf = received.setdefault(event.stream_id, bytearray())
            buf.extend(event.data)
            session.stream_consumed(event.stream_id, len(event.data), now=pair.now)
            if event.end_stream:
                session.send_stream_data(event.stream_id, bytes(buf), end_stream=True, now=pair.now)

    return handle


def collector(pair, side, sink):
    def handle(name, event):
        if isinstance(event, StreamDataReceived):
            sink.setdefault(event.stream_id, bytearray()).extend(event.data)
            pair.sessions[side].stream_consumed(event.stream_id, len(event.data), now=pair.now)

    return handle


def test_handshake_and_echo():
    pair = Pair()
    pair.connect()
    pair.run(lambda: pair.device.established and pair.cloud.established, max_time=5)
    assert any(isinstance(e, HandshakeCompleted) for e in pair.events["device"])
    sid = pair.cloud.open_stream({"kind": "echo"}, now=pair.now)
    pair.cloud.send_stream_data(sid, b"hello", end_stream=True, now=pair.now)
    got: dict[int, bytearray] = {}
    pair.handlers["device"] = echo_handler(pair, "device")
    pair.handlers["cloud"] = collector(pair, "cloud", got)
    pair.run(lambda: not pair.device.stream_ids and not pair.cloud.stream_ids, max_time=5)
    assert any(isinstance(e, StreamFinished) for e in pair.events["cloud"])
    opened = [e for e in pair.events["device"] if isinstance(e, StreamOpened)]
    assert opened[0].metadata == {"kind": "echo"}
    assert got[sid] == b"hello"
    assert pair.device.stream_ids == [] and pair.cloud.stream_ids == []


def test_bulk_echo_with_loss():
    pair = Pair(seed=3, profile=LinkProfile(loss=0.1, duplicate=0.05, reorder=0.1))
    pair.connect()
    payload = bytes(range(256)) * 4000
    pair.run(lambda: pair.device.established and pair.cloud.established, max_time=30)
    sid = pair.device.open_stream({}, now=pair.now)
    pair.device.send_stream_data(sid, payload, end_stream=True, now=pair.now)
    got: dict[int, bytearray] = {}
    pair.handlers["cloud"] = echo_handler(pair, "cloud")
    pair.handlers["device"] = collector(pair, "device", got)
    pair.run(lambda: sid not in pair.device.stream_ids and not pair.cloud.stream_ids, max_time=60)
    assert bytes(got[sid]) == payload


def test_session_credit_keeps_flowing_without_probes():
    """Beyond the session window, MAX_DATA updates must arrive on their own:
    a lossless link needs no probe timeout and sees no duplicate."""
    from seqstream import SessionConfig

    config = SessionConfig(stream_window=64 * 1024, session_window=256 * 1024, min_rto=0.05, initial_rtt=0.01)
    pair = Pair(config=config)
    pair.connect()
    pair.run(lambda: pair.device.established and pair.cloud.established, max_time=5)
    payload = bytes(range(256)) * 8000  # 2 MB: eight session windows
    sid = pair.device.open_stream({}, now=pair.now)
    pair.device.send_stream_data(sid, payload, end_stream=True, now=pair.now)
    got: dict[int, bytearray] = {}
    pair.handlers["cloud"] = echo_handler(pair, "cloud")
    pair.handlers["device"] = collector(pair, "device", got)
    pair.run(lambda: not pair.device.stream_ids and not pair.cloud.stream_ids, max_time=60)
    assert bytes(got[sid]) == payload
    for session in (pair.device, pair.cloud):
        assert session.stats["probe_timeouts"] == 0, session.stats
        assert session.stats["duplicate_data"] == 0, session.stats
