"""Stream kinds and the metadata each one's OPEN carries, validated.

A seqstream OPEN carries a metadata map (seqstream PROTOCOL.md "Streams");
here it always has ``kind`` and ``v`` (the fleet protocol version). The opener
builds a frozen request and sends ``request.to_metadata()``; the acceptor
calls ``parse_open(stream.metadata)`` and gets the typed request back, or a
``SchemaError`` to answer with RESET ``AppError.BAD_REQUEST``.

| kind | opened by | carries |
|------|-----------|---------|
| control | device | control messages both ways (``framing``) |
| exec | cloud | channel frames (``channels``) |
| attach | cloud | channel frames |
| logs | cloud | raw log bytes device -> cloud, then FIN |
| portforward | cloud | raw bytes both ways to one TCP port in a pod (or on the host) |
| hostexec | cloud | channel frames; a command on the device itself |
| stats | cloud | ``StatsSummary`` messages device -> cloud (``framing``) |
| service | device | raw bytes both ways to one port of a granted cluster Service |

Unknown metadata keys are ignored, so a newer cloud can add options; a
newer *major* protocol version is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ._schema import MISSING, Fields, check_int, check_str, check_str_list, drop_none
from .errors import SchemaError
from .version import PROTOCOL_VERSION

MAX_PORT = 65535


class StreamKind(StrEnum):
    CONTROL = "control"
    EXEC = "exec"
    ATTACH = "attach"
    LOGS = "logs"
    PORTFORWARD = "portforward"
    HOSTEXEC = "hostexec"
    STATS = "stats"
    SERVICE = "service"


@dataclass(frozen=True, slots=True, kw_only=True)
class PodRef:
    """A pod by namespace/name; ``uid`` (optional) pins one incarnation of it."""

    namespace: str
    pod: str
    uid: str = ""

    def __post_init__(self) -> None:
        check_str(self.namespace, "namespace", empty=False, max_len=253)
        check_str(self.pod, "pod", empty=False, max_len=253)
        check_str(self.uid, "uid", max_len=128)

    def fields(self) -> dict[str, Any]:
        return drop_none({"namespace": self.namespace, "pod": self.pod, "uid": self.uid or None})

    @classmethod
    def read(cls, f: Fields) -> PodRef:
        return cls(
            namespace=f.str("namespace", empty=False, max_len=253),
            pod=f.str("pod", empty=False, max_len=253),
            uid=f.str("uid", "", max_len=128),
        )


def _container(f: Fields) -> str:
    """Container name; empty means the pod's first container (kubectl's default)."""
    return f.str("container", "", max_len=253)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlOpen:
    kind = StreamKind.CONTROL

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "v": PROTOCOL_VERSION}

    @classmethod
    def read(cls, f: Fields) -> ControlOpen:
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecOpen:
    kind = StreamKind.EXEC
    ref: PodRef
    container: str = ""
    command: tuple[str, ...]
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", check_str_list(self.command, "command"))
        if not self.command:
            raise SchemaError("command", "must not be empty")

    def to_metadata(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "v": PROTOCOL_VERSION,
            **self.ref.fields(),
            "container": self.container,
            "command": list(self.command),
            "tty": self.tty,
            "stdin": self.stdin,
            "stdout": self.stdout,
            "stderr": self.stderr,
        }

    @classmethod
    def read(cls, f: Fields) -> ExecOpen:
        return cls(
            ref=PodRef.read(f),
            container=_container(f),
            command=f.str_list("command", MISSING),
            tty=f.bool("tty", False),
            stdin=f.bool("stdin", False),
            stdout=f.bool("stdout", True),
            stderr=f.bool("stderr", True),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachOpen:
    """Attach to the container's main process; TTY or not is the container's own setting."""

    kind = StreamKind.ATTACH
    ref: PodRef
    container: str = ""
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True

    def to_metadata(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "v": PROTOCOL_VERSION,
            **self.ref.fields(),
            "container": self.container,
            "stdin": self.stdin,
            "stdout": self.stdout,
            "stderr": self.stderr,
        }

    @classmethod
    def read(cls, f: Fields) -> AttachOpen:
        return cls(
            ref=PodRef.read(f),
            container=_container(f),
            stdin=f.bool("stdin", False),
            stdout=f.bool("stdout", True),
            stderr=f.bool("stderr", True),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogsOpen:
    """The kubelet's ``/containerLogs`` options; times are Unix seconds."""

    kind = StreamKind.LOGS
    ref: PodRef
    container: str = ""
    follow: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: float | None = None
    timestamps: bool = False
    limit_bytes: int | None = None
    previous: bool = False

    def __post_init__(self) -> None:
        for name in ("tail_lines", "since_seconds", "limit_bytes"):
            value = getattr(self, name)
            if value is not None:
                check_int(value, name, lo=0 if name == "tail_lines" else 1)
        if self.since_seconds is not None and self.since_time is not None:
            raise SchemaError("since_seconds", "since_seconds and since_time exclude each other")

    def to_metadata(self) -> dict[str, Any]:
        return drop_none(
            {
                "kind": self.kind.value,
                "v": PROTOCOL_VERSION,
                **self.ref.fields(),
                "container": self.container,
                "follow": self.follow,
                "tail_lines": self.tail_lines,
                "since_seconds": self.since_seconds,
                "since_time": self.since_time,
                "timestamps": self.timestamps,
                "limit_bytes": self.limit_bytes,
                "previous": self.previous,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> LogsOpen:
        return cls(
            ref=PodRef.read(f),
            container=_container(f),
            follow=f.bool("follow", False),
            tail_lines=f.int("tail_lines", None, lo=0),
            since_seconds=f.int("since_seconds", None, lo=1),
            since_time=f.float("since_time", None, lo=0),
            timestamps=f.bool("timestamps", False),
            limit_bytes=f.int("limit_bytes", None, lo=1),
            previous=f.bool("previous", False),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PortForwardOpen:
    """One TCP connection to ``port`` in the pod's network namespace.

    With ``host`` set (and no pod) the port is on the device's own loopback;
    the device refuses that unless its ``host_port_forward`` feature is on.
    """

    kind = StreamKind.PORTFORWARD
    port: int
    ref: PodRef | None = None
    host: bool = False

    def __post_init__(self) -> None:
        check_int(self.port, "port", lo=1, hi=MAX_PORT)
        if self.host == (self.ref is not None):
            raise SchemaError("pod", "a port-forward goes to a pod or (host=true) to the host, exactly one")

    def to_metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "v": PROTOCOL_VERSION, "port": self.port}
        if self.ref is not None:
            out.update(self.ref.fields())
        if self.host:
            out["host"] = True
        return out

    @classmethod
    def read(cls, f: Fields) -> PortForwardOpen:
        host = f.bool("host", False)
        port = f.int("port", lo=1, hi=MAX_PORT)
        return cls(port=port, host=host, ref=None if host else PodRef.read(f))


@dataclass(frozen=True, slots=True, kw_only=True)
class HostExecOpen:
    """A command on the device itself (not in a container); off unless the device allows it."""

    kind = StreamKind.HOSTEXEC
    command: tuple[str, ...]
    tty: bool = False
    stdin: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", check_str_list(self.command, "command"))
        if not self.command:
            raise SchemaError("command", "must not be empty")

    def to_metadata(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "v": PROTOCOL_VERSION,
            "command": list(self.command),
            "tty": self.tty,
            "stdin": self.stdin,
        }

    @classmethod
    def read(cls, f: Fields) -> HostExecOpen:
        return cls(command=f.str_list("command", MISSING), tty=f.bool("tty", False), stdin=f.bool("stdin", False))


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsOpen:
    """Resource usage: one ``StatsSummary`` (interval 0), or one every ``interval`` seconds."""

    kind = StreamKind.STATS
    interval: float = 0.0

    def __post_init__(self) -> None:
        if self.interval != 0 and not 0.1 <= self.interval <= 3600:
            raise SchemaError("interval", "must be 0 (once) or between 0.1 and 3600 seconds")

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "v": PROTOCOL_VERSION, "interval": self.interval}

    @classmethod
    def read(cls, f: Fields) -> StatsOpen:
        return cls(interval=f.float("interval", 0.0, lo=0))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceOpen:
    """Device -> cloud: one TCP connection a local program made to a cluster Service's port.

    ``port`` is the Service port (as in the ``ServiceTable``), not the target port.
    """

    kind = StreamKind.SERVICE
    namespace: str
    service: str
    port: int

    def __post_init__(self) -> None:
        check_str(self.namespace, "namespace", empty=False, max_len=63)
        check_str(self.service, "service", empty=False, max_len=63)
        check_int(self.port, "port", lo=1, hi=MAX_PORT)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "v": PROTOCOL_VERSION,
            "namespace": self.namespace,
            "service": self.service,
            "port": self.port,
        }

    @classmethod
    def read(cls, f: Fields) -> ServiceOpen:
        return cls(
            namespace=f.str("namespace", empty=False, max_len=63),
            service=f.str("service", empty=False, max_len=63),
            port=f.int("port", lo=1, hi=MAX_PORT),
        )


