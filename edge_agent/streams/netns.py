"""Connect a TCP socket inside another process's network namespace.

Port-forward must reach ``localhost:<port>`` *of the pod*, whatever its
network (bridge, none, another container's): the socket is created inside
the pod's network namespace with ``setns(2)`` and then used from our own -
a socket stays in the namespace it was created in. No ``nsenter`` or
``socat`` binary and no container IP are needed (the kubelet's docker shim
used nsenter + socat for the same thing).

``setns`` changes the namespace of the calling *thread*, so it runs in a
thread of its own that exists only for this call: if switching back ever
failed, the thread dies with the wrong namespace instead of going back to a
pool. Needs CAP_SYS_ADMIN (the agent runs as root to drive the engine anyway).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import socket
import threading

from ..nodeinfo import shares_our_netns

CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT = 10.0

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _connect(port: int) -> socket.socket:
    """localhost:port, IPv4 first, then IPv6 (as the kubelet does)."""
    errors: list[OSError] = []
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect((address, port))
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        sock.setblocking(False)
        return sock
    raise errors[0]


def _connect_in(pid: int, port: int) -> socket.socket:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            return _connect(port)
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


async def connect(pid: int | None, port: int) -> socket.socket:
    """A connected non-blocking socket to localhost:``port`` in ``pid``'s namespace (None: ours)."""
    if pid is None or shares_our_netns(pid):
        return await asyncio.to_thread(_connect, port)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(result: socket.socket | None, error: BaseException | None) -> None:
        if future.done():  # the caller gave up: do not leak the socket
            if result is not None:
                result.close()
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = _connect_in(pid, port)
        except BaseException as exc:
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, result, None)

    threading.Thread(target=run, name=f"netns-connect-{pid}", daemon=True).start()
    return await future
