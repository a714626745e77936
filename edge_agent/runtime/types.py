"""Value types of the runtime interface: what to run, and what came of it.

All are frozen dataclasses that validate themselves, so a bad spec fails
where it is built rather than halfway through ``create``. Sequences are
normalised to tuples and mappings copied, so a spec cannot change under a
runtime that holds it.
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import NamedTuple

from .errors import InvalidSpec


class ContainerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


class Stream(enum.IntEnum):
    """Values are the Docker stream ids of the multiplexed stream header."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2


class OutputChunk(NamedTuple):
    """Bytes from one output stream (with a TTY everything is ``STDOUT``)."""

    stream: Stream
    data: bytes


class PullPolicy(enum.Enum):
    """Kubernetes' ``imagePullPolicy``."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


def _frozen_map(value: Mapping[str, str], what: str) -> Mapping[str, str]:
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidSpec(f"{what} must map str to str, got {key!r}: {item!r}")
    return MappingProxyType(dict(value))


def _str_tuple(value: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise InvalidSpec(f"{what} must be a sequence of strings, not a single string")
    out = tuple(value)
    if not all(isinstance(item, str) for item in out):
        raise InvalidSpec(f"{what} must contain only strings: {out!r}")
    return out


@dataclass(frozen=True, slots=True)
class FileSpec:
    """A file placed into the container before it starts."""

    data: bytes
    mode: int = 0o644

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise InvalidSpec("FileSpec.data must be bytes")
        if not 0 <= self.mode <= 0o7777:
            raise InvalidSpec(f"FileSpec.mode {self.mode:#o} is not a permission mode")


_HOSTNAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*", re.I)


def _absolute(path: str, what: str) -> str:
    norm = posixpath.normpath(path)
    if not path.startswith("/") or norm == "/" or norm.startswith("//"):
        raise InvalidSpec(f"{what} {path!r} must be an absolute path, not /")
    return norm


@dataclass(frozen=True, slots=True)
class MountSpec:
    """A host file or directory bind-mounted into the container (it must exist on the host).

    Writes through the mount and in-place rewrites on the host are seen on the
    other side at once; a file replaced by rename on the host is not (the
    mount holds the old inode).
    """

    source: str
    """Absolute host path."""
    target: str
    """Absolute path in the container; a mount at ``/etc/hosts`` replaces the engine's own file."""
    read_only: bool = False

    def __post_init__(self) -> None:
        for name in ("source", "target"):
            value = getattr(self, name)
            if not isinstance(value, str) or ":" in value or "," in value:
                raise InvalidSpec(f"mount {name} {value!r} must be a path without ':' or ','")
            object.__setattr__(self, name, _absolute(value, f"mount {name}"))


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A container port; published on the host only when ``host_port`` is set."""

    container_port: int
    protocol: str = "tcp"
    host_port: int | None = None
    host_ip: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.container_port < 65536:
            raise InvalidSpec(f"container_port {self.container_port} out of range")
        if self.host_port is not None and not 0 < self.host_port < 65536:
            raise InvalidSpec(f"host_port {self.host_port} out of range")
        if self.protocol not in ("tcp", "udp", "sctp"):
            raise InvalidSpec(f"protocol must be tcp, udp or sctp, not {self.protocol!r}")


@dataclass(frozen=True, slots=True)
class Resources:
    memory_limit_bytes: int | None = None
    cpu_limit: float | None = None
    """Cores (1.5 = one and a half CPUs); a hard quota."""
    cpu_request: float | None = None
    """Cores; a relative weight under contention (cgroup shares)."""

    def __post_init__(self) -> None:
        if self.memory_limit_bytes is not None and self.memory_limit_bytes <= 0:
            raise InvalidSpec("memory_limit_bytes must be positive")
        for name in ("cpu_limit", "cpu_request"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InvalidSpec(f"{name} must be positive")


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """What to run. ``command``/``args`` follow Kubernetes, not Docker:

    ``command`` replaces the image's entrypoint (and then its default
    arguments are dropped too), ``args`` replaces its default arguments.
    File paths and ``working_dir`` are absolute container paths.
    """

    name: str
    image: str
    command: Sequence[str] = ()
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    ports: Sequence[PortSpec] = ()
    files: Mapping[str, FileSpec] = field(default_factory=dict)
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    """Close the container's stdin when the first attached client closes its stdin."""
    resources: Resources = field(default_factory=Resources)
    labels: Mapping[str, str] = field(default_factory=dict)
    network_mode: str | None = None
    """Engine network mode (``host``, ``none``, ``container:<id>``); None: the default."""
    mounts: Sequence[MountSpec] = ()
    hostname: str | None = None
    """The container's hostname; None: the engine's choice (Docker: the id's first 12 characters).
    Not with ``host`` or ``container:`` networking, where it comes from the host or that container."""
    seccomp_unconfined: bool = False
    """No seccomp filter; False: the engine's default profile (the process runtime applies none)."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise InvalidSpec(f"container name {self.name!r} must be non-empty, without '/'")
        if not self.image:
            raise InvalidSpec("image must not be empty")
        object.__setattr__(self, "command", _str_tuple(self.command, "command"))
        object.__setattr__(self, "args", _str_tuple(self.args, "args"))
        object.__setattr__(self, "env", _frozen_map(self.env, "env"))
        object.__setattr__(self, "labels", _frozen_map(self.labels, "labels"))
        for key in self.env:
            if not key or "=" in key:
                raise InvalidSpec(f"environment variable name {key!r} is invalid")
        ports = tuple(self.ports)
        if not all(isinstance(port, PortSpec) for port in ports):
            raise InvalidSpec("ports must be PortSpec values")
        object.__setattr__(self, "ports", ports)
        files: dict[str, FileSpec] = {}
        for path, spec in self.files.items():
            norm = posixpath.normpath(path)
            if not path.startswith("/") or norm == "/" or norm.startswith("//"):
                raise InvalidSpec(f"file path {path!r} must be an absolute path to a file")
            if not isinstance(spec, FileSpec):
                raise InvalidSpec(f"files[{path!r}] must be a FileSpec")
            files[norm] = spec
        object.__setattr__(self, "files", MappingProxyType(files))
        mounts = tuple(self.mounts)
        if not all(isinstance(mount, MountSpec) for mount in mounts):
            raise InvalidSpec("mounts must be MountSpec values")
        targets = [mount.target for mount in mounts]
        if len(set(targets)) != len(targets):
            raise InvalidSpec(f"two mounts at the same target: {sorted(targets)}")
        object.__setattr__(self, "mounts", mounts)
        if self.hostname is not None:
            if len(self.hostname) > 253 or not _HOSTNAME.fullmatch(self.hostname):
                raise InvalidSpec(f"hostname {self.hostname!r} is not a valid host name")
            if self.network_mode and (self.network_mode == "host" or self.network_mode.startswith("container:")):
                raise InvalidSpec(f"a hostname cannot be set with network mode {self.network_mode!r}")
        if self.working_dir is not None and not self.working_dir.startswith("/"):
            raise InvalidSpec(f"working_dir {self.working_dir!r} must be absolute")
        if self.stdin_once and not self.stdin:
            raise InvalidSpec("stdin_once needs stdin=True")


@dataclass(frozen=True, kw_only=True)
class ContainerStatus:
    """A container as the runtime sees it now (restart counting is the pod layer's)."""

    id: str
    name: str
    image: str
    state: ContainerState
    exit_code: int | None = None
    reason: str | None = None
    """``Completed``, ``Error``, ``OOMKilled``, ``StartError``, ``RuntimeRestarted``."""
    message: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    pid: int | None = None


@dataclass(frozen=True, kw_only=True)
class ContainerStats:
    """Cumulative counters and current gauges; ``None`` where the runtime cannot tell."""

    timestamp: datetime
    cpu_usage_ns: int
    """CPU time used so far, all cores (kubelet's usageCoreNanoSeconds)."""
    memory_usage_bytes: int
    memory_working_set_bytes: int
    memory_rss_bytes: int | None = None
    memory_limit_bytes: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    fs_used_bytes: int | None = None
    """Bytes the container wrote to its own filesystem (writable layer / directory)."""
    fs_read_bytes: int | None = None
    fs_write_bytes: int | None = None
    pids: int | None = None


@dataclass(frozen=True, slots=True)
class RuntimeVersion:
    name: str
    """``docker``, ``podman`` or ``process``."""
    version: str
    api_version: str = ""


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One progress report of a pull (``current``/``total`` in bytes when known)."""

    image: str
    status: str
    layer: str | None = None
    current: int | None = None
    total: int | None = None
