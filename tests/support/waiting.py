"""Bounded polling for tests and benchmarks that drive real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(probe: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.3) -> Any:
    """Call ``probe`` until it returns something truthy (exceptions count as "not yet");
    return that value, or fail with the last answer after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
