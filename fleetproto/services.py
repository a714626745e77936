"""Cluster Services a device may reach: the ``ServiceTable`` the cloud sends, and its entries.

The cloud decides which Services a device is granted and sends the whole
table (never a delta: a lost or reordered delta would leave a stale grant);
the device makes exactly those reachable and nothing else. The cloud checks
the grant again on every ``service`` stream, so a device that lies about its
table gains nothing.

Only TCP ports appear here; the cloud leaves UDP/SCTP ports and headless
Services (no ClusterIP) out, since they cannot be carried as one byte stream
per connection.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Self

from ._record import Record
from ._schema import Fields, check_int, check_str
from .errors import SchemaError

MAX_PORT = 65535


def _check_ipv4(value: str, path: str) -> str:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise SchemaError(path, f"{value!r} is not an IPv4 address") from None
    if address.is_loopback or address.is_unspecified or address.is_multicast or address.is_link_local:
        raise SchemaError(path, f"{value} cannot be a ClusterIP (loopback, unspecified, multicast or link-local)")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort(Record):
    port: int
    name: str = ""

    def __post_init__(self) -> None:
        check_int(self.port, "port", lo=1, hi=MAX_PORT)
        check_str(self.name, "name", max_len=63)

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, "name": self.name}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(port=f.int("port", lo=1, hi=MAX_PORT), name=f.str("name", "", max_len=63))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceEntry(Record):
    """One granted Service: its DNS identity, its ClusterIP and its TCP ports."""

    namespace: str
    name: str
    cluster_ip: str
    ports: tuple[ServicePort, ...]

    def __post_init__(self) -> None:
        check_str(self.namespace, "namespace", empty=False, max_len=63)
        check_str(self.name, "name", empty=False, max_len=63)
        _check_ipv4(self.cluster_ip, "cluster_ip")
        object.__setattr__(self, "ports", tuple(self.ports))
        numbers = [p.port for p in self.ports]
        if len(set(numbers)) != len(numbers):
            raise SchemaError("ports", f"service {self.key} lists a port twice")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def has_port(self, port: int) -> bool:
        return any(p.port == port for p in self.ports)

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "cluster_ip": self.cluster_ip,
            "ports": [p.to_dict() for p in self.ports],
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            namespace=f.str("namespace", empty=False, max_len=63),
            name=f.str("name", empty=False, max_len=63),
            cluster_ip=f.str("cluster_ip", max_len=64),
            ports=f.list("ports", ServicePort.read),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceTable(Record):
    """Cloud -> device: every Service this device may reach now (the complete set)."""

    TYPE = "ServiceTable"
    services: tuple[ServiceEntry, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "services", tuple(sorted(self.services, key=lambda s: (s.namespace, s.name))))
        keys = [s.key for s in self.services]
        if len(set(keys)) != len(keys):
            raise SchemaError("services", "a service appears twice")
        ips: dict[str, str] = {}
        for entry in self.services:
            other = ips.setdefault(entry.cluster_ip, entry.key)
            if other != entry.key:
                raise SchemaError("services", f"{entry.key} and {other} share ClusterIP {entry.cluster_ip}")

    def find(self, namespace: str, name: str) -> ServiceEntry | None:
        for entry in self.services:
            if entry.namespace == namespace and entry.name == name:
                return entry
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"services": [s.to_dict() for s in self.services]}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(services=f.list("services", ServiceEntry.read))
