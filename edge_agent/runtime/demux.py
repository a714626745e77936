"""Sans-io parser for Docker's multiplexed stdio stream (non-TTY attach, exec, logs).

Each frame is an 8-byte header ``[stream, 0, 0, 0, size (big-endian u32)]``
followed by ``size`` bytes (Engine API, "Attach to a container: Stream
format"). Stream 0 is stdin (written back for ``docker attach --sig-proxy``
users), 1 stdout, 2 stderr, 3 a system error the daemon reports in-band.
Frames may arrive split or merged at any byte boundary.
"""

from __future__ import annotations

import struct

from .types import OutputChunk, Stream

HEADER = struct.Struct(">BxxxL")
SYSTEM_ERROR = 3


class DemuxError(ValueError):
    """The byte stream is not Docker's frame format (e.g. a TTY stream)."""


class StreamDemuxer:
    """``feed(bytes) -> chunks``; ``finish()`` at EOF checks nothing was cut off."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.system_errors: list[bytes] = []

    def feed(self, data: bytes) -> list[OutputChunk]:
        self._buf += data
        out: list[OutputChunk] = []
        while len(self._buf) >= HEADER.size:
            kind, size = HEADER.unpack_from(self._buf)
            if kind > SYSTEM_ERROR:
                raise DemuxError(f"bad stream id {kind} in frame header {bytes(self._buf[:8])!r}")
            end = HEADER.size + size
            if len(self._buf) < end:
                break
            payload = bytes(self._buf[HEADER.size : end])
            del self._buf[:end]
            if kind == SYSTEM_ERROR:
                self.system_errors.append(payload)
            elif payload:
                out.append(OutputChunk(Stream(kind), payload))
        return out

    def finish(self) -> None:
        if self._buf:
            raise DemuxError(f"stream ended inside a frame ({len(self._buf)} bytes left over)")


def frame(stream: Stream | int, payload: bytes) -> bytes:
    """Encode one frame (tests, and anyone re-multiplexing)."""
    return HEADER.pack(int(stream), len(payload)) + payload
