"""The seam between the kubelet API front end and whatever runs the pods.

One ``Provider`` serves every virtual node behind the bridge: namespace and
pod name in each call say which device is meant; node-scoped calls
(``pods``, ``stats_summary``, ``metrics_resource``) get the node's name. Everything here is plain
asyncio; the server implements ``StreamIO`` and ``ByteConn`` on top of SPDY
or WebSocket, a provider only reads and writes bytes.

Contract (what the server guarantees and expects):

* ``exec`` returns the command's exit code (0: success); ``attach`` returns
  when the session ends. Raise ``NotFound`` / ``BadRequest`` / ``Unavailable``
  (from ``.errors``) for a clear answer; any other exception is reported as an
  internal error. ``BrokenPipeError`` from a write means the client is gone.
* The connection is upgraded when the provider first uses ``io`` or awaits
  ``io.ready()`` (at the latest after ``ServerConfig.upgrade_delay``): an
  error raised before that is a plain HTTP error, like a kubelet's checks
  before it upgrades. So: check the pod/device, start the work, then
  ``await io.ready()``.
* If the client disconnects, the provider's task is cancelled: clean up in
  ``finally`` (kill the process, tell the device).
* Reads return ``b""`` at end of input and never more than ``max_bytes``.
  Input buffering is bounded: a provider that stops reading stdin eventually
  stops the whole connection (SPDY has no per-stream flow control here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import BadRequest, NotFound, ProviderError, Unavailable

__all__ = [
    "BadRequest",
    "ByteConn",
    "InputStream",
    "LogOptions",
    "NotFound",
    "OutputStream",
    "Provider",
    "ProviderError",
    "StreamIO",
    "TerminalSize",
    "Unavailable",
]


@dataclass(frozen=True, slots=True)
class TerminalSize:
    """A TTY size as kubectl sends it (``{"Width": .., "Height": ..}``)."""

    width: int
    height: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LogOptions:
    """``/containerLogs`` query parameters, validated. ``limit_bytes`` is
    enforced by the server too (the provider may use it to send less)."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: dt.datetime | None = None
    limit_bytes: int | None = None
    stream: str | None = None
    """``All``, ``Stdout`` or ``Stderr`` (PodLogOptions.stream), if given."""


class InputStream(Protocol):
    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` once the client closed its input."""
        ...


class OutputStream(Protocol):
    async def write(self, data: bytes) -> None:
        """Send ``data`` (waits for transport buffer space, never for SPDY windows)."""
        ...


class StreamIO(Protocol):
    """What ``exec`` and ``attach`` get: the streams the client asked for."""

    tty: bool
    stdin: InputStream | None
    stdout: OutputStream | None
    stderr: OutputStream | None
    """None with a TTY (everything goes to stdout) or if not requested."""

    async def ready(self) -> None:
        """Upgrade the connection now (otherwise the first use of a stream does)."""
        ...

    def resizes(self) -> AsyncIterator[TerminalSize]:
        """Terminal sizes, the initial one first; ends when the client stops
        sending them. Only a few unread sizes are kept (the latest win)."""
        ...


class ByteConn(InputStream, OutputStream, Protocol):
    """One forwarded TCP connection (port-forward): read the client's bytes,
    write the target's bytes back, ``close_write()`` when the target is done."""

    async def close_write(self) -> None: ...


@runtime_checkable
class Provider(Protocol):
    async def exec(self, namespace: str, pod: str, container: str, command: Sequence[str], io: StreamIO) -> int: ...

    async def attach(self, namespace: str, pod: str, container: str, io: StreamIO) -> None: ...

    async def port_forward(self, namespace: str, pod: str, port: int, conn: ByteConn) -> None: ...

    async def logs(self, namespace: str, pod: str, container: str, opts: LogOptions) -> AsyncIterator[bytes]:
        """Check the pod/container (raise here), then return the byte chunks;
        with ``follow`` the iterator ends when the container's log does."""
        ...

    async def pods(self, node: str | None = None) -> list[dict[str, Any]]:
        """v1 Pod objects for ``/pods``: those bound to ``node``, or every node's (None)."""
        ...

    async def stats_summary(self, node: str) -> dict[str, Any]:
        """The ``/stats/summary`` document (kubelet stats/v1alpha1 Summary) of ``node``.
        Raise ``NotFound`` for a node this provider does not serve, ``Unavailable`` if offline."""
        ...

    async def metrics_resource(self, node: str) -> str:
        """Prometheus text for ``/metrics/resource`` (metrics-server's source) of ``node``."""
        ...
