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
import inspect
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from cloud_bridge.kubelet import KubeletServer, ServerConfig
from tests.bridge.local_provider import LocalProvider

log = logging.getLogger(__name__)


class ServerThread:
    def __init__(self, config: ServerConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.port = 0
        self._provider: LocalProvider | None = None
        self._server: KubeletServer | None = None
        self.leftover_tasks: list[str] = []
        self.echo_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kubelet-server", daemon=True)

    @property
    def provider(self) -> LocalProvider:
        assert self._provider is not None, "not started"
        return self._provider

    @property
    def server(self) -> KubeletServer:
        assert self._server is not None, "not started"
        return self._server

    def start(self, timeout: float = 15) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the kubelet server did not start")
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._amain())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._provider = LocalProvider(self.workdir)
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        self.echo_port = echo.sockets[0].getsockname()[1]
        self._server = server = KubeletServer(self._provider, config=self.config)
        await server.start()
        self.port = server.port
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.close()
            echo.close()
            await echo.wait_closed()
            await asyncio.sleep(0.05)
            me = asyncio.current_task()
            self.leftover_tasks = [repr(t) for t in asyncio.all_tasks() if t is not me and not t.done()]

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 15) -> Any:
        assert self._loop is not None

        async def run() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        future: Future[Any] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(timeout)

    def stop(self, timeout: float = 20) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the kubelet server thread did not stop")


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
