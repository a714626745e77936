"""``logs`` streams: container output as raw bytes, then FIN (``kubectl logs``).

With ``follow`` the stream stays open until the container exits or the cloud
resets it. A follower waiting for output cannot notice a reset by writing, so
a watcher task waits on the stream and cancels the follow when it is reset.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import fleetproto as fp
from seqstream import SeqstreamError
from seqstream.mqtt import Stream

from .context import StreamContext


async def watch_reset(stream: Stream) -> None:
    """Returns once the stream is reset (or fully closed); reads and drops what the cloud sends."""
    with contextlib.suppress(SeqstreamError):
        await stream.readall()
        await stream.wait_closed()


def since_of(req: fp.LogsOpen) -> datetime | None:
    if req.since_time is not None:
        return datetime.fromtimestamp(req.since_time, UTC)
    if req.since_seconds is not None:
        return datetime.now(UTC) - timedelta(seconds=req.since_seconds)
    return None


async def _copy(ctx: StreamContext, stream: Stream, req: fp.LogsOpen) -> None:
    status = await ctx.reconciler.resolve(req.ref, req.container, previous=req.previous)
    left = req.limit_bytes
    logs = ctx.runtime.logs(
        status.id, follow=req.follow, tail=req.tail_lines, since=since_of(req), timestamps=req.timestamps
    )
    async with contextlib.aclosing(logs) as chunks:  # type: ignore[type-var]
        async for chunk in chunks:
            data = chunk.data
            if left is not None:
                data = data[:left]
                left -= len(data)
            stream.write(data)
            await stream.drain()
            if left == 0:
                break


async def serve_logs(ctx: StreamContext, stream: Stream, req: fp.LogsOpen) -> None:
    copier = asyncio.create_task(_copy(ctx, stream, req), name="logs-copy")
    watcher = asyncio.create_task(watch_reset(stream), name="logs-watch")
    try:
        await asyncio.wait({copier, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if copier.done():
            copier.result()  # raises the handler's error (-> RESET)
            stream.write_eof()
    finally:
        for task in (copier, watcher):
            task.cancel()
        await asyncio.gather(copier, watcher, return_exceptions=True)
