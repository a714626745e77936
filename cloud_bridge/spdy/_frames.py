"""SPDY/3.1 frame layout: constants, encoders and payload parsers.

Pure byte work, no state: the connection decides what a frame means. Section
numbers refer to the SPDY Protocol Draft 3.1 (chromium.org/spdy).

Framing (2.2): every frame starts with 8 bytes.

* control (2.2.1): ``1 | version:15 | type:16 | flags:8 | length:24``
* data (2.2.2):    ``0 | stream-id:31 | flags:8 | length:24``

Parsers raise :class:`FrameError`, which the connection turns into a session
error (GOAWAY PROTOCOL_ERROR); nothing here knows about streams or sockets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

VERSION = 3
HEADER_SIZE = 8
MAX_LENGTH = 0xFFFFFF
"""The 24-bit length field caps every frame's payload (2.2)."""
MAX_STREAM_ID = 0x7FFFFFFF

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR_SETTINGS = 0x01

_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")
_SYN_STREAM_FIXED = struct.Struct(">IIBB")  # stream-id, assoc-id, pri<<5, slot
_SETTING = struct.Struct(">II")  # flags:8|id:24, value


class FrameType(IntEnum):
    """Control frame types (2.6). Any other type is ignored (2.2.1)."""

    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    """RST_STREAM status codes (2.6.3)."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10  # SPDY/3 only; kept so a peer's code still has a name
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    """GOAWAY status codes (2.6.6)."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(IntEnum):
    """SETTINGS ids (2.6.4); we report them and otherwise ignore them."""

    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame (a session error)."""


@dataclass(slots=True, frozen=True)
class FrameHeader:
    """The fixed 8 bytes; ``type`` is 0 and ``stream_id`` set for data frames."""

    control: bool
    version: int
    type: int
    stream_id: int
    flags: int
    length: int


def parse_header(raw: bytes | bytearray | memoryview) -> FrameHeader:
    """Decode the 8-byte header; ``raw`` must hold at least 8 bytes."""
    first, second = _U32x2.unpack_from(raw)
    flags, length = second >> 24, second & MAX_LENGTH
    if first & 0x80000000:
        version = (first >> 16) & 0x7FFF
        return FrameHeader(True, version, first & 0xFFFF, 0, flags, length)
    return FrameHeader(False, VERSION, 0, first & MAX_STREAM_ID, flags, length)


# -- encoders -----------------------------------------------------------------


def _control(ftype: FrameType, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError("control frame payload exceeds 24-bit length")
    head = _U32x2.pack(0x80000000 | VERSION << 16 | ftype, flags << 24 | len(payload))
    return head + payload


def data_header(stream_id: int, length: int, *, fin: bool = False) -> bytes:
    """The 8 bytes before a DATA frame's payload (2.2.2); the caller keeps ``length`` within MAX_LENGTH."""
    return _U32x2.pack(stream_id & MAX_STREAM_ID, (FLAG_FIN if fin else 0) << 24 | length)


def encode_data(stream_id: int, data: bytes | memoryview, *, fin: bool = False) -> bytes:
    """One DATA frame (2.2.2); the caller keeps ``data`` within MAX_LENGTH."""
    return data_header(stream_id, len(data), fin=fin) + bytes(data)


def encode_syn_stream(
    stream_id: int,
    block: bytes,
    *,
    associated_id: int = 0,
    priority: int = 0,
    flags: int = 0,
) -> bytes:
    """SYN_STREAM (2.6.1): ids, 3-bit priority, unused slot, header block."""
    fixed = _SYN_STREAM_FIXED.pack(stream_id, associated_id, (priority & 7) << 5, 0)
    return _control(FrameType.SYN_STREAM, flags, fixed + block)


def encode_syn_reply(stream_id: int, block: bytes, *, flags: int = 0) -> bytes:
    """SYN_REPLY (2.6.2); unlike SPDY/2 there are no unused bytes before the block."""
    return _control(FrameType.SYN_REPLY, flags, _U32.pack(stream_id) + block)


def encode_headers(stream_id: int, block: bytes, *, flags: int = 0) -> bytes:
    """HEADERS (2.6.7): extra headers for an open stream."""
    return _control(FrameType.HEADERS, flags, _U32.pack(stream_id) + block)


