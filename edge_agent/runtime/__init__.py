"""The container runtime layer of the edge agent.

One interface, ``Runtime`` (``base.py``), with two implementations:

* ``DockerRuntime`` - Docker Engine API (and Podman's compatible socket).
* ``ProcessRuntime`` - plain supervised host processes, for devices with no
  container engine (see ``process_runtime`` for the image rule).

Everything raises ``RuntimeErrorBase`` subclasses (``errors.py``).
"""

from .base import AttachSession, ExecSession, IOSession, ProgressCallback, Runtime
from .docker_runtime import DockerConfig, DockerRuntime
from .errors import (
    ContainerConflict,
    ContainerNotFound,
    ContainerNotRunning,
    ContainerStartError,
    ImageNotFound,
    InvalidSpec,
    RuntimeErrorBase,
    RuntimeUnavailable,
)
from .process_runtime import ProcessRuntime, ProcessRuntimeConfig
from .types import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    FileSpec,
    MountSpec,
    OutputChunk,
    PortSpec,
    PullPolicy,
    PullProgress,
    Resources,
    RuntimeVersion,
    Stream,
)

__all__ = [
    "AttachSession",
    "ContainerConflict",
    "ContainerNotFound",
    "ContainerNotRunning",
    "ContainerSpec",
    "ContainerStartError",
    "ContainerState",
    "ContainerStats",
    "ContainerStatus",
    "DockerConfig",
    "DockerRuntime",
    "ExecSession",
    "FileSpec",
    "IOSession",
    "ImageNotFound",
    "InvalidSpec",
    "MountSpec",
    "OutputChunk",
    "PortSpec",
    "ProcessRuntime",
    "ProcessRuntimeConfig",
    "ProgressCallback",
    "PullPolicy",
    "PullProgress",
    "Resources",
    "Runtime",
    "RuntimeErrorBase",
    "RuntimeUnavailable",
    "RuntimeVersion",
    "Stream",
]
