"""Run an asyncio service on its own event loop in a thread.

Tests that drive blocking tools (kubectl, ptys, sockets) need the service
under test to keep running meanwhile. Subclasses implement ``setup`` and
``teardown``; ``call(fn, *args)`` runs ``fn`` on the service's loop (awaited
if it returns an awaitable), and ``stop()`` records tasks still alive after
teardown in ``leftover_tasks`` (there should be none). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable
from typing import Any, Self


class LoopThread:
    name = "service"

    def __init__(self) -> None:
        self.leftover_tasks: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)

    async def setup(self) -> None:
        """Start the service (on the thread's loop)."""

    async def teardown(self) -> None:
        """Stop the service (on the thread's loop)."""

    def start(self, timeout: float = 30) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the {self.name} did not start within {timeout}s")
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
        await self.setup()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.teardown()
            await asyncio.sleep(0.05)
            me = asyncio.current_task()
            self.leftover_tasks = [repr(t) for t in asyncio.all_tasks() if t is not me and not t.done()]

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 15) -> Any:
        assert self._loop is not None, "not started"

        async def run() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self, timeout: float = 30) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the {self.name} thread did not stop")
