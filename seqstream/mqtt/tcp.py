"""Pipe one stream and one TCP connection into each other, both ways.

What every "TCP connection carried over a stream" needs (the service proxy on
the device and in the bridge), in one place so both ends behave alike:

* bytes are copied with backpressure both ways: a socket read waits for the
  stream's ``drain`` and a stream read waits for the socket's ``drain``, so a
  slow side slows the other down instead of growing a buffer;
* half-close maps both ways: EOF from the socket sends FIN on the stream, FIN
  from the stream shuts down the socket's write side; the pipe ends when both
  directions have ended;
* an abort maps both ways: a RESET of the stream (from the peer, or because
  its session died) closes the socket with a TCP RST (``SO_LINGER`` 0), so
  the program on the other end sees "connection reset" at once instead of
  hanging; a reset or broken socket resets the stream with ``tcp_error_code``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass

from ..errors import ErrorCode, StreamResetError
from .stream import Stream

READ_SIZE = 256 * 1024
"""Socket read size; the asyncio reader should have ``limit`` at least this large."""
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass
class PipeResult:
    """How a pipe ended: byte counts, and the reset or socket error that ended it (if any)."""

    to_stream: int = 0
    to_socket: int = 0
    reset: StreamResetError | None = None
    """The stream was reset (by the peer, or here because the socket broke)."""
    socket_error: OSError | None = None

    @property
    def clean(self) -> bool:
        return self.reset is None and self.socket_error is None


def abort_socket(writer: asyncio.StreamWriter) -> None:
    """Close the connection with RST, not FIN: the peer must not mistake an abort for an end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


async def pipe(
    stream: Stream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    tcp_error_code: int,
    read_size: int = READ_SIZE,
) -> PipeResult:
    """Copy both ways until both directions ended or one side aborted; always closes the socket."""
    result = PipeResult()

    async def socket_to_stream() -> None:
        while data := await reader.read(read_size):
            stream.write(data)
            result.to_stream += len(data)
            await stream.drain()
        stream.write_eof()

    async def stream_to_socket() -> None:
        async for chunk in stream:
            writer.write(chunk)
            result.to_socket += len(chunk)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()

    tasks = {
        asyncio.create_task(socket_to_stream(), name="pipe-to-stream"),
        asyncio.create_task(stream_to_socket(), name="pipe-to-socket"),
    }
    aborted = False
    try:
        pending = tasks
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is None:
                    continue
                if isinstance(error, StreamResetError):
                    result.reset = error
                elif isinstance(error, OSError):
                    result.socket_error = error
                    result.reset = StreamResetError(tcp_error_code, f"connection broke: {error}", remote=False)
                    stream.reset(tcp_error_code, f"connection broke: {error.strerror or error}")
                else:
                    raise error
                aborted = True
                pending = set()
    except BaseException:
        aborted = True
        stream.reset(ErrorCode.CANCELLED, "pipe cancelled")
        raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if aborted:
            abort_socket(writer)
        else:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)
    return result
