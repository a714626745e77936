"""The one interface the agent drives: ``Runtime``, and the I/O sessions it hands out.

A runtime runs single containers; pods, restarts and back-off belong to the
layer above. All methods are coroutines and never block the event loop.
Container references are ids; runtimes also accept the container name.

Sessions (exec and attach) carry a process's stdio:

* ``read()`` returns the next ``OutputChunk`` or ``None`` once all output
  has ended; one reader at a time. With a TTY all output is ``STDOUT``.
* ``write()`` feeds stdin; ``close_stdin()`` half-closes it (the process sees
  EOF; on a TTY the runtime sends the EOF character instead, as a terminal would).
* ``resize()`` sets the TTY size (ignored without a TTY).
* ``wait()`` returns the exit code (exec: the command's; attach: the
  container's). Read the output meanwhile, or a chatty process may block on a
  full pipe, exactly as with ``subprocess``. Bound it with ``asyncio.timeout``.
* ``close()`` (or leaving ``async with``) releases the session.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

from .types import (
    ContainerSpec,
    ContainerStats,
    ContainerStatus,
    OutputChunk,
    PullPolicy,
    PullProgress,
    RuntimeVersion,
    Stream,
)

ProgressCallback = Callable[[PullProgress], None]
"""Called on the event loop for each pull progress report; must not block."""


class IOSession(abc.ABC):
    """Bidirectional stdio of a process inside a container."""

    tty: bool

    @abc.abstractmethod
    async def read(self) -> OutputChunk | None:
        """The next output chunk, or ``None`` at the end of all output."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send bytes to stdin."""

    @abc.abstractmethod
    async def close_stdin(self) -> None:
        """Signal end of input; idempotent."""

    @abc.abstractmethod
    async def resize(self, *, width: int, height: int) -> None:
        """Set the terminal size in columns and rows (no-op without a TTY)."""

    @abc.abstractmethod
    async def wait(self) -> int:
        """Wait for the process to end; its exit code (128+N when killed by signal N)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the session; idempotent."""

    async def read_all(self) -> tuple[bytes, bytes]:
        """Read until the end of output; (stdout, stderr)."""
        out: dict[Stream, list[bytes]] = {Stream.STDOUT: [], Stream.STDERR: []}
        while (chunk := await self.read()) is not None:
            out.setdefault(chunk.stream, []).append(chunk.data)
        return b"".join(out[Stream.STDOUT]), b"".join(out[Stream.STDERR])

    def __aiter__(self) -> AsyncIterator[OutputChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[OutputChunk]:
        while (chunk := await self.read()) is not None:
            yield chunk

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ExecSession(IOSession):
    """A command run inside a running container; ``wait()`` is the command's exit code."""


class AttachSession(IOSession):
    """The container's main process stdio; ``wait()`` is the container's exit code."""


class Runtime(abc.ABC):
    """A container engine seen through the operations the kubelet side needs."""

    @abc.abstractmethod
    async def version(self) -> RuntimeVersion:
        """Engine name and version; also the cheapest liveness check."""

    @abc.abstractmethod
    async def ensure_image(
        self,
        image: str,
        progress_cb: ProgressCallback | None = None,
        *,
        policy: PullPolicy = PullPolicy.IF_NOT_PRESENT,
    ) -> None:
        """Make ``image`` present (pulling per ``policy``), or raise ``ImageNotFound``."""

    @abc.abstractmethod
    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container with its files in place; its id."""

    @abc.abstractmethod
    async def start(self, container_id: str) -> None:
        """Start a created (or exited) container; no-op if running."""

    @abc.abstractmethod
    async def stop(self, container_id: str, grace_seconds: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_seconds``; returns once it has exited."""

    @abc.abstractmethod
    async def remove(self, container_id: str, *, force: bool = True) -> None:
        """Delete the container; ``force`` kills it first if it runs."""

    @abc.abstractmethod
    async def inspect(self, container_id: str) -> ContainerStatus:
        """Current status."""

    @abc.abstractmethod
    async def list(self, labels: Mapping[str, str] | None = None) -> builtins.list[ContainerStatus]:
        """All containers (running or not) carrying every one of ``labels``."""

    @abc.abstractmethod
    def logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
        timestamps: bool = False,
    ) -> AsyncIterator[OutputChunk]:
        """The container's output: the last ``tail`` lines, from ``since`` on.

        With ``timestamps`` every line starts with its RFC 3339 time (nanoseconds,
        UTC) and a space, as the kubelet serves it. With ``follow`` the iterator
        keeps going until the container exits. An async generator: close it
        (``contextlib.aclosing``) when stopping early.
        """

    @abc.abstractmethod
    async def exec(
        self, container_id: str, cmd: Sequence[str], *, tty: bool = False, stdin: bool = False
    ) -> ExecSession:
        """Run ``cmd`` in the running container; the session is already started."""

    @abc.abstractmethod
    async def attach(self, container_id: str, *, stdin: bool = True) -> AttachSession:
        """Connect to the running container's main process (output from now on)."""

    @abc.abstractmethod
    async def stats(self, container_id: str) -> ContainerStats:
        """One sample of resource usage."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the runtime's own resources (connections, threads)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
