"""``StatsSummary``: what a ``stats`` stream carries (device -> cloud), for ``kubectl top``.

Cumulative CPU in nanoseconds (rates are the consumer's business, as with the
kubelet's ``/stats/summary``); memory and filesystem in bytes; ``None`` where
the runtime cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from ._record import Record
from ._schema import Fields, drop_none


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerUsage(Record):
    name: str
    cpu_usage_ns: int
    memory_working_set_bytes: int
    memory_usage_bytes: int = 0
    memory_rss_bytes: int | None = None
    fs_used_bytes: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    pids: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return drop_none({name: getattr(self, name) for name in self.__dataclass_fields__})

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            name=f.str("name", max_len=253),
            cpu_usage_ns=f.int("cpu_usage_ns", lo=0),
            memory_working_set_bytes=f.int("memory_working_set_bytes", lo=0),
            memory_usage_bytes=f.int("memory_usage_bytes", 0, lo=0),
            memory_rss_bytes=f.int("memory_rss_bytes", None, lo=0),
            fs_used_bytes=f.int("fs_used_bytes", None, lo=0),
            net_rx_bytes=f.int("net_rx_bytes", None, lo=0),
            net_tx_bytes=f.int("net_tx_bytes", None, lo=0),
            pids=f.int("pids", None, lo=0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PodUsage(Record):
    uid: str
    namespace: str
    name: str
    containers: tuple[ContainerUsage, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "namespace": self.namespace,
            "name": self.name,
            "containers": [c.to_dict() for c in self.containers],
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            uid=f.str("uid", max_len=128),
            namespace=f.str("namespace", max_len=253),
            name=f.str("name", max_len=253),
            containers=f.list("containers", ContainerUsage.read),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceUsage(Record):
    """Cumulative counters of one host network interface."""

    name: str
    rx_bytes: int
    tx_bytes: int
    rx_errors: int = 0
    tx_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            name=f.str("name", max_len=64),
            rx_bytes=f.int("rx_bytes", lo=0),
            tx_bytes=f.int("tx_bytes", lo=0),
            rx_errors=f.int("rx_errors", 0, lo=0),
            tx_errors=f.int("tx_errors", 0, lo=0),
        )


_NODE_COUNTERS = (
    "cpu_usage_ns",
    "memory_working_set_bytes",
    "memory_available_bytes",
    "fs_capacity_bytes",
    "fs_available_bytes",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeUsage(Record):
    cpu_usage_ns: int
    memory_working_set_bytes: int
    memory_available_bytes: int
    fs_capacity_bytes: int
    fs_available_bytes: int
    interfaces: tuple[InterfaceUsage, ...] = ()
    """Host interfaces (not loopback or container plumbing); absent from older agents."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in _NODE_COUNTERS}
        if self.interfaces:
            out["interfaces"] = [i.to_dict() for i in self.interfaces]
        return out

    @classmethod
    def read(cls, f: Fields) -> Self:
        counters = {name: f.int(name, lo=0) for name in _NODE_COUNTERS}
        return cls(**counters, interfaces=f.list("interfaces", InterfaceUsage.read))


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsSummary(Record):
    TYPE = "StatsSummary"
    time: float
    node: NodeUsage
    pods: tuple[PodUsage, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "node": self.node.to_dict(), "pods": [p.to_dict() for p in self.pods]}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(time=f.float("time"), node=f.obj("node", NodeUsage.read), pods=f.list("pods", PodUsage.read))
