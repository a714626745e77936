"""Wire format: one MQTT payload is one packet holding one or more frames.

Layout (all integers big-endian), documented in PROTOCOL.md:

    packet = header frame*
    header = version:u8 flags:u8 src_epoch:u64 dst_epoch:u64
             ts:u32 echo_ts:u32 echo_delay:u32          (30 bytes)
    frame  = type:u8 length:u32 body[length]

Decoding never trusts a length: every failure raises ``FrameError`` with a
reason, which the session counts and drops. Unknown frame types decode to
``UnknownFrame`` so a newer peer can add frames without breaking us.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

PROTOCOL_VERSION = 1

_HEADER = struct.Struct(">BBQQIII")
HEADER_SIZE = _HEADER.size
_FRAME = struct.Struct(">BI")
FRAME_OVERHEAD = _FRAME.size
_DATA = struct.Struct(">IQB")
DATA_OVERHEAD = FRAME_OVERHEAD + _DATA.size
_ACK = struct.Struct(">IBQQB")
_RANGE = struct.Struct(">QQ")
_RESET = struct.Struct(">IIQ")
_RESET_ACK = struct.Struct(">IQ")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_CLOSE = struct.Struct(">I")

MAX_SACK_RANGES = 16
MAX_U32 = 0xFFFFFFFF
FIN_FLAG = 0x01


class FrameType(IntEnum):
    HELLO = 0x01
    OPEN = 0x02
    DATA = 0x03
    ACK = 0x04
    RESET = 0x05
    RESET_ACK = 0x06
    CLOSED = 0x07
    MAX_DATA = 0x08
    PING = 0x09
    PONG = 0x0A
    CLOSE = 0x0B


class FrameError(ValueError):
    """A packet or frame that does not follow PROTOCOL.md."""


@dataclass(slots=True, frozen=True)
class PacketHeader:
    src_epoch: int
    dst_epoch: int
    ts: int
    echo_ts: int
    echo_delay: int
    flags: int = 0


@dataclass(slots=True, frozen=True)
class Hello:
    """Session handshake; ``reply`` asks the peer to answer with its own Hello."""

    reply: bool
    max_packet: int
    stream_window: int
    session_window: int
    role: str


@dataclass(slots=True, frozen=True)
class Open:
    stream_id: int
    metadata: dict[str, Any]


@dataclass(slots=True, frozen=True)
class Data:
    stream_id: int
    offset: int
    data: bytes
    fin: bool = False


@dataclass(slots=True, frozen=True)
class Ack:
    """Receiver state of one stream: cumulative offset, SACK ranges, credit."""

    stream_id: int
    cumulative: int
    max_stream_data: int
    ranges: tuple[tuple[int, int], ...] = ()
    fin: bool = False


@dataclass(slots=True, frozen=True)
class Reset:
    stream_id: int
    code: int
    final_size: int
    reason: str = ""


@dataclass(slots=True, frozen=True)
class ResetAck:
    """Confirms a RESET; carries our final size so the peer can settle session credit."""

    stream_id: int
    final_size: int = 0


@dataclass(slots=True, frozen=True)
class Closed:
    """ "I have forgotten this stream": everything it carried is settled."""

    stream_id: int


@dataclass(slots=True, frozen=True)
class MaxData:
    maximum: int


@dataclass(slots=True, frozen=True)
class Ping:
    ident: int


@dataclass(slots=True, frozen=True)
class Pong:
    ident: int


@dataclass(slots=True, frozen=True)
class Close:
    code: int
    reason: str = ""


@dataclass(slots=True, frozen=True)
class UnknownFrame:
    frame_type: int
    length: int


Frame = Hello | Open | Data | Ack | Reset | ResetAck | Closed | MaxData | Ping | Pong | Close


def encode_header(header: PacketHeader) -> bytes:
    return _HEADER.pack(
        PROTOCOL_VERSION,
        header.flags,
        header.src_epoch,
        header.dst_epoch,
        header.ts & MAX_U32,
        header.echo_ts & MAX_U32,
        min(max(header.echo_delay, 0), MAX_U32),
    )


def _frame(frame_type: FrameType, body: bytes) -> bytes:
    return _FRAME.pack(frame_type, len(body)) + body


def encode_data_prefix(stream_id: int, offset: int, length: int, fin: bool) -> bytes:
    """Header of a DATA frame; the caller appends ``length`` payload bytes.

    Split out so the hot path can join header and payload in one copy.
    """
    return _FRAME.pack(FrameType.DATA, _DATA.size + length) + _DATA.pack(stream_id, offset, FIN_FLAG if fin else 0)


def encode_frame(frame: Frame) -> bytes:
    if isinstance(frame, Data):
        return encode_data_prefix(frame.stream_id, frame.offset, len(frame.data), frame.fin) + bytes(frame.data)
    if isinstance(frame, Ack):
        ranges = frame.ranges[:MAX_SACK_RANGES]
        body = _ACK.pack(
            frame.stream_id,
            FIN_FLAG if frame.fin else 0,
            frame.cumulative,
            frame.max_stream_data,
            len(ranges),
        ) + b"".join(_RANGE.pack(s, e) for s, e in ranges)
        return _frame(FrameType.ACK, body)
    if isinstance(frame, Hello):
        body = msgpack.packb(
            {
                "reply": frame.reply,
                "max_packet": frame.max_packet,
                "stream_window": frame.stream_window,
                "session_window": frame.session_window,
                "role": frame.role,
            }
        )
        return _frame(FrameType.HELLO, body)
    if isinstance(frame, Open):
        return _frame(FrameType.OPEN, _U32.pack(frame.stream_id) + msgpack.packb(frame.metadata))
    if isinstance(frame, Reset):
        body = _RESET.pack(frame.stream_id, frame.code, frame.final_size)
        return _frame(FrameType.RESET, body + frame.reason.encode()[:1024])
    if isinstance(frame, ResetAck):
        return _frame(FrameType.RESET_ACK, _RESET_ACK.pack(frame.stream_id, frame.final_size))
    if isinstance(frame, Closed):
        return _frame(FrameType.CLOSED, _U32.pack(frame.stream_id))
    if isinstance(frame, MaxData):
        return _frame(FrameType.MAX_DATA, _U64.pack(frame.maximum))
    if isinstance(frame, Ping):
        return _frame(FrameType.PING, _U32.pack(frame.ident))
    if isinstance(frame, Pong):
        return _frame(FrameType.PONG, _U32.pack(frame.ident))
    if isinstance(frame, Close):
        return _frame(FrameType.CLOSE, _CLOSE.pack(frame.code) + frame.reason.encode()[:1024])
    raise TypeError(f"not a frame: {frame!r}")


def encode_packet(header: PacketHeader, frames: list[Frame]) -> bytes:
    return encode_header(header) + b"".join(encode_frame(f) for f in frames)


def decode_header(packet: bytes) -> PacketHeader:
    if len(packet) < HEADER_SIZE:
        raise FrameError(f"packet of {len(packet)} bytes is shorter than the {HEADER_SIZE}-byte header")
    version, flags, src, dst, ts, echo_ts, echo_delay = _HEADER.unpack_from(packet, 0)
    if version != PROTOCOL_VERSION:
        raise FrameError(f"unsupported protocol version {version} (this side speaks {PROTOCOL_VERSION})")
    if src == 0:
        raise FrameError("source epoch 0 is reserved")
    return PacketHeader(src, dst, ts, echo_ts, echo_delay, flags)


def _unpack_map(body: memoryview, what: str) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"{what}: body is not valid msgpack ({exc})") from None
    if not isinstance(value, dict):
        raise FrameError(f"{what}: body must be a msgpack map, got {type(value).__name__}")
    return value


def _need(body: memoryview, size: int, what: str) -> None:
    if len(body) < size:
        raise FrameError(f"{what} frame body of {len(body)} bytes, need at least {size}")


def _decode_hello(body: memoryview) -> Hello:
    fields = _unpack_map(body, "HELLO")
    try:
        hello = Hello(
            reply=bool(fields.get("reply", False)),
            max_packet=int(fields["max_packet"]),
            stream_window=int(fields["stream_window"]),
            session_window=int(fields["session_window"]),
            role=str(fields.get("role", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"HELLO: missing or invalid field {exc}") from None
    if min(hello.max_packet, hello.stream_window, hello.session_window) <= 0:
        raise FrameError("HELLO: sizes must be positive")
    return hello


def _decode_ack(body: memoryview) -> Ack:
    _need(body, _ACK.size, "ACK")
    stream_id, flags, cumulative, max_stream_data, count = _ACK.unpack_from(body, 0)
    if len(body) != _ACK.size + count * _RANGE.size:
        raise FrameError(f"ACK announces {count} ranges but carries {len(body) - _ACK.size} bytes")
    ranges = tuple(_RANGE.unpack_from(body, _ACK.size + i * _RANGE.size) for i in range(count))
    previous_end = cumulative
    for start, end in ranges:
        if not previous_end < start < end:
            raise FrameError(f"ACK range [{start}, {end}) is empty, unsorted or below the cumulative ack")
        previous_end = end
    return Ack(stream_id, cumulative, max_stream_data, ranges, bool(flags & FIN_FLAG))


def _decode_body(frame_type: int, body: memoryview) -> Frame | UnknownFrame:
    if frame_type == FrameType.DATA:
        _need(body, _DATA.size, "DATA")
        stream_id, offset, flags = _DATA.unpack_from(body, 0)
        return Data(stream_id, offset, bytes(body[_DATA.size :]), bool(flags & FIN_FLAG))
    if frame_type == FrameType.ACK:
        return _decode_ack(body)
    if frame_type == FrameType.HELLO:
        return _decode_hello(body)
    if frame_type == FrameType.OPEN:
        _need(body, 4, "OPEN")
        return Open(_U32.unpack_from(body, 0)[0], _unpack_map(body[4:], "OPEN metadata"))
    if frame_type == FrameType.RESET:
        _need(body, _RESET.size, "RESET")
        stream_id, code, final_size = _RESET.unpack_from(body, 0)
        reason = bytes(body[_RESET.size :]).decode("utf-8", "replace")
        return Reset(stream_id, code, final_size, reason)
    if frame_type == FrameType.RESET_ACK:
        _need(body, _RESET_ACK.size, "RESET_ACK")
        return ResetAck(*_RESET_ACK.unpack_from(body, 0))
    if frame_type in (FrameType.CLOSED, FrameType.PING, FrameType.PONG):
        _need(body, 4, FrameType(frame_type).name)
        value = _U32.unpack_from(body, 0)[0]
        if frame_type == FrameType.CLOSED:
            return Closed(value)
        return Ping(value) if frame_type == FrameType.PING else Pong(value)
    if frame_type == FrameType.MAX_DATA:
        _need(body, 8, "MAX_DATA")
        return MaxData(_U64.unpack_from(body, 0)[0])
    if frame_type == FrameType.CLOSE:
        _need(body, 4, "CLOSE")
        return Close(_CLOSE.unpack_from(body, 0)[0], bytes(body[4:]).decode("utf-8", "replace"))
    return UnknownFrame(frame_type, len(body))


def decode_frames(packet: bytes, offset: int = HEADER_SIZE) -> list[Frame | UnknownFrame]:
    """Decode every frame after the header; a truncated frame spoils the packet."""
    view = memoryview(packet)
    frames: list[Frame | UnknownFrame] = []
    end = len(packet)
    while offset < end:
        if end - offset < FRAME_OVERHEAD:
            raise FrameError(f"truncated frame header at byte {offset}")
        frame_type, length = _FRAME.unpack_from(packet, offset)
        offset += FRAME_OVERHEAD
        if length > end - offset:
            raise FrameError(f"frame type {frame_type:#x} claims {length} bytes, {end - offset} remain")
        frames.append(_decode_body(frame_type, view[offset : offset + length]))
        offset += length
    return frames


def decode_packet(packet: bytes) -> tuple[PacketHeader, list[Frame | UnknownFrame]]:
    return decode_header(packet), decode_frames(packet)