OpenRequest = ControlOpen | ExecOpen | AttachOpen | LogsOpen | PortForwardOpen | HostExecOpen | StatsOpen | ServiceOpen

_READERS: dict[StreamKind, Any] = {
    StreamKind.CONTROL: ControlOpen.read,
    StreamKind.EXEC: ExecOpen.read,
    StreamKind.ATTACH: AttachOpen.read,
    StreamKind.LOGS: LogsOpen.read,
    StreamKind.PORTFORWARD: PortForwardOpen.read,
    StreamKind.HOSTEXEC: HostExecOpen.read,
    StreamKind.STATS: StatsOpen.read,
    StreamKind.SERVICE: ServiceOpen.read,
}


def parse_open(metadata: Mapping[str, Any]) -> OpenRequest:
    """The typed request in a stream's OPEN metadata, or ``SchemaError``."""
    f = Fields(metadata, "metadata")
    kind = f.str("kind", max_len=64)
    try:
        stream_kind = StreamKind(kind)
    except ValueError:
        raise SchemaError("metadata.kind", f"unknown stream kind {kind!r}") from None
    version = f.int("v", PROTOCOL_VERSION, lo=0)
    if version != PROTOCOL_VERSION:
        raise SchemaError(
            "metadata.v", f"protocol version {version} is not supported (this side speaks {PROTOCOL_VERSION})"
        )
    try:
        return _READERS[stream_kind](f)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError("metadata", str(exc)) from None
