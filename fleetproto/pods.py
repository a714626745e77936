"""The desired pod, as the cloud sends it in ``PodUpsert`` and ``Sync``.

A reduced Kubernetes PodSpec: what a device can run. The cloud resolves
everything that needs the API server before sending - ConfigMap and Secret
volumes become ``files`` (``"<volume>/<path>"`` -> bytes + mode), env values
are plain strings - so the device needs no cluster access.

Unknown keys matter here more than elsewhere: a field the device does not
understand (``securityContext``, ``initContainers``) may change what the
pod means. ``DesiredPod.from_dict`` therefore records every unknown key's path
in ``unknown_fields``; the agent runs the pod and reports them back in a
condition, so nothing is silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from . import names
from ._record import Record
from ._schema import MISSING, Fields, check_bytes, check_int, check_str, check_str_list, drop_none
from .errors import SchemaError


class RestartPolicy(StrEnum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class Seccomp(StrEnum):
    """A container's seccomp profile (``securityContext.seccompProfile.type``)."""

    UNSET = ""
    """The pod does not say: the device's default (the kubelet's: Unconfined)."""
    RUNTIME_DEFAULT = "RuntimeDefault"
    UNCONFINED = "Unconfined"


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


def _enum(f: Fields, key: str, enum: type[StrEnum], default: Any) -> Any:
    value = f.str(key, default, max_len=64)
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise SchemaError(f"{f.path}.{key}" if f.path else key, f"{value!r} is not one of {choices}") from None


