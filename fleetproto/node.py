"""``NodeHello``: the first message on every control stream (device -> cloud).

It tells the cloud what the device is (for the virtual Node object), what it
allows, and which desired-state ``generation`` it holds, so the cloud can
send a ``Sync`` only when the device is behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

from ._record import Record
from ._schema import Fields, check_int, check_str, drop_none
from .version import PROTOCOL_VERSION

FEATURE_HOST_EXEC = "host_exec"
FEATURE_HOST_PORT_FORWARD = "host_port_forward"
KNOWN_FEATURES = frozenset({FEATURE_HOST_EXEC, FEATURE_HOST_PORT_FORWARD})


@dataclass(frozen=True, slots=True)
class NodeAddress(Record):
    type: str
    """``InternalIP``, ``ExternalIP`` or ``Hostname``, as in a Node's status."""
    address: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "address": self.address}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.str("type", empty=False, max_len=64), f.str("address", empty=False, max_len=256))


@dataclass(frozen=True, slots=True)
class RuntimeInfo(Record):
    name: str
    """``docker``, ``podman`` or ``process``."""
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.str("name", max_len=64), f.str("version", "", max_len=128))


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo(Record):
    os: str
    arch: str
    kernel: str
    hostname: str
    cpus: int
    memory_bytes: int
    disk_bytes: int
    os_image: str = ""
    addresses: tuple[NodeAddress, ...] = ()
    agent_version: str = ""
    runtime: RuntimeInfo = field(default_factory=lambda: RuntimeInfo("unknown"))
    features: tuple[str, ...] = ()
    """Host features the device allows (``host_exec``, ``host_port_forward``)."""
    boot_id: str = ""
    machine_id: str = ""

    def __post_init__(self) -> None:
        check_int(self.cpus, "cpus", lo=0)
        check_int(self.memory_bytes, "memory_bytes", lo=0)
        check_int(self.disk_bytes, "disk_bytes", lo=0)
        object.__setattr__(self, "addresses", tuple(self.addresses))
        object.__setattr__(self, "features", tuple(self.features))

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "os": self.os,
                "arch": self.arch,
                "kernel": self.kernel,
                "hostname": self.hostname,
                "cpus": self.cpus,
                "memory_bytes": self.memory_bytes,
                "disk_bytes": self.disk_bytes,
                "os_image": self.os_image or None,
                "addresses": [a.to_dict() for a in self.addresses],
                "agent_version": self.agent_version,
                "runtime": self.runtime.to_dict(),
                "features": list(self.features),
                "boot_id": self.boot_id or None,
                "machine_id": self.machine_id or None,
            }
        )

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            os=f.str("os", max_len=64),
            arch=f.str("arch", max_len=64),
            kernel=f.str("kernel", max_len=256),
            hostname=f.str("hostname", max_len=256),
            cpus=f.int("cpus", lo=0),
            memory_bytes=f.int("memory_bytes", lo=0),
            disk_bytes=f.int("disk_bytes", lo=0),
            os_image=f.str("os_image", "", max_len=256),
            addresses=f.list("addresses", NodeAddress.read),
            agent_version=f.str("agent_version", "", max_len=64),
            runtime=f.obj("runtime", RuntimeInfo.read, RuntimeInfo("unknown")),
            features=f.str_list("features"),
            boot_id=f.str("boot_id", "", max_len=128),
            machine_id=f.str("machine_id", "", max_len=128),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeHello(Record):
    TYPE = "NodeHello"
    node: NodeInfo
    generation: int = 0
    """Desired-state generation the device holds (0: none yet)."""
    protocol_version: int = PROTOCOL_VERSION
    pods: tuple[str, ...] = ()
    """Uids of the desired pods the device holds."""

    def __post_init__(self) -> None:
        check_int(self.generation, "generation", lo=0)
        object.__setattr__(self, "pods", tuple(check_str(uid, "pods") for uid in self.pods))

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node.to_dict(),
            "generation": self.generation,
            "protocol_version": self.protocol_version,
            "pods": list(self.pods),
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            node=f.obj("node", NodeInfo.read),
            generation=f.int("generation", 0, lo=0),
            protocol_version=f.int("protocol_version", PROTOCOL_VERSION, lo=0),
            pods=f.str_list("pods"),
        )
