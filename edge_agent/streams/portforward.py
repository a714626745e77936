"""``portforward`` streams: one TCP connection to a port in a pod (or on the host).

Bytes are copied both ways on the bare socket (``sock_recv``/``sock_sendall``:
each read hands the kernel's bytes to the stream as they are, where a
StreamReader would copy them twice more); FIN from the cloud half-closes the
TCP connection, EOF from the port sends FIN. A refused
connection is RESET 0x502, so ``kubectl port-forward`` reports it per
connection and keeps listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import fleetproto as fp
from seqstream.mqtt import Stream

from . import netns
from .context import StreamContext, StreamFailure

READ_SIZE = 256 * 1024


async def _target_pid(ctx: StreamContext, req: fp.PortForwardOpen) -> int | None:
    if req.host:
        if not ctx.features.host_port_forward:
            raise StreamFailure(fp.AppError.FORBIDDEN, "host_port_forward is not allowed on this device")
        return None
    assert req.ref is not None
    pod = ctx.reconciler.find_pod(req.ref)
    if pod.host_network:
        return None
    pid = await ctx.reconciler.pod_pid(pod)
    if pid is None:
        raise StreamFailure(fp.AppError.CONFLICT, f"pod {pod.key} has no running container to forward to")
    return pid


async def serve_portforward(ctx: StreamContext, stream: Stream, req: fp.PortForwardOpen) -> None:
    pid = await _target_pid(ctx, req)
    where = "the host" if req.host else f"pod {req.ref.namespace}/{req.ref.pod}" if req.ref else "?"
    try:
        sock = await netns.connect(pid, req.port)
    except OSError as exc:
        raise StreamFailure(
            fp.AppError.BAD_GATEWAY, f"connecting to port {req.port} in {where} failed: {exc.strerror or exc}"
        ) from None
    ctx.counters["port_forwards"] += 1
    loop = asyncio.get_running_loop()
    sock.setblocking(False)

    async def upstream() -> None:  # cloud -> port
        async for chunk in stream:
            await loop.sock_sendall(sock, chunk)
        with contextlib.suppress(OSError):  # the port may have closed meanwhile
            sock.shutdown(socket.SHUT_WR)

    async def downstream() -> None:  # port -> cloud
        while data := await loop.sock_recv(sock, READ_SIZE):
            stream.write(data)
            await stream.drain()
        stream.write_eof()

    up = asyncio.create_task(upstream(), name="pf-up")
    down = asyncio.create_task(downstream(), name="pf-down")
    try:
        pending: set[asyncio.Task[None]] = {up, down}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if isinstance(error, ConnectionError):
                    raise StreamFailure(
                        fp.AppError.BAD_GATEWAY, f"connection to port {req.port} in {where} broke: {error}"
                    )
                if error is not None:
                    raise error
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        sock.close()
