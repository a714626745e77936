"""Map Engine API errors and transport failures onto the runtime's typed errors.

Docker reports most conditions by HTTP status plus a sentence; the sentence
is the only way to tell "no such image" from "no such container" on a 404,
or "name in use" from "not running" on a 409.
"""

from __future__ import annotations

import http.client
from typing import Literal

from ._docker_http import EngineError
from .errors import (
    ContainerConflict,
    ContainerNotFound,
    ContainerNotRunning,
    ContainerStartError,
    ImageNotFound,
    RuntimeErrorBase,
    RuntimeUnavailable,
)

Subject = Literal["container", "image", "exec", "engine"]


def translate(exc: BaseException, *, subject: Subject, ref: str, action: str) -> BaseException:
    """The typed error for ``exc`` raised while doing ``action`` on ``ref``."""
    if isinstance(exc, RuntimeErrorBase):
        return exc
    if isinstance(exc, TimeoutError):
        return RuntimeUnavailable(f"docker engine timed out during {action}: {exc}")
    if isinstance(exc, OSError | http.client.HTTPException):
        return RuntimeUnavailable(f"docker engine unreachable during {action}: {exc}")
    if isinstance(exc, EngineError):
        text = exc.message or str(exc)
        status = exc.status
        lowered = text.lower()
        # Podman's compat API answers these with HTTP 500; its sentences tell them apart.
        if "already in use" in lowered:
            return ContainerConflict(f"{action} {ref}: {text}")
        if "state improper" in lowered and action.startswith("exec"):
            return ContainerNotRunning(ref)
        if status == 404:
            if subject == "image" or "no such image" in lowered or "pull access denied" in lowered:
                return ImageNotFound(ref, text)
            return ContainerNotFound(ref)
        if status == 409:
            if "is not running" in lowered or "is paused" in lowered:
                return ContainerNotRunning(ref)
            return ContainerConflict(f"{action} {ref}: {text}")
        if action == "start":
            return ContainerStartError(f"cannot start container {ref}: {text}")
        return RuntimeErrorBase(f"docker {action} {ref}: {text} (HTTP {status})")
    if isinstance(exc, ValueError | KeyError):
        return RuntimeErrorBase(f"docker {action} {ref}: unexpected answer from the engine: {exc!r}")
    return exc