def encode_rst_stream(stream_id: int, status: int) -> bytes:
    return _control(FrameType.RST_STREAM, 0, _U32x2.pack(stream_id, status))


def encode_settings(settings: list[tuple[int, int, int]], *, clear: bool = False) -> bytes:
    """SETTINGS (2.6.4) from (id, value, flags) triples."""
    body = [_U32.pack(len(settings))]
    body += [_SETTING.pack((fl & 0xFF) << 24 | (sid & 0xFFFFFF), val) for sid, val, fl in settings]
    return _control(FrameType.SETTINGS, FLAG_SETTINGS_CLEAR_SETTINGS if clear else 0, b"".join(body))


def encode_ping(ping_id: int) -> bytes:
    return _control(FrameType.PING, 0, _U32.pack(ping_id))


def encode_goaway(last_good_stream_id: int, status: int) -> bytes:
    return _control(FrameType.GOAWAY, 0, _U32x2.pack(last_good_stream_id, status))


def encode_window_update(stream_id: int, delta: int) -> bytes:
    return _control(FrameType.WINDOW_UPDATE, 0, _U32x2.pack(stream_id, delta))


# -- payload parsers ----------------------------------------------------------
# Each takes the control frame's payload (exactly ``length`` bytes).


@dataclass(slots=True, frozen=True)
class SynStream:
    stream_id: int
    associated_id: int
    priority: int
    block: bytes


def parse_syn_stream(payload: bytes) -> SynStream:
    if len(payload) < _SYN_STREAM_FIXED.size:
        raise FrameError(f"SYN_STREAM payload of {len(payload)} bytes is too short")
    sid, assoc, pri, _slot = _SYN_STREAM_FIXED.unpack_from(payload)
    sid &= MAX_STREAM_ID
    if sid == 0:
        raise FrameError("SYN_STREAM with stream id 0")
    return SynStream(sid, assoc & MAX_STREAM_ID, pri >> 5, payload[_SYN_STREAM_FIXED.size :])


def parse_stream_block(payload: bytes, name: str) -> tuple[int, bytes]:
    """SYN_REPLY and HEADERS: stream id then header block."""
    if len(payload) < 4:
        raise FrameError(f"{name} payload of {len(payload)} bytes is too short")
    sid = _U32.unpack_from(payload)[0] & MAX_STREAM_ID
    if sid == 0:
        raise FrameError(f"{name} with stream id 0")
    return sid, payload[4:]


def _two_words(payload: bytes, name: str) -> tuple[int, int]:
    if len(payload) != 8:
        raise FrameError(f"{name} payload must be 8 bytes, got {len(payload)}")
    first, second = _U32x2.unpack(payload)
    return first & MAX_STREAM_ID, second


def parse_rst_stream(payload: bytes) -> tuple[int, int]:
    """(stream id, status); status 0 is undefined (2.6.3) and so invalid."""
    sid, status = _two_words(payload, "RST_STREAM")
    if sid == 0:
        raise FrameError("RST_STREAM with stream id 0")
    if status == 0:
        raise FrameError("RST_STREAM with status 0")
    return sid, status


def parse_settings(payload: bytes) -> list[tuple[int, int, int]]:
    """(id, value, flags) triples; the count must match the length exactly."""
    if len(payload) < 4:
        raise FrameError("SETTINGS payload too short")
    count = _U32.unpack_from(payload)[0]
    if len(payload) != 4 + 8 * count:
        raise FrameError(f"SETTINGS announces {count} entries in {len(payload)} bytes")
    out = []
    for off in range(4, len(payload), 8):
        flag_id, value = _SETTING.unpack_from(payload, off)
        out.append((flag_id & 0xFFFFFF, value, flag_id >> 24))
    return out


def parse_ping(payload: bytes) -> int:
    if len(payload) != 4:
        raise FrameError(f"PING payload must be 4 bytes, got {len(payload)}")
    return int(_U32.unpack(payload)[0])


def parse_goaway(payload: bytes) -> tuple[int, int]:
    """(last good stream id, status); SPDY/3 added the status word (2.6.6)."""
    return _two_words(payload, "GOAWAY")


def parse_window_update(payload: bytes) -> tuple[int, int]:
    sid, delta = _two_words(payload, "WINDOW_UPDATE")
    return sid, delta & 0x7FFFFFFF
