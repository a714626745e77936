"""Runs a ``KubeletServer`` + ``LocalProvider`` on an event loop in a thread,
so that tests can drive blocking tools (kubectl, ptys, sockets) meanwhile.

``call(fn, *args)`` runs ``fn`` on the server's loop (awaited if it returns
an awaitable) and returns its result, bounded by a timeout. ``stop()``
closes the server and records tasks that were still alive afterwards in
``leftover_tasks`` (there should be none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from pathlib import Path

from cloud_bridge.kubelet import KubeletServer, ServerConfig
from tests.bridge.local_provider import LocalProvider
from tests.support.loopthread import LoopThread

log = logging.getLogger(__name__)


class ServerThread(LoopThread):
    name = "kubelet-server"

    def __init__(self, config: ServerConfig, workdir: Path, *, node_ports: dict[int, str] | None = None) -> None:
        self.config = config
        self.node_ports = node_ports if node_ports is not None else {}
        """Per-node port -> node name (``config.node_ports``); may be changed while running."""
        self.node_hosts: dict[str, str] = {}
        """Host header name -> node name (``KubeletServer.node_for_host``); may be changed while running."""
        self.workdir = workdir
        self.port = 0
        self.echo_port = 0
        self._provider: LocalProvider | None = None
        self._server: KubeletServer | None = None
        self._echo: asyncio.Server | None = None
        super().__init__()

    @property
    def provider(self) -> LocalProvider:
        assert self._provider is not None, "not started"
        return self._provider

    @property
    def server(self) -> KubeletServer:
        assert self._server is not None, "not started"
        return self._server

    async def setup(self) -> None:
        self._provider = LocalProvider(self.workdir)
        self._echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        self.echo_port = self._echo.sockets[0].getsockname()[1]
        self._server = KubeletServer(
            self._provider, config=self.config, node_for_port=self.node_ports.get, node_for_host=self.node_hosts.get
        )
        await self._server.start()
        self.port = self._server.port

    async def teardown(self) -> None:
        if self._server is not None:
            await self._server.close()
        if self._echo is not None:
            self._echo.close()
            await self._echo.wait_closed()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except ConnectionError:
        pass
    finally:
        writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(hosts: tuple[str, ...] | list[str], count: int) -> tuple[int, int]:
    """``count`` consecutive ports free on every host now (bound and released, as ``free_port`` does)."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20000, 60000)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    for host in hosts:
                        stack.enter_context(socket.socket()).bind((host, port))
            except OSError:
                continue
            return first, first + count - 1
    raise RuntimeError(f"no {count} consecutive free ports")
