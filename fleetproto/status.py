"""What the device reports: pod status and node status (device -> cloud).

Shapes follow Kubernetes' PodStatus/NodeStatus closely so the bridge copies
rather than interprets; times are Unix seconds (float), ``None`` if unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from ._record import Record
from ._schema import MISSING, Fields, check_int, check_str, drop_none
from .errors import SchemaError


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class StateKind(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    TERMINATED = "terminated"


def _enum(f: Fields, key: str, enum: type[StrEnum], default: Any = MISSING) -> Any:
    value = f.str(key, default, max_len=64)
    try:
        return enum(value)
    except ValueError:
        raise SchemaError(f"{f.path}.{key}" if f.path else key, f"{value!r} is not a valid {enum.__name__}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition(Record):
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition: float | None = None

    def __post_init__(self) -> None:
        check_str(self.type, "type", empty=False, max_len=316)
        object.__setattr__(self, "status", ConditionStatus(self.status))

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "type": self.type,
                "status": self.status.value,
                "reason": self.reason or None,
                "message": self.message or None,
                "last_transition": self.last_transition,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            type=f.str("type", empty=False, max_len=316),
            status=_enum(f, "status", ConditionStatus),
            reason=f.str("reason", ""),
            message=f.str("message", ""),
            last_transition=f.float("last_transition", None),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerState(Record):
    """One of Kubernetes' waiting / running / terminated container states."""

    kind: StateKind
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    signal: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    container_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", StateKind(self.kind))
        if self.kind is StateKind.TERMINATED and self.exit_code is None:
            raise SchemaError("exit_code", "a terminated state needs an exit code")

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "kind": self.kind.value,
                "reason": self.reason or None,
                "message": self.message or None,
                "exit_code": self.exit_code,
                "signal": self.signal,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "container_id": self.container_id or None,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        kind = _enum(f, "kind", StateKind)
        exit_code = f.int("exit_code", None, lo=-(2**31), hi=2**32 - 1)
        if kind is StateKind.TERMINATED and exit_code is None:
            raise SchemaError(f"{f.path}.exit_code", "a terminated state needs an exit code")
        return cls(
            kind=kind,
            reason=f.str("reason", ""),
            message=f.str("message", ""),
            exit_code=exit_code,
            signal=f.int("signal", None, lo=0, hi=255),
            started_at=f.float("started_at", None),
            finished_at=f.float("finished_at", None),
            container_id=f.str("container_id", "", max_len=256),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerStatus(Record):
    name: str
    state: ContainerState
    last_state: ContainerState | None = None
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    image: str = ""
    image_id: str = ""
    container_id: str = ""

    def __post_init__(self) -> None:
        check_str(self.name, "name", empty=False, max_len=253)
        check_int(self.restart_count, "restart_count", lo=0)

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "name": self.name,
                "state": self.state.to_dict(),
                "last_state": self.last_state.to_dict() if self.last_state else None,
                "ready": self.ready,
                "started": self.started,
                "restart_count": self.restart_count,
                "image": self.image or None,
                "image_id": self.image_id or None,
                "container_id": self.container_id or None,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            name=f.str("name", empty=False, max_len=253),
            state=f.obj("state", ContainerState.read),
            last_state=f.obj("last_state", ContainerState.read, None),
            ready=f.bool("ready", False),
            started=f.bool("started", False),
            restart_count=f.int("restart_count", 0, lo=0),
            image=f.str("image", "", max_len=1024),
            image_id=f.str("image_id", "", max_len=1024),
            container_id=f.str("container_id", "", max_len=256),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PodStatusReport(Record):
    """The device's view of one pod; sent on every change and after each (re)connect."""

    TYPE = "PodStatusReport"
    uid: str
    namespace: str
    name: str
    phase: PodPhase
    conditions: tuple[Condition, ...] = ()
    container_statuses: tuple[ContainerStatus, ...] = ()
    pod_ip: str = ""
    host_ip: str = ""
    start_time: float | None = None
    reason: str = ""
    message: str = ""
    observed_resource_version: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "phase", PodPhase(self.phase))
        object.__setattr__(self, "conditions", tuple(self.conditions))
        object.__setattr__(self, "container_statuses", tuple(self.container_statuses))

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def container(self, name: str) -> ContainerStatus | None:
        return next((c for c in self.container_statuses if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "uid": self.uid,
                "namespace": self.namespace,
                "name": self.name,
                "phase": self.phase.value,
                "conditions": [c.to_dict() for c in self.conditions],
                "container_statuses": [c.to_dict() for c in self.container_statuses],
                "pod_ip": self.pod_ip or None,
                "host_ip": self.host_ip or None,
                "start_time": self.start_time,
                "reason": self.reason or None,
                "message": self.message or None,
                "observed_resource_version": self.observed_resource_version or None,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            uid=f.str("uid", empty=False, max_len=128),
            namespace=f.str("namespace", "", max_len=253),
            name=f.str("name", "", max_len=253),
            phase=_enum(f, "phase", PodPhase),
            conditions=f.list("conditions", Condition.read),
            container_statuses=f.list("container_statuses", ContainerStatus.read),
            pod_ip=f.str("pod_ip", "", max_len=64),
            host_ip=f.str("host_ip", "", max_len=64),
            start_time=f.float("start_time", None),
            reason=f.str("reason", ""),
            message=f.str("message", ""),
            observed_resource_version=f.str("observed_resource_version", "", max_len=256),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeResources(Record):
    """Capacity or allocatable, in plain units (the bridge renders quantities)."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    ephemeral_storage_bytes: int = 0
    pods: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_millis": self.cpu_millis,
            "memory_bytes": self.memory_bytes,
            "ephemeral_storage_bytes": self.ephemeral_storage_bytes,
            "pods": self.pods,
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            cpu_millis=f.int("cpu_millis", 0, lo=0),
            memory_bytes=f.int("memory_bytes", 0, lo=0),
            ephemeral_storage_bytes=f.int("ephemeral_storage_bytes", 0, lo=0),
            pods=f.int("pods", 0, lo=0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus(Record):
    """The heartbeat: conditions (Ready, MemoryPressure, ...), resources, agent counters."""

    TYPE = "NodeStatus"
    time: float
    conditions: tuple[Condition, ...] = ()
    capacity: NodeResources = field(default_factory=NodeResources)
    allocatable: NodeResources = field(default_factory=NodeResources)
    counters: dict[str, int] = field(default_factory=dict)
    """Agent health counters (bad control messages, restarts, ...), for logs and metrics."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", tuple(self.conditions))

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "conditions": [c.to_dict() for c in self.conditions],
            "capacity": self.capacity.to_dict(),
            "allocatable": self.allocatable.to_dict(),
            "counters": dict(self.counters),
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            time=f.float("time"),
            conditions=f.list("conditions", Condition.read),
            capacity=f.obj("capacity", NodeResources.read, NodeResources()),
            allocatable=f.obj("allocatable", NodeResources.read, NodeResources()),
            counters=f.map("counters", lambda v, p: check_int(v, p, lo=0)),
        )
