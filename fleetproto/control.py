"""Control-stream messages and their registry.

The device opens one ``control`` stream per session; both directions carry
framed messages (``framing``), each a map ``{"type": <name>, ...fields}``.

device -> cloud: ``NodeHello`` (first, once per stream), ``NodeStatus``
(heartbeat), ``PodStatusReport`` (on change, and all of them after every
hello), ``PodDeleted`` (a deleted pod's containers are gone), ``Error``.

cloud -> device: ``PodUpsert``, ``PodDelete``, ``Sync`` (the full desired
set; pods not in it are deleted), ``ServiceTable`` (the cluster Services the
device may reach, on hello and on change), ``Error``.

Desired state carries a ``generation`` that only grows; the device persists
the one it holds and says it in ``NodeHello``. ``decode`` checks direction,
so a device never acts on a message only a device may send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from ._record import Record
from ._schema import Fields, check_int, check_str, drop_none
from .codes import AppError
from .errors import SchemaError, UnknownMessageType
from .node import NodeHello
from .pods import DesiredPod, read_pods
from .services import ServiceTable
from .stats import StatsSummary
from .status import NodeStatus, PodStatusReport


@dataclass(frozen=True, slots=True, kw_only=True)
class PodUpsert(Record):
    """Create or replace one desired pod (keyed by uid)."""

    TYPE = "PodUpsert"
    pod: DesiredPod
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"pod": self.pod.to_dict(), "generation": self.generation}

    @classmethod
    def read(cls, f: Fields) -> Self:
        generation = f.int("generation", 0, lo=0)
        f.seen("pod")
        raw = f.data.get("pod")
        if raw is None:
            raise SchemaError("pod", "is required")
        return cls(pod=DesiredPod.from_dict(raw, "pod"), generation=generation)


@dataclass(frozen=True, slots=True, kw_only=True)
class PodDelete(Record):
    """Stop (with ``grace_seconds``, else the pod's own) and remove a pod's containers."""

    TYPE = "PodDelete"
    uid: str
    namespace: str = ""
    name: str = ""
    grace_seconds: float | None = None
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "uid": self.uid,
                "namespace": self.namespace or None,
                "name": self.name or None,
                "grace_seconds": self.grace_seconds,
                "generation": self.generation,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            uid=f.str("uid", empty=False, max_len=128),
            namespace=f.str("namespace", "", max_len=253),
            name=f.str("name", "", max_len=253),
            grace_seconds=f.float("grace_seconds", None, lo=0),
            generation=f.int("generation", 0, lo=0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Sync(Record):
    """The complete desired set at ``generation``: run these, delete every other pod."""

    TYPE = "Sync"
    generation: int
    pods: tuple[DesiredPod, ...] = ()

    def __post_init__(self) -> None:
        check_int(self.generation, "generation", lo=0)
        object.__setattr__(self, "pods", tuple(self.pods))
        uids = [pod.uid for pod in self.pods]
        if len(set(uids)) != len(uids):
            raise SchemaError("pods", "a uid appears twice")

    def to_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "pods": [p.to_dict() for p in self.pods]}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(generation=f.int("generation", lo=0), pods=read_pods(f, "pods") if "pods" in f.data else ())


@dataclass(frozen=True, slots=True, kw_only=True)
class PodDeleted(Record):
    """Device -> cloud: the pod's containers are stopped and removed."""

    TYPE = "PodDeleted"
    uid: str
    namespace: str = ""
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "namespace": self.namespace, "name": self.name}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            uid=f.str("uid", empty=False, max_len=128),
            namespace=f.str("namespace", "", max_len=253),
            name=f.str("name", "", max_len=253),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Record):
    """Either side: a message could not be used. ``code`` is an ``AppError``."""

    TYPE = "Error"
    code: int
    message: str
    about: str = ""
    """What it concerns: a message type, a pod uid - free text for logs."""

    def __post_init__(self) -> None:
        check_int(self.code, "code", lo=0, hi=2**32 - 1)
        check_str(self.message, "message")

    def to_dict(self) -> dict[str, Any]:
        return drop_none({"code": self.code, "message": self.message, "about": self.about or None})

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            code=f.int("code", int(AppError.INTERNAL), lo=0, hi=2**32 - 1),
            message=f.str("message", ""),
            about=f.str("about", "", max_len=1024),
        )


DeviceMessage = NodeHello | NodeStatus | PodStatusReport | PodDeleted | Error | StatsSummary
CloudMessage = PodUpsert | PodDelete | Sync | ServiceTable | Error
ControlMessage = DeviceMessage | CloudMessage

FROM_DEVICE: dict[str, type[Record]] = {
    cls.TYPE: cls for cls in (NodeHello, NodeStatus, PodStatusReport, PodDeleted, Error, StatsSummary)
}
FROM_CLOUD: dict[str, type[Record]] = {cls.TYPE: cls for cls in (PodUpsert, PodDelete, Sync, ServiceTable, Error)}
_ALL = {**FROM_DEVICE, **FROM_CLOUD}


def encode(message: Record) -> dict[str, Any]:
    """The wire map of ``message`` (ready for ``framing.encode_message``)."""
    type_ = getattr(message, "TYPE", None)
    if type_ not in _ALL or _ALL[type_] is not type(message):
        raise TypeError(f"{type(message).__name__} is not a control message")
    return {"type": type_, **message.to_dict()}


def decode(data: Mapping[str, Any], *, sender: str | None = None) -> Any:
    """The message in ``data``; ``sender`` ("device"/"cloud") restricts the allowed types.

    Raises ``UnknownMessageType`` or ``SchemaError`` (both ``MessageError``).
    """
    f = Fields(data, "")
    type_ = f.str("type", max_len=64)
    f.seen("type")
    table = {"device": FROM_DEVICE, "cloud": FROM_CLOUD, None: _ALL}[sender]
    cls = table.get(type_)
    if cls is None:
        if type_ in _ALL:
            raise SchemaError("type", f"{type_} may not be sent by the {sender}")
        raise UnknownMessageType(type_)
    try:
        out = cls.read(f)
    except SchemaError:
        raise
    except (TypeError, ValueError) as exc:  # a constructor's own check
        raise SchemaError(type_, str(exc)) from None
    f.finish()
    return out
