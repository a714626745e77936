"""Carry a process's stdio over an exec/attach/hostexec stream (channel framing).

Two directions, two tasks:

* inbound (cloud -> process): stdin frames are written, an empty stdin frame
  or the stream's FIN closes stdin, resize frames resize the TTY;
* outbound (process -> cloud): output as stdout/stderr frames, then one
  status frame with the exit code, then FIN.

If the cloud resets the stream, the session is closed (which ends an exec
that still runs on the process runtime; Docker cannot kill an exec, it
just loses its reader). Broken framing from the cloud resets with 0x400.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

import fleetproto as fp
from edge_agent.runtime import IOSession, RuntimeErrorBase
from edge_agent.runtime import Stream as Output
from seqstream.mqtt import Stream

from .context import CHUNK

log = logging.getLogger("edge_agent.streams")

EXIT_WAIT = 30.0
"""After the output ended, how long to wait for the exit code before reporting an error."""


async def _inbound(stream: Stream, session: IOSession, *, stdin: bool, counters: Counter[str]) -> None:
    decoder = fp.ChannelDecoder()
    stdin_open = stdin
    async for chunk in stream:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            if frame.channel is fp.Channel.STDIN:
                if not stdin_open:
                    continue
                try:
                    if frame.payload:
                        await session.write(frame.payload)
                    else:
                        stdin_open = False
                        await session.close_stdin()
                except RuntimeErrorBase as exc:  # the process closed its stdin or ended
                    log.debug("stdin write failed: %s", exc)
                    stdin_open = False
            elif frame.channel is fp.Channel.RESIZE:
                try:
                    size = fp.TerminalSize.decode(frame.payload)
                except fp.MessageError as exc:
                    counters["stream_bad_frames"] += 1
                    log.debug("bad resize frame: %s", exc)
                    continue
                if size.width and size.height:
                    with contextlib.suppress(RuntimeErrorBase):
                        await session.resize(width=size.width, height=size.height)
            else:
                counters["stream_bad_frames"] += 1
    decoder.eof()
    if stdin_open:
        with contextlib.suppress(RuntimeErrorBase):
            await session.close_stdin()


async def _outbound(stream: Stream, session: IOSession, *, stdout: bool, stderr: bool) -> None:
    while (chunk := await session.read()) is not None:
        if chunk.stream is Output.STDERR:
            if not stderr:
                continue
            channel = fp.Channel.STDERR
        else:
            if not stdout:
                continue
            channel = fp.Channel.STDOUT
        stream.write(fp.encode_chunks(channel, chunk.data, max_payload=CHUNK))
        await stream.drain()
    try:
        code = await asyncio.wait_for(session.wait(), EXIT_WAIT)
    except TimeoutError:
        stream.write(fp.error_frame("Timeout", f"no exit code {EXIT_WAIT:.0f}s after the output ended"))
    except RuntimeErrorBase as exc:
        stream.write(fp.error_frame("Internal", str(exc)))
    else:
        stream.write(fp.exit_frame(code))
    stream.write_eof()


async def pump(
    stream: Stream,
    session: IOSession,
    *,
    stdin: bool,
    stdout: bool = True,
    stderr: bool = True,
    counters: Counter[str] | None = None,
) -> None:
    """Run both directions until the status went out (or one side failed); always closes the session."""
    counters = Counter() if counters is None else counters
    inbound = asyncio.create_task(_inbound(stream, session, stdin=stdin, counters=counters), name="stdio-in")
    outbound = asyncio.create_task(_outbound(stream, session, stdout=stdout, stderr=stderr), name="stdio-out")
    try:
        pending: set[asyncio.Task[None]] = {inbound, outbound}
        while outbound in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if inbound in done and inbound.exception() is not None:
                raise inbound.exception()  # type: ignore[misc]
        outbound.result()
    finally:
        for task in (inbound, outbound):
            task.cancel()
        await asyncio.gather(inbound, outbound, return_exceptions=True)
        await session.close()
