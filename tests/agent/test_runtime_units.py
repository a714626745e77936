"""Sans-io pieces of the runtime layer: stream demux, timestamps, CRI log records, specs."""

from __future__ import annotations

import random

import pytest

from edge_agent.runtime import ContainerSpec, FileSpec, InvalidSpec, OutputChunk, PortSpec, Stream
from edge_agent.runtime._process_logs import LogRecord, _tail, encode, parse_line
from edge_agent.runtime.demux import DemuxError, StreamDemuxer, frame
from edge_agent.runtime.timefmt import datetime_to_ns, format_ns, ns_to_datetime, parse_ns


def test_demux_reassembles_frames_split_anywhere() -> None:
    chunks = [
        OutputChunk(Stream.STDOUT, b"hello\n"),
        OutputChunk(Stream.STDERR, b"oops"),
        OutputChunk(Stream.STDOUT, bytes(range(256)) * 300),
    ]
    wire = b"".join(frame(c.stream, c.data) for c in chunks)
    rng = random.Random(7)
    for _ in range(50):
        demux = StreamDemuxer()
        out: list[OutputChunk] = []
        pos = 0
        while pos < len(wire):
            step = rng.randint(1, 40_000)
            out += demux.feed(wire[pos : pos + step])
            pos += step
        demux.finish()
        assert b"".join(c.data for c in out if c.stream is Stream.STDOUT) == chunks[0].data + chunks[2].data
        assert [c for c in out if c.stream is Stream.STDERR] == [chunks[1]]


def test_demux_rejects_non_frames_and_truncation() -> None:
    with pytest.raises(DemuxError):
        StreamDemuxer().feed(b"plain tty output!")
    demux = StreamDemuxer()
    assert demux.feed(frame(Stream.STDOUT, b"abcdef")[:-2]) == []
    with pytest.raises(DemuxError):
        demux.finish()


def test_demux_collects_system_errors() -> None:
    demux = StreamDemuxer()
    assert demux.feed(frame(3, b"daemon says no") + frame(1, b"x")) == [OutputChunk(Stream.STDOUT, b"x")]
    assert demux.system_errors == [b"daemon says no"]


def test_timestamps_roundtrip_at_nanosecond_precision() -> None:
    ns = 1_764_072_000_123_456_789
    text = format_ns(ns)
    assert text == "2025-11-25T12:00:00.123456789Z"
    assert parse_ns(text) == ns
    assert parse_ns("2025-11-25T12:00:00.5Z") == 1_764_072_000_500_000_000
    assert parse_ns("2025-11-25T13:00:00+01:00") == 1_764_072_000_000_000_000
    assert datetime_to_ns(ns_to_datetime(ns)) == ns - 789
    with pytest.raises(ValueError):
        parse_ns("yesterday")


def test_cri_records_split_lines_and_keep_partials() -> None:
    blob = encode(Stream.STDERR, b"one\ntwo\nthr", 1_000_000_000)
    records = [parse_line(line) for line in blob.splitlines()]
    assert records == [
        LogRecord(1_000_000_000, Stream.STDERR, True, b"one"),
        LogRecord(1_000_000_000, Stream.STDERR, True, b"two"),
        LogRecord(1_000_000_000, Stream.STDERR, False, b"thr"),
    ]
    assert records[2] is not None
    assert records[2].render(timestamps=True).data == b"1970-01-01T00:00:01.000000000Z thr"
    assert parse_line(b"garbage") is None
    assert parse_line(b"2025-01-01T00:00:00Z stdout F ") == LogRecord(
        1_735_689_600_000_000_000, Stream.STDOUT, True, b""
    )


def test_tail_counts_lines_not_records() -> None:
    def rec(content: bytes, full: bool) -> LogRecord:
        return LogRecord(0, Stream.STDOUT, full, content)

    a, b1, b2, c = rec(b"a", True), rec(b"b1", False), rec(b"b2", True), rec(b"c", False)
    records = [a, b1, b2, c]
    assert _tail(records, 1) == [c]
    assert _tail(records, 2) == [b1, b2, c]
    assert _tail(records, 3) == records
    assert _tail(records, 10) == records
    assert _tail(records, 0) == []
    assert _tail([a, b2], 1) == [b2]


def test_spec_validation() -> None:
    spec = ContainerSpec(name="x", image="i", command=["a"], env={"K": "v"}, files={"/a/../b": FileSpec(b"")})
    assert spec.command == ("a",)
    assert list(spec.files) == ["/b"]
    with pytest.raises(InvalidSpec):
        ContainerSpec(name="x", image="i", files={"relative": FileSpec(b"")})
    with pytest.raises(InvalidSpec):
        ContainerSpec(name="x", image="i", command="sh -c true")
    with pytest.raises(InvalidSpec):
        ContainerSpec(name="x", image="i", env={"A=B": "c"})
    with pytest.raises(InvalidSpec):
        ContainerSpec(name="x", image="i", stdin_once=True)
    with pytest.raises(InvalidSpec):
        PortSpec(0)
    with pytest.raises(InvalidSpec):
        FileSpec(b"", mode=0o10000)


def test_hijack_keeps_bytes_buffered_with_the_upgrade_response(tmp_path) -> None:
    """The first output can arrive in the same read as the 101 response headers.

    A real dockerd rarely does that on loopback, so a byte-level server sends
    both in one write; the agent's own Engine API client parses it.
    """
    import socket
    import threading

    from edge_agent.runtime._docker_http import EngineClient

    path = str(tmp_path / "upgrade.sock")
    payload = frame(Stream.STDOUT, b"early bytes\n")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            head, _, body = request.partition(b"\r\n\r\n")
            headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
            length = int(headers.get(b"content-length", b"0"))
            while len(body) < length:
                body += conn.recv(4096)
            conn.sendall(
                b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n" + payload
            )
            conn.recv(1)  # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    api = EngineClient(f"unix://{path}", api_version="1.41", timeout=5)
    try:
        hijacked = api.upgrade("/exec/someexec/start", body={"Tty": False, "Detach": False})
        data = hijacked.leftover
        hijacked.sock.settimeout(0.2)
        try:
            while len(data) < len(payload):
                data += hijacked.sock.recv(4096)
        except TimeoutError:
            pass
        assert data == payload
        assert hijacked.leftover, "the payload should have been buffered with the headers"
        hijacked.sock.close()
    finally:
        server.close()
        thread.join(timeout=5)
