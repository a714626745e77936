"""Map docker SDK and transport exceptions onto the runtime's typed errors.

Docker reports most conditions by HTTP status plus a sentence; the sentence
is the only way to tell "no such image" from "no such container" on a 404,
or "name in use" from "not running" on a 409.
"""

from __future__ import annotations

from typing import Literal

import docker.errors
import requests

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


def _explanation(exc: docker.errors.APIError) -> str:
    text = exc.explanation
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text or exc)


def translate(exc: BaseException, *, subject: Subject, ref: str, action: str) -> BaseException:
    """The typed error for ``exc`` raised while doing ``action`` on ``ref``."""
    if isinstance(exc, RuntimeErrorBase):
        return exc
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError | FileNotFoundError):
        return RuntimeUnavailable(f"docker engine unreachable during {action}: {exc}")
    if isinstance(exc, requests.exceptions.Timeout):
        return RuntimeUnavailable(f"docker engine timed out during {action}: {exc}")
    if isinstance(exc, docker.errors.APIError):
        text = _explanation(exc)
        status = exc.status_code
        lowered = text.lower()
        if status == 404 or isinstance(exc, docker.errors.NotFound):
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
    if isinstance(exc, docker.errors.DockerException):
        if "fetching server api version" in str(exc).lower():
            return RuntimeUnavailable(f"docker engine unreachable: {exc}")
        return RuntimeErrorBase(f"docker {action} {ref}: {exc}")
    return exc


def check_response(response: requests.Response, *, subject: Subject, ref: str, action: str) -> None:
    """Raise the typed error for a raw ``requests`` response with an error status."""
    if response.status_code < 400:
        return
    try:
        message = response.json().get("message", "")
    except ValueError:
        message = response.text
    response.close()
    error = docker.errors.APIError(message, response=response, explanation=message)
    raise translate(error, subject=subject, ref=ref, action=action)
