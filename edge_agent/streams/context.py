"""What stream handlers share, and how their failures become RESET codes.

A handler raises; ``serve`` (``__init__``) maps the exception to one RESET
with an ``AppError`` code and a reason that names the pod and container, so
``kubectl`` shows the user a useful message (virtual-kubelet's typed errors,
mapped to HTTP statuses by the bridge).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import fleetproto as fp
from edge_agent.runtime import (
    ContainerNotFound,
    ContainerNotRunning,
    InvalidSpec,
    Runtime,
    RuntimeErrorBase,
    RuntimeUnavailable,
)

from ..config import FeatureSettings
from ..reconciler import PodNotFound, Reconciler

CHUNK = 32 * 1024
"""Output is framed in pieces of at most this size: small enough to interleave stdout and stderr."""


class StreamFailure(Exception):
    """Abort the stream with ``code`` (an ``AppError``) and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{fp.codes.describe(code)}: {reason}")


@dataclass
class StreamContext:
    runtime: Runtime
    reconciler: Reconciler
    features: FeatureSettings
    data_dir: Path
    counters: Counter[str] = field(default_factory=Counter)


def classify(exc: BaseException) -> tuple[int, str]:
    """The RESET code and reason for an exception raised by a handler."""
    if isinstance(exc, StreamFailure):
        return exc.code, exc.reason
    if isinstance(exc, PodNotFound | ContainerNotFound):
        return fp.AppError.NOT_FOUND, str(exc)
    if isinstance(exc, ContainerNotRunning):
        return fp.AppError.CONFLICT, str(exc)
    if isinstance(exc, RuntimeUnavailable):
        return fp.AppError.UNAVAILABLE, f"container runtime unavailable: {exc}"
    if isinstance(exc, InvalidSpec | fp.MessageError | fp.FramingError):
        return fp.AppError.BAD_REQUEST, str(exc)
    if isinstance(exc, RuntimeErrorBase):
        return fp.AppError.INTERNAL, str(exc)
    return fp.AppError.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
