"""The image rule of ``ProcessRuntime``: what an image name means without images.

* ``process:<program>`` - ``<program>`` is an absolute path, or a name looked
  up on the agent's ``PATH`` when the container is created. It plays the
  image's entrypoint: ``argv = [program, *args]``. A spec ``command``
  replaces it (Kubernetes semantics), so ``argv = [*command, *args]``.
* ``host`` - no default program: ``command`` is required,
  ``argv = [*command, *args]``; ``command[0]`` is looked up on the
  container's ``PATH`` when it starts.

Anything else is ``ImageNotFound``: a manifest meant for a container engine
fails clearly instead of running something unexpected.
"""

from __future__ import annotations

import os
import shutil

from .errors import ImageNotFound, InvalidSpec
from .types import ContainerSpec

PREFIX = "process:"
HOST = "host"


def resolve_program(image: str) -> str | None:
    """The default program of ``image`` (None for ``host``), or ``ImageNotFound``."""
    if image == HOST:
        return None
    if not image.startswith(PREFIX) or len(image) == len(PREFIX):
        raise ImageNotFound(image, f"the process runtime runs only '{HOST}' or '{PREFIX}<program>' images")
    program = image[len(PREFIX) :]
    if os.path.isabs(program):
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise ImageNotFound(image, f"{program} is not an executable file")
        return program
    found = shutil.which(program)
    if found is None:
        raise ImageNotFound(image, f"program {program!r} not found on PATH")
    return found


def build_argv(spec: ContainerSpec) -> list[str]:
    program = resolve_program(spec.image)
    if spec.command:
        return [*spec.command, *spec.args]
    if program is None:
        raise InvalidSpec(f"image '{HOST}' needs a command (container {spec.name})")
    return [program, *spec.args]
