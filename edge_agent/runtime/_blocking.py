"""Run the blocking docker SDK off the event loop.

Short calls go to one small executor. Long-lived streams (``logs`` with
follow, pulls) take one executor slot per pending item from a separate,
larger executor, so a few followers cannot starve ``inspect`` calls; the item
is only fetched when the consumer asks (natural backpressure). Closing such a
stream early calls ``interrupt``, which must unblock the pending fetch (e.g. by
shutting down its socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


async def run_blocking(executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))


def _next(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


async def iterate_blocking(
    executor: ThreadPoolExecutor, iterator: Iterator[T], *, interrupt: Callable[[], None]
) -> AsyncIterator[T]:
    """Yield items of a blocking iterator, fetching each in ``executor``."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[Any] | None = None
    exhausted = False
    try:
        while True:
            pending = loop.run_in_executor(executor, _next, iterator)
            item = await pending
            pending = None
            if item is _DONE:
                exhausted = True
                return
            yield item
    finally:
        if not exhausted:
            interrupt()
        if pending is not None:
            # Let the worker notice the interrupt, so the thread is free again.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(pending), timeout=5)
