"""Channel framing for exec, attach and hostexec streams.

    frame = channel:u8 length:u32 (big-endian) payload[length]

| channel | direction      | payload |
|---------|----------------|---------|
| 0 stdin  | cloud -> device | bytes; an empty frame means stdin EOF (as does the stream's FIN) |
| 1 stdout | device -> cloud | bytes (everything, with a TTY) |
| 2 stderr | device -> cloud | bytes |
| 3 status | device -> cloud | msgpack ``{exit_code}`` or ``{error, reason}``; the last frame |
| 4 resize | cloud -> device | msgpack ``{width, height}`` (columns, rows) |

Frames on unknown channels are skipped by their length and counted, so a
later version can add channels. A length beyond ``max_payload`` breaks the
stream (``MessageTooLarge``). Sans-io like ``framing``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from ._schema import Fields, check_int
from .errors import FramingError, MessageTooLarge, SchemaError
from .framing import pack, unpack

HEADER = struct.Struct(">BI")
DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""Senders chunk their output well below this; a bigger frame is a broken peer."""


class Channel(IntEnum):
    STDIN = 0
    STDOUT = 1
    STDERR = 2
    STATUS = 3
    RESIZE = 4


class ChannelFrame(NamedTuple):
    channel: Channel
    payload: bytes


def encode_frame(channel: int, payload: bytes = b"") -> bytes:
    if not 0 <= channel <= 255:
        raise ValueError(f"channel {channel} out of range")
    return HEADER.pack(channel, len(payload)) + payload


def encode_chunks(channel: int, data: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> bytes:
    """``data`` as one or more frames, each within ``max_payload``."""
    if not data:
        return encode_frame(channel)
    return b"".join(encode_frame(channel, data[pos : pos + max_payload]) for pos in range(0, len(data), max_payload))


class ChannelDecoder:
    """Bytes of an exec/attach stream -> ``ChannelFrame``s."""

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._error: FramingError | None = None
        self.unknown_frames = 0

    def feed(self, data: bytes) -> None:
        if self._error is None:
            self._buffer += data

    def next_frame(self) -> ChannelFrame | None:
        while True:
            if self._error is not None:
                raise self._error
            if len(self._buffer) < HEADER.size:
                return None
            channel, size = HEADER.unpack_from(self._buffer)
            if size > self.max_payload:
                self._error = MessageTooLarge(size, self.max_payload, "channel frame")
                self._buffer.clear()
                raise self._error
            end = HEADER.size + size
            if len(self._buffer) < end:
                return None
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            try:
                known = Channel(channel)
            except ValueError:
                self.unknown_frames += 1
                continue
            return ChannelFrame(known, payload)

    def eof(self) -> None:
        if self._error is not None:
            raise self._error
        if self._buffer:
            self._error = FramingError(f"stream ended inside a channel frame ({len(self._buffer)} bytes left over)")
            raise self._error


# ---------------------------------------------------------------- payloads


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended: an exit code, or an error that kept it from running/finishing."""

    exit_code: int | None = None
    error: str | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if (self.exit_code is None) == (self.error is None):
            raise ValueError("ExitStatus needs exactly one of exit_code and error")

    @property
    def success(self) -> bool:
        return self.exit_code == 0

    def encode(self) -> bytes:
        if self.error is not None:
            return pack({"error": self.error, "reason": self.reason})
        return pack({"exit_code": self.exit_code})

    @classmethod
    def decode(cls, payload: bytes) -> ExitStatus:
        fields = Fields(unpack(payload), "status")
        code = fields.int("exit_code", None, lo=-(2**31), hi=2**32 - 1)
        error = fields.str("error", None, max_len=256)
        reason = fields.str("reason", "", max_len=4096)
        if (code is None) == (error is None):
            raise SchemaError("status", "needs exactly one of exit_code and error")
        return cls(exit_code=code, error=error, reason=reason)


@dataclass(frozen=True, slots=True)
class TerminalSize:
    width: int
    height: int

    def __post_init__(self) -> None:
        check_int(self.width, "width", lo=0, hi=65535)
        check_int(self.height, "height", lo=0, hi=65535)

    def encode(self) -> bytes:
        return pack({"width": self.width, "height": self.height})

    @classmethod
    def decode(cls, payload: bytes) -> TerminalSize:
        fields = Fields(unpack(payload), "resize")
        return cls(width=fields.int("width", lo=0, hi=65535), height=fields.int("height", lo=0, hi=65535))


def exit_frame(exit_code: int) -> bytes:
    return encode_frame(Channel.STATUS, ExitStatus(exit_code=exit_code).encode())


def error_frame(error: str, reason: str = "") -> bytes:
    return encode_frame(Channel.STATUS, ExitStatus(error=error, reason=reason).encode())


def resize_frame(width: int, height: int) -> bytes:
    return encode_frame(Channel.RESIZE, TerminalSize(width, height).encode())
