"""Errors of the fleet protocol: what a decoder or a validator says about bad input.

Two families, so callers know what to do next:

* ``FramingError`` - the byte stream itself is broken (a length beyond the
  limit, a truncated frame at end of stream). Nothing after it can be trusted:
  reset the stream.
* ``MessageError`` - one message is bad (not msgpack, not a map, unknown
  ``type``, a field of the wrong type). The framing is intact, so the message
  is dropped, counted, answered with an ``Error`` and the stream goes on.

``SchemaError`` names the field path (``containers[0].image``) so the peer's
log says exactly what was wrong.
"""

from __future__ import annotations


class FleetProtoError(Exception):
    """Base class of every error this package raises."""


class FramingError(FleetProtoError):
    """The byte stream cannot be parsed any further; the stream must be reset."""


class MessageTooLarge(FramingError):
    """A length prefix announced more than the configured maximum."""

    def __init__(self, size: int, limit: int, what: str = "message") -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what} of {size} bytes exceeds the limit of {limit} bytes")


class MessageError(FleetProtoError, ValueError):
    """One message is unusable; the stream stays in sync and can go on."""


class SchemaError(MessageError):
    """A message or stream metadata failed validation at ``path``."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class UnknownMessageType(SchemaError):
    """A well-formed message whose ``type`` this version does not know."""

    def __init__(self, type_: object) -> None:
        self.type = type_
        super().__init__("type", f"unknown message type {type_!r}")
