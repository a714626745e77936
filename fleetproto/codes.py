"""Application error codes for stream RESETs, mapped from HTTP statuses.

seqstream reserves codes below 0x100 (PROTOCOL.md "Error codes"); an
application code is ``0x100 + ...``. We use the HTTP status written in hex
digits - 404 becomes 0x404 - so a code reads the same in a packet dump as in
a log, and the bridge turns it back into the kubelet API's HTTP status without
a table. Every code is >= 0x100 as seqstream requires.
"""

from __future__ import annotations

from enum import IntEnum


class AppError(IntEnum):
    BAD_REQUEST = 0x400
    """Malformed metadata or message; bad arguments."""
    FORBIDDEN = 0x403
    """A host feature (hostexec, host port-forward) this device does not allow; a Service not granted."""
    NOT_FOUND = 0x404
    """No such pod, container or previous container."""
    TIMEOUT = 0x408
    CONFLICT = 0x409
    """The container exists but is in a state that forbids the call (not running)."""
    INTERNAL = 0x500
    NOT_IMPLEMENTED = 0x501
    """A stream kind or option this agent does not implement."""
    BAD_GATEWAY = 0x502
    """The port inside the pod (or a Service's endpoint) refused or broke the connection."""
    UNAVAILABLE = 0x503
    """The container runtime cannot be reached right now; a Service has no ready endpoint."""
    GATEWAY_TIMEOUT = 0x504
    """A Service's endpoint did not answer the connection attempt in time."""


def http_status(code: int) -> int:
    """The HTTP status for a RESET code: 0x404 -> 404; anything else -> 500."""
    if 0x100 <= code <= 0x599:
        text = f"{code:x}"
        if text.isdigit() and 100 <= int(text) <= 599:
            return int(text)
    return 500


def from_http_status(status: int) -> int:
    """The RESET code for an HTTP status: 404 -> 0x404."""
    if not 100 <= status <= 599:
        raise ValueError(f"{status} is not an HTTP status")
    return int(str(status), 16)


def describe(code: int) -> str:
    try:
        return AppError(code).name
    except ValueError:
        return f"{code:#x}"