@dataclass(frozen=True, slots=True)
class EnvVar(Record):
    name: str
    value: str = ""

    def __post_init__(self) -> None:
        names.env_name(check_str(self.name, "env.name"), "env.name")
        check_str(self.value, "env.value")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value}

    @classmethod
    def read(cls, f: Fields) -> Self:
        name = f.str("name")
        return cls(names.env_name(name, f"{f.path}.name"), f.str("value", ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerPort(Record):
    container_port: int
    protocol: Protocol = Protocol.TCP
    name: str = ""
    host_port: int | None = None
    host_ip: str = ""

    def __post_init__(self) -> None:
        check_int(self.container_port, "container_port", lo=1, hi=65535)
        if self.host_port is not None:
            check_int(self.host_port, "host_port", lo=1, hi=65535)
        object.__setattr__(self, "protocol", Protocol(self.protocol))

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "container_port": self.container_port,
                "protocol": self.protocol.value,
                "name": self.name or None,
                "host_port": self.host_port,
                "host_ip": self.host_ip or None,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            container_port=f.int("container_port", lo=1, hi=65535),
            protocol=_enum(f, "protocol", Protocol, "TCP"),
            name=f.str("name", "", max_len=63),
            host_port=f.int("host_port", None, lo=1, hi=65535),
            host_ip=f.str("host_ip", "", max_len=64),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources(Record):
    """CPU in cores (0.5 = 500m), memory in bytes; ``None`` = not set."""

    cpu_limit: float | None = None
    memory_limit_bytes: int | None = None
    cpu_request: float | None = None
    memory_request_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("cpu_limit", "cpu_request"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SchemaError(name, "must be positive")
        for name in ("memory_limit_bytes", "memory_request_bytes"):
            value = getattr(self, name)
            if value is not None:
                check_int(value, name, lo=1)

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "cpu_limit": self.cpu_limit,
                "memory_limit_bytes": self.memory_limit_bytes,
                "cpu_request": self.cpu_request,
                "memory_request_bytes": self.memory_request_bytes,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        def cpu(key: str) -> float | None:
            value = f.float(key, None)
            if value is not None and value <= 0:
                raise SchemaError(f"{f.path}.{key}", "must be positive")
            return value

        return cls(
            cpu_limit=cpu("cpu_limit"),
            memory_limit_bytes=f.int("memory_limit_bytes", None, lo=1),
            cpu_request=cpu("cpu_request"),
            memory_request_bytes=f.int("memory_request_bytes", None, lo=1),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeMount(Record):
    """Files of ``volume`` appear under ``mount_path`` (or, with ``sub_path``, only that part)."""

    volume: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False

    def __post_init__(self) -> None:
        names.dns_label(self.volume, "volume")
        object.__setattr__(self, "mount_path", names.absolute_path(self.mount_path, "mount_path"))
        if self.sub_path:
            names.relative_path(self.sub_path, "sub_path")

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "volume": self.volume,
                "mount_path": self.mount_path,
                "sub_path": self.sub_path or None,
                "read_only": self.read_only or None,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            volume=names.dns_label(f.str("volume"), f"{f.path}.volume"),
            mount_path=names.absolute_path(f.str("mount_path"), f"{f.path}.mount_path"),
            sub_path=names.relative_path(sub, f"{f.path}.sub_path") if (sub := f.str("sub_path", "")) else "",
            read_only=f.bool("read_only", False),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Container(Record):
    name: str
    image: str
    image_pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    env: tuple[EnvVar, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    resources: Resources = field(default_factory=Resources)
    volume_mounts: tuple[VolumeMount, ...] = ()
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    seccomp: Seccomp = Seccomp.UNSET

    def __post_init__(self) -> None:
        names.dns_label(self.name, "container.name")
        object.__setattr__(self, "seccomp", Seccomp(self.seccomp))
        check_str(self.image, "container.image", empty=False, max_len=1024)
        object.__setattr__(self, "image_pull_policy", PullPolicy(self.image_pull_policy))
        object.__setattr__(self, "command", check_str_list(self.command, "command"))
        object.__setattr__(self, "args", check_str_list(self.args, "args"))
        object.__setattr__(self, "env", tuple(self.env))
        object.__setattr__(self, "ports", tuple(self.ports))
        object.__setattr__(self, "volume_mounts", tuple(self.volume_mounts))
        if self.working_dir:
            names.absolute_path(self.working_dir, "working_dir")
        if self.stdin_once and not self.stdin:
            raise SchemaError("stdin_once", "needs stdin")

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "name": self.name,
                "image": self.image,
                "image_pull_policy": self.image_pull_policy.value,
                "command": list(self.command) or None,
                "args": list(self.args) or None,
                "working_dir": self.working_dir or None,
                "env": [e.to_dict() for e in self.env] or None,
                "ports": [p.to_dict() for p in self.ports] or None,
                "resources": self.resources.to_dict() or None,
                "volume_mounts": [m.to_dict() for m in self.volume_mounts] or None,
                "tty": self.tty or None,
                "stdin": self.stdin or None,
                "stdin_once": self.stdin_once or None,
                "seccomp": self.seccomp.value or None,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        working_dir = f.str("working_dir", "")
        if working_dir:
            names.absolute_path(working_dir, f"{f.path}.working_dir")
        stdin = f.bool("stdin", False)
        stdin_once = f.bool("stdin_once", False)
        if stdin_once and not stdin:
            raise SchemaError(f"{f.path}.stdin_once", "needs stdin")
        return cls(
            name=names.dns_label(f.str("name"), f"{f.path}.name"),
            image=f.str("image", empty=False, max_len=1024),
            image_pull_policy=_enum(f, "image_pull_policy", PullPolicy, "IfNotPresent"),
            command=f.str_list("command"),
            args=f.str_list("args"),
            working_dir=working_dir,
            env=f.list("env", EnvVar.read),
            ports=f.list("ports", ContainerPort.read),
            resources=f.obj("resources", Resources.read, Resources()),
            volume_mounts=f.list("volume_mounts", VolumeMount.read),
            tty=f.bool("tty", False),
            stdin=stdin,
            stdin_once=stdin_once,
            seccomp=_enum(f, "seccomp", Seccomp, ""),
        )


@dataclass(frozen=True, slots=True)
class PodFile(Record):
    data: bytes
    mode: int = 0o644

    def __post_init__(self) -> None:
        check_bytes(self.data, "data")
        check_int(self.mode, "mode", lo=0, hi=0o7777)

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "mode": self.mode}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.bytes("data"), f.int("mode", 0o644, lo=0, hi=0o7777))


def _file_key(key: str, path: str) -> str:
    volume, sep, rest = key.partition("/")
    if not sep:
        raise SchemaError(path, f"file key {key!r} must be '<volume>/<path>'")
    names.dns_label(volume, path)
    names.relative_path(rest, path)
    return key


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredPod(Record):
    uid: str
    namespace: str
    name: str
    containers: tuple[Container, ...]
    resource_version: str = ""
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    termination_grace_seconds: float = 30.0
    files: Mapping[str, PodFile] = field(default_factory=dict)
    host_network: bool = False
    hostname: str = ""
    unknown_fields: tuple[str, ...] = field(default=(), compare=False)
    """Paths of keys the sender set that this version does not understand (never sent)."""

    def __post_init__(self) -> None:
        names.uid(self.uid, "uid")
        names.dns_subdomain(self.namespace, "namespace")
        names.dns_subdomain(self.name, "name")
        check_str(self.resource_version, "resource_version", max_len=256)
        object.__setattr__(self, "restart_policy", RestartPolicy(self.restart_policy))
        object.__setattr__(self, "containers", tuple(self.containers))
        if not self.containers:
            raise SchemaError("containers", "a pod needs at least one container")
        seen: set[str] = set()
        for container in self.containers:
            if container.name in seen:
                raise SchemaError("containers", f"container name {container.name!r} is used twice")
            seen.add(container.name)
        if not 0 <= self.termination_grace_seconds <= 86400:
            raise SchemaError("termination_grace_seconds", "must be between 0 and 86400")
        for key in self.files:
            _file_key(key, f"files[{key!r}]")
        object.__setattr__(self, "files", dict(self.files))
        if self.hostname:
            names.dns_label(self.hostname, "hostname")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def container(self, name: str) -> Container | None:
        return next((c for c in self.containers if c.name == name), None)

    def volume_files(self, volume: str) -> dict[str, PodFile]:
        """The files of one volume, keyed by their path inside it."""
        prefix = f"{volume}/"
        return {key[len(prefix) :]: spec for key, spec in self.files.items() if key.startswith(prefix)}

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "uid": self.uid,
                "namespace": self.namespace,
                "name": self.name,
                "resource_version": self.resource_version or None,
                "containers": [c.to_dict() for c in self.containers],
                "restart_policy": self.restart_policy.value,
                "termination_grace_seconds": self.termination_grace_seconds,
                "files": {key: spec.to_dict() for key, spec in self.files.items()} or None,
                "host_network": self.host_network or None,
                "hostname": self.hostname or None,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        def at(key: str) -> str:
            return f"{f.path}.{key}" if f.path else key

        def file(value: Any, path: str) -> PodFile:
            sub = Fields(value, path, f.unknown)
            out = PodFile.read(sub)
            sub.finish()
            return out

        files = f.map("files", file)
        for key in files:
            _file_key(key, at(f"files[{key!r}]"))
        containers = f.list("containers", Container.read, MISSING)
        if not containers:
            raise SchemaError(at("containers"), "a pod needs at least one container")
        names_seen: set[str] = set()
        for i, container in enumerate(containers):
            if container.name in names_seen:
                raise SchemaError(at(f"containers[{i}].name"), f"container name {container.name!r} is used twice")
            names_seen.add(container.name)
        grace = f.float("termination_grace_seconds", 30.0, lo=0)
        if grace > 86400:
            raise SchemaError(at("termination_grace_seconds"), "must be at most 86400")
        hostname = f.str("hostname", "")
        return cls(
            uid=names.uid(f.str("uid", max_len=128), at("uid")),
            namespace=names.dns_subdomain(f.str("namespace", max_len=253), at("namespace")),
            name=names.dns_subdomain(f.str("name", max_len=253), at("name")),
            resource_version=f.str("resource_version", "", max_len=256),
            containers=containers,
            restart_policy=_enum(f, "restart_policy", RestartPolicy, "Always"),
            termination_grace_seconds=grace,
            files=files,
            host_network=f.bool("host_network", False),
            hostname=names.dns_label(hostname, at("hostname")) if hostname else "",
        )

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Self:
        """Validate ``data``; keys this version does not know end up in ``unknown_fields``."""
        f = Fields(data, path)
        pod = cls.read(f)
        unknown = f.finish()
        if unknown:
            object.__setattr__(pod, "unknown_fields", tuple(unknown))
        return pod

    def with_unknown(self, unknown: tuple[str, ...]) -> DesiredPod:
        object.__setattr__(self, "unknown_fields", tuple(unknown))
        return self


def read_pods(f: Fields, key: str) -> tuple[DesiredPod, ...]:
    """A list of pods, each keeping its own ``unknown_fields`` (not the enclosing message's)."""

    def one(entry: Fields) -> DesiredPod:
        inner = Fields(entry.data, entry.path)
        pod = DesiredPod.read(inner)
        unknown = inner.finish()
        entry.seen(*entry.data.keys())
        return pod.with_unknown(tuple(unknown)) if unknown else pod

    return f.list(key, one, MISSING)


def pod_identity(data: Any) -> tuple[str, str, str] | None:
    """Best-effort (uid, namespace, name) of an invalid pod map, to report its failure."""
    if not isinstance(data, Mapping):
        return None
    try:
        return (
            names.uid(check_str(data.get("uid"), "uid"), "uid"),
            check_str(data.get("namespace", ""), "namespace", max_len=253),
            check_str(data.get("name", ""), "name", max_len=253),
        )
    except SchemaError:
        return None
