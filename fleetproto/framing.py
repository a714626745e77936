"""Message framing for byte streams: ``length:u32 (big-endian) + msgpack map``.

Used on ``control``, ``stats`` and any stream that carries messages rather
than raw bytes. Each message is a msgpack map with a string ``type``.

Sans-io: ``MessageDecoder.feed(bytes)`` only buffers; ``next_message()``
returns one decoded map or ``None`` when more bytes are needed. Two kinds of
failure (``errors.py``):

* ``FramingError`` (``MessageTooLarge``, truncated at EOF): the decoder is
  broken for good and raises the same error on every later call; reset the
  stream.
* ``MessageError``: the body of one message was not a msgpack map with a
  ``type``. That message is consumed, the decoder stays in sync; the next
  call continues with the following message.

The length limit applies before any byte of the body is buffered beyond it,
so a peer cannot make us hold more than ``max_size`` plus one read.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import msgpack

from .errors import FramingError, MessageError, MessageTooLarge

LENGTH = struct.Struct(">I")
DEFAULT_MAX_MESSAGE = 8 * 1024 * 1024
"""A Sync of a few dozen pods with their ConfigMap/Secret files (1 MiB each at most) fits."""


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """msgpack to Python, turning every decoder failure into ``MessageError``.

    Strings must be UTF-8; map keys must be strings or bytes; extension types
    stay ``ExtType``/``Timestamp`` values that no schema accepts.
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        # ExtraData, FormatError, StackError and UnicodeDecodeError are ValueErrors.
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise MessageError(f"not a msgpack value ({detail})") from None


def encode_message(message: Mapping[str, Any], *, max_size: int = DEFAULT_MAX_MESSAGE) -> bytes:
    """One framed message; the map must have a string ``type``."""
    if not isinstance(message.get("type"), str) or not message["type"]:
        raise ValueError(f"a message needs a string 'type', got {message.get('type')!r}")
    try:
        body = pack(dict(message))
    except (TypeError, OverflowError, ValueError) as exc:
        raise ValueError(f"{message['type']} message cannot be encoded: {exc}") from None
    if len(body) > max_size:
        raise MessageTooLarge(len(body), max_size)
    return LENGTH.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """The map inside one frame; ``MessageError`` unless it is a map with a string type."""
    value = unpack(body)
    if not isinstance(value, dict):
        raise MessageError(f"message is a {type(value).__name__}, not a map")
    kind = value.get("type")
    if not isinstance(kind, str) or not kind:
        raise MessageError(f"message has no string 'type' (got {kind!r})")
    return value


class MessageDecoder:
    """Turns the bytes of a stream into messages (maps with a ``type``)."""

    def __init__(self, *, max_size: int = DEFAULT_MAX_MESSAGE) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self.max_size = max_size
        self._buffer = bytearray()
        self._error: FramingError | None = None
        self.messages = 0
        self.bad_messages = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        if self._error is None:
            self._buffer += data

    def next_message(self) -> dict[str, Any] | None:
        if self._error is not None:
            raise self._error
        if len(self._buffer) < LENGTH.size:
            return None
        (size,) = LENGTH.unpack_from(self._buffer)
        if size > self.max_size:
            self._error = MessageTooLarge(size, self.max_size)
            self._buffer.clear()
            raise self._error
        end = LENGTH.size + size
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[LENGTH.size : end])
        del self._buffer[:end]
        try:
            message = decode_body(body)
        except MessageError:
            self.bad_messages += 1
            raise
        self.messages += 1
        return message

    def eof(self) -> None:
        """The stream ended: fine between messages, a ``FramingError`` inside one."""
        if self._error is not None:
            raise self._error
        if self._buffer:
            self._error = FramingError(f"stream ended inside a message ({len(self._buffer)} bytes left over)")
            raise self._error
