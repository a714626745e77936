"""Exec and attach, whatever the transport: run the provider, then report.

Phases (kubelet ``ServeExec``/``ServeAttach``):

1. The provider runs with a ``LazyStreamIO``. If it finishes or fails before
   asking for its streams, a failure is answered as a plain HTTP error
   (``reject``) and nothing is upgraded. A provider that neither asks nor
   finishes within ``upgrade_delay`` is upgraded anyway (clients wait for
   the 101; a command may run silently for long).
2. Once it asked, the transport upgrades and waits for the client's streams;
   if that fails the provider gets the error from ``io`` (and is cancelled
   if it has not ended a moment later) and the connection is dropped.
3. If the client goes away, the provider is cancelled. Otherwise its result
   becomes a Status on the error stream: exit code 0 -> Success, n ->
   NonZeroExitCode with an ExitCode cause, typed errors -> their reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from . import status as st
from ._streamio import Channels, LazyStreamIO
from ._tasks import cancel_and_wait, outcome
from .errors import ProviderError
from .routes import StreamOptions

log = logging.getLogger(__name__)

OPEN_FAILURE_GRACE = 1.0


class Transport(Protocol):
    async def open(self) -> Channels:
        """Upgrade and establish the streams the options asked for."""
        ...

    async def wait_closed(self) -> None:
        """Returns when the client side is gone (only called after ``open``)."""
        ...

    async def finish(self, status: dict[str, Any]) -> None:
        """Write ``status`` on the error stream and close everything."""
        ...

    async def abort(self) -> None:
        """Close everything without a status (idempotent)."""
        ...


Reject = Callable[[int, str, str], Awaitable[None]]


async def run_remote_command(
    call: Callable[[LazyStreamIO], Coroutine[Any, Any, int | None]],
    options: StreamOptions,
    transport: Transport,
    reject: Reject,
    *,
    upgrade_delay: float,
    name: str,
) -> None:
    io = LazyStreamIO(options, transport.open)
    task = asyncio.create_task(call(io), name=f"provider {name}")
    requested = asyncio.create_task(io.open_requested.wait())
    closed: asyncio.Task[None] | None = None
    try:
        await asyncio.wait({task, requested}, timeout=upgrade_delay, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            io.start_opening()
        elif not io.opening_started:
            exc = outcome(task)
            if isinstance(exc, ProviderError):
                await reject(exc.status, exc.message, exc.reason)
                return
            if exc is not None:
                if not isinstance(exc, (ConnectionError, asyncio.CancelledError)):
                    log.error("%s: provider failed before streaming", name, exc_info=exc)
                    await reject(500, f"error executing in container: {exc}", "InternalError")
                return
        try:
            await io.channels()
        except Exception as exc:
            log.info("%s: could not establish the streams: %s", name, exc)
            # The provider learns it from its next use of io: let it wind down
            # on its own for a moment before it is cancelled.
            await asyncio.wait({task}, timeout=OPEN_FAILURE_GRACE)
            return
        closed = asyncio.create_task(transport.wait_closed())
        await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            log.info("%s: client went away; cancelling the provider", name)
            return
        failure = outcome(task)
        try:
            if failure is None:
                result = task.result()
                await transport.finish(st.exit_code(result) if isinstance(result, int) else st.success())
            elif not isinstance(failure, (ConnectionError, asyncio.CancelledError)):
                if not isinstance(failure, ProviderError):
                    log.error("%s: provider failed", name, exc_info=failure)
                await transport.finish(st.from_error(failure))
        except ConnectionError as exc:
            log.info("%s: could not deliver the status: %s", name, exc)
    finally:
        await cancel_and_wait([task, requested, closed])
        await io.aclose()
        await transport.abort()
