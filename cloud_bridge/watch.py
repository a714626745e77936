"""Wake a resync loop as soon as a watched collection changes.

The bridge's loops list what they need and reconcile (level-triggered: a
missed event costs nothing but latency). A watch only tells them *when* to
look, so a change reaches a device in milliseconds while the full list runs
at a slow resync interval. The synchronous kubernetes client blocks in a
read; the watch runs in a thread, and ``close()`` unblocks it by shutting the
response down instead of waiting for the server's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("cloud_bridge.watch")

WATCH_SECONDS = 60
"""Server-side timeout of one watch request; the thread then re-watches from the last version."""
DEBOUNCE = 0.02
"""A burst of events (a Deployment's pods, a status write storm) becomes one wake-up."""


class ChangeWatch:
    """Runs ``list_fn(watch=True, ...)`` in a thread and sets an event on each change."""

    def __init__(self, list_fn: Callable[..., Any], name: str, **selectors: Any) -> None:
        self._list_fn = list_fn
        self._selectors = selectors
        self.name = name
        self.events = 0
        self.errors = 0
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    async def wait(self, timeout: float) -> bool:
        """True if something changed within ``timeout`` seconds (then the event is consumed)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        await asyncio.sleep(DEBOUNCE)
        self._changed.clear()
        return True

    async def close(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)

    # ------------------------------------------------------------------ the thread

    def _notify(self) -> None:
        self.events += 1
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._changed.set)

    def _run(self) -> None:
        version: str | None = None
        backoff = 0.1
        while not self._stop.is_set():
            try:
                version = self._watch_once(version)
                backoff = 0.1
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.errors += 1
                log.info("watch %s failed (%s); retrying in %.1fs", self.name, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                version = None  # the list after a failure is the truth; start a fresh watch
                self._notify()

    def _watch_once(self, version: str | None) -> str | None:
        kwargs: dict[str, Any] = {
            "watch": True,
            "timeout_seconds": WATCH_SECONDS,
            "_request_timeout": WATCH_SECONDS + 10,
            "_preload_content": False,
            **self._selectors,
        }
        if version:
            kwargs["resource_version"] = version
        response = self._list_fn(**kwargs)
        self._response = response
        try:
            if self._stop.is_set():
                return version
            pending = b""
            for chunk in response.stream(65536, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        version = self._event(line, version)
        finally:
            self._response = None
            with contextlib.suppress(Exception):
                response.release_conn()
        return version

    def _event(self, line: bytes, version: str | None) -> str | None:
        event = json.loads(line)
        if event.get("type") == "ERROR":
            # 410 Gone: our version was compacted away. Re-watch from now; the next list catches up.
            self._notify()
            return None
        if event.get("type") != "BOOKMARK":
            self._notify()
        return ((event.get("object") or {}).get("metadata") or {}).get("resourceVersion") or version


class Resync:
    """A level-triggered reconcile loop: ``refresh`` at least every ``interval``
    seconds, and as soon as ``watch`` (if any) reports a change.

    A failed round is handed to ``on_error`` (default: logged) and the loop goes
    on: the next round starts from a fresh list anyway.
    """

    def __init__(
        self,
        refresh: Callable[[], Awaitable[None]],
        *,
        interval: float,
        name: str,
        watch: ChangeWatch | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._refresh = refresh
        self.interval = interval
        self.name = name
        self.watch = watch
        self._on_error = on_error
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, refresh_first: bool = True) -> None:
        """Start the watch and the loop; ``refresh_first`` runs (and raises from) one round before returning."""
        if self.watch is not None:
            self.watch.start()
        if refresh_first:
            await self._refresh()
        self._task = asyncio.create_task(self._run(immediately=not refresh_first), name=f"bridge-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.watch is not None:
            await self.watch.close()

    async def _run(self, *, immediately: bool) -> None:
        if immediately:
            await self._round()
        while True:
            if self.watch is not None:
                await self.watch.wait(self.interval)
            else:
                await asyncio.sleep(self.interval)
            await self._round()

    async def _round(self) -> None:
        try:
            await self._refresh()
        except Exception as exc:
            if self._on_error is None:
                log.exception("%s refresh failed", self.name)
            else:
                self._on_error(exc)
