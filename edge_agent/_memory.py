"""Give freed heap back to the OS: ``malloc_trim(0)`` after start-up and then now and then.

Why: glibc keeps freed memory in its arenas (every executor thread gets one),
so RSS after the start-up burst (imports, first pod sync) stays high although
Python freed it. Trimming returns about 0.5-1 MB on an idle agent and costs
a few hundred microseconds. A no-op where libc has no ``malloc_trim`` (musl,
macOS).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _trimmer() -> Callable[[], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the symbols the process already has, libc among them
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


async def trim_periodically(first_after: float = 10.0, every: float = 60.0) -> None:
    """Run forever (cancel to stop): trim once after ``first_after`` seconds, then every ``every``."""
    trim = _trimmer()
    if trim is None:
        log.debug("malloc_trim not available; not trimming the heap")
        return
    await asyncio.sleep(first_after)
    while True:
        trim()
        await asyncio.sleep(every)
