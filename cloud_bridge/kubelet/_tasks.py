"""Small asyncio helpers: cancel-and-wait without swallowing our own cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Future | None], timeout: float = 5.0) -> None:
    """Cancel ``tasks`` and wait (bounded) for them to finish; their outcomes
    are retrieved so nothing is reported as "never retrieved"."""
    pending = {t for t in tasks if t is not None}
    for task in pending:
        task.cancel()
    if not pending:
        return
    done, still = await asyncio.wait(pending, timeout=timeout)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, ConnectionError):
                log.debug("task %r ended with %r", task, exc)
    for task in still:
        log.warning("task %r did not stop within %.1fs of being cancelled", task, timeout)


def outcome(task: asyncio.Future) -> BaseException | None:
    """The task's exception (CancelledError if cancelled), or None."""
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()
