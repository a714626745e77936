"""One TCP listener per (ClusterIP, port); every accepted connection becomes a ``service`` stream.

A connection is carried whole by one stream to the bridge (``seqstream.mqtt.tcp.pipe``):
half-close both ways, and any abort - the bridge refused (not granted, no
endpoint, refused), the stream was reset, the cloud session died - closes
the local connection with a TCP RST, so programs see "connection reset" and
never hang. Removing a listener (the grant was withdrawn) aborts its open
connections too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import fleetproto as fp
from seqstream import SeqstreamError
from seqstream.errors import ErrorCode
from seqstream.mqtt import Stream
from seqstream.mqtt.tcp import READ_SIZE, abort_socket, pipe

log = logging.getLogger("edge_agent.services")

OpenStream = Callable[[dict[str, Any]], Awaitable[Stream]]
Key = tuple[str, int]
OPEN_TIMEOUT = 10.0


class ServiceListeners:
    def __init__(self, open_stream: OpenStream, counters: Counter[str]) -> None:
        self._open_stream = open_stream
        self.counters = counters
        self._servers: dict[Key, tuple[fp.ServiceOpen, asyncio.Server]] = {}
        self._connections: dict[Key, set[asyncio.Task[None]]] = {}

    @property
    def keys(self) -> set[Key]:
        return set(self._servers)

    async def remove_except(self, wanted: dict[Key, fp.ServiceOpen]) -> None:
        """Stop listeners not in ``wanted`` (or now pointing at another Service) and abort their connections."""
        for key in [k for k, (req, _) in self._servers.items() if wanted.get(k) != req]:
            await self._stop(key)

    async def add_missing(self, wanted: dict[Key, fp.ServiceOpen]) -> list[str]:
        """Start listeners for ``wanted`` keys not served yet; returns the ones that could not bind."""
        failed = []
        for key, request in wanted.items():
            if key in self._servers:
                continue
            host, port = key
            try:
                server = await asyncio.start_server(
                    functools.partial(self._accepted, key, request),
                    host=host,
                    port=port,
                    reuse_address=True,
                    limit=READ_SIZE,
                )
            except OSError as exc:
                self.counters["service_listen_errors"] += 1
                failed.append(f"{host}:{port} ({exc.strerror or exc})")
                continue
            self._servers[key] = (request, server)
        return failed

    async def close(self) -> None:
        for key in list(self._servers):
            await self._stop(key)

    async def _stop(self, key: Key) -> None:
        _, server = self._servers.pop(key)
        server.close()
        tasks = self._connections.pop(key, set())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)

    def _accepted(
        self, key: Key, request: fp.ServiceOpen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.create_task(self._serve(request, reader, writer), name=f"service-conn-{key[0]}:{key[1]}")
        tasks = self._connections.setdefault(key, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _serve(self, request: fp.ServiceOpen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        where = f"{request.namespace}/{request.service}:{request.port}"
        self.counters["service_connections"] += 1
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                stream = await self._open_stream(request.to_metadata())
        except (SeqstreamError, OSError, TimeoutError) as exc:
            self.counters["service_open_errors"] += 1
            log.info("connection to %s reset: no stream to the cloud (%s)", where, exc)
            abort_socket(writer)
            return
        except BaseException:
            abort_socket(writer)
            raise
        result = await pipe(stream, reader, writer, tcp_error_code=ErrorCode.CANCELLED)
        self.counters["service_bytes_out"] += result.to_stream
        self.counters["service_bytes_in"] += result.to_socket
        if result.reset is not None and result.socket_error is None:
            self.counters["service_resets"] += 1
            level = logging.WARNING if result.reset.code == fp.AppError.FORBIDDEN else logging.INFO
            log.log(level, "connection to %s reset: %s", where, result.reset)
