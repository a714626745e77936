"""Typed errors of the runtime layer.

Every error a runtime raises is a ``RuntimeErrorBase``; the engine's own
exceptions (docker SDK, ``requests``, ``OSError`` from a process) never leak.
The pod layer maps them onto Kubernetes reasons: ``ImageNotFound`` becomes
``ErrImagePull``/``ImageInspectError``, ``ContainerNotFound`` a 404 on the
kubelet API, ``RuntimeUnavailable`` a NotReady node.
"""

from __future__ import annotations


class RuntimeErrorBase(Exception):
    """Base class of every error a ``Runtime`` raises."""


class RuntimeUnavailable(RuntimeErrorBase):
    """The engine cannot be reached (socket missing, daemon down, refused)."""


class ImageNotFound(RuntimeErrorBase):
    """The image is not present and could not be pulled (or may not be, by policy)."""

    def __init__(self, image: str, detail: str = "") -> None:
        self.image = image
        self.detail = detail
        text = f"image {image!r} not found"
        super().__init__(f"{text}: {detail}" if detail else text)


class ContainerNotFound(RuntimeErrorBase):
    """No container with that id (or name)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no such container: {ref}")


class ContainerConflict(RuntimeErrorBase):
    """The name is taken, or the container is in a state that forbids the call."""


class ContainerNotRunning(ContainerConflict):
    """exec/attach need a running container."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"container {ref} is not running")


class ContainerStartError(RuntimeErrorBase):
    """The container was created but its process could not be started."""


class InvalidSpec(RuntimeErrorBase, ValueError):
    """A ``ContainerSpec`` (or call argument) that no runtime could honour."""
