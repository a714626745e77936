"""Which cluster Services each device may reach, and where a connection to one goes. Pure.

Grant rule (opt-in, nothing is reachable by default):

* a Service is offered to devices only with the label ``edgefleet.io/expose: "true"``;
* the annotation ``edgefleet.io/devices: "dev1,dev2"`` (optional) restricts it to those devices;
* a device's EdgeDevice may list Services in ``spec.services`` ({name, namespace}): those are
  granted to that device whether labelled or not (``listed``).

Headless Services (no ClusterIP) and non-TCP ports are left out: a device
reaches a Service at its ClusterIP, one byte stream per TCP connection.

Input is the apiserver's JSON (camelCase dicts, as ``_preload_content=False``
returns them); anything malformed is skipped and reported, never raised, so
one odd object cannot stop the tables of every device.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

import fleetproto as fp

LABEL_EXPOSE = "edgefleet.io/expose"
ANNOTATION_DEVICES = "edgefleet.io/devices"
LABEL_SLICE_SERVICE = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class PortInfo:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    namespace: str
    name: str
    cluster_ip: str
    ports: tuple[PortInfo, ...]
    devices: frozenset[str] | None = None
    """None: every device; otherwise only these."""
    exposed: bool = True
    """False: in the catalog only because some EdgeDevice lists it."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def granted_to(self, device: str, listed: Set[tuple[str, str]] = frozenset()) -> bool:
        if self.key in listed:
            return True
        return self.exposed and (self.devices is None or device in self.devices)

    def tcp_ports(self) -> tuple[PortInfo, ...]:
        return tuple(p for p in self.ports if p.protocol == "TCP")

    def entry(self) -> fp.ServiceEntry:
        ports = tuple(fp.ServicePort(port=p.port, name=p.name) for p in self.tcp_ports())
        return fp.ServiceEntry(namespace=self.namespace, name=self.name, cluster_ip=self.cluster_ip, ports=ports)


Address = tuple[str, int]


@dataclass
class Catalog:
    """Exposed Services and their ready endpoints, by ``(namespace, name)``."""

    services: dict[tuple[str, str], ServiceInfo] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], dict[str, list[Address]]] = field(default_factory=dict)
    """Ready addresses by Service port name; a Service missing here has no Endpoints object."""
    problems: list[str] = field(default_factory=list)

    def table_for(self, device: str, listed: Set[tuple[str, str]] = frozenset()) -> fp.ServiceTable:
        """The device's table; ``listed`` are the Services its EdgeDevice names."""
        entries = tuple(s.entry() for s in self.services.values() if s.granted_to(device, listed) and s.tcp_ports())
        return fp.ServiceTable(services=entries)

    def resolve(
        self, device: str, namespace: str, name: str, port: int, listed: Set[tuple[str, str]] = frozenset()
    ) -> Target:
        """Where a device's connection to ``namespace/name:port`` goes, or why it may not."""
        service = self.services.get((namespace, name))
        if service is None or not service.granted_to(device, listed):
            return Target(refusal=(fp.AppError.FORBIDDEN, f"service {namespace}/{name} is not granted to {device}"))
        spec = next((p for p in service.tcp_ports() if p.port == port), None)
        if spec is None:
            return Target(refusal=(fp.AppError.FORBIDDEN, f"service {namespace}/{name} has no TCP port {port}"))
        ready = self.endpoints.get(service.key)
        if ready is None:
            return Target(refusal=(fp.AppError.UNAVAILABLE, f"service {namespace}/{name} has no Endpoints"))
        addresses = ready.get(spec.name, [])
        if not addresses:
            return Target(
                refusal=(fp.AppError.UNAVAILABLE, f"service {namespace}/{name} port {port} has no ready endpoint")
            )
        return Target(addresses=tuple(addresses))


@dataclass(frozen=True, slots=True)
class Target:
    addresses: tuple[Address, ...] = ()
    refusal: tuple[int, str] | None = None


def _devices(annotations: Mapping[str, Any]) -> frozenset[str] | None:
    raw = annotations.get(ANNOTATION_DEVICES)
    if raw is None:
        return None
    if not isinstance(raw, str):
        return frozenset()
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _ipv4(value: Any) -> str | None:
    try:
        address = ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        return None
    if address.is_loopback or address.is_unspecified or address.is_multicast or address.is_link_local:
        return None
    return str(address)


def parse_service(obj: Mapping[str, Any], *, listed: bool = False) -> ServiceInfo | None:
    """The exposed (or ``listed``) Service in ``obj``, or None (not exposed, headless, not IPv4).

    Raises on malformed input.
    """
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    exposed = labels.get(LABEL_EXPOSE) == "true"
    if not exposed and not listed:
        return None
    spec = obj.get("spec") or {}
    cluster_ip = _ipv4(spec.get("clusterIP"))
    if cluster_ip is None:
        return None
    ports = tuple(
        PortInfo(name=str(p.get("name") or ""), port=int(p["port"]), protocol=str(p.get("protocol") or "TCP"))
        for p in spec.get("ports") or []
    )
    return ServiceInfo(
        namespace=str(meta["namespace"]),
        name=str(meta["name"]),
        cluster_ip=cluster_ip,
        ports=ports,
        devices=_devices(meta.get("annotations") or {}),
        exposed=exposed,
    )


def endpoints_addresses(obj: Mapping[str, Any]) -> dict[str, list[Address]]:
    """Ready TCP addresses of a core/v1 Endpoints object, by port name."""
    out: dict[str, list[Address]] = {}
    for subset in obj.get("subsets") or []:
        ips = [a["ip"] for a in subset.get("addresses") or [] if "ip" in a]
        for port in subset.get("ports") or []:
            if (port.get("protocol") or "TCP") != "TCP":
                continue
            bucket = out.setdefault(str(port.get("name") or ""), [])
            bucket.extend((ip, int(port["port"])) for ip in ips)
    return out


def slice_addresses(obj: Mapping[str, Any]) -> dict[str, list[Address]]:
    """Ready TCP addresses of a discovery/v1 EndpointSlice, by port name."""
    out: dict[str, list[Address]] = {}
    ips = [
        address
        for endpoint in obj.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready", True) is not False
        for address in endpoint.get("addresses") or []
    ]
    for port in obj.get("ports") or []:
        if (port.get("protocol") or "TCP") != "TCP" or port.get("port") is None:
            continue
        bucket = out.setdefault(str(port.get("name") or ""), [])
        bucket.extend((ip, int(port["port"])) for ip in ips)
    return out


def build_catalog(
    services: Iterable[Mapping[str, Any]],
    endpoints: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]] = (),
    *,
    listed: Set[tuple[str, str]] = frozenset(),
) -> Catalog:
    """A catalog from Services, Endpoints and EndpointSlices (their union, deduplicated).

    ``listed``: Services some EdgeDevice names; they enter the catalog without the label.
    """
    catalog = Catalog()
    seen_ips: dict[str, tuple[str, str]] = {}
    for obj in services:
        try:
            meta = obj.get("metadata") or {}
            info = parse_service(obj, listed=(meta.get("namespace"), meta.get("name")) in listed)
        except (KeyError, TypeError, ValueError) as exc:
            catalog.problems.append(f"service {_name(obj)}: {exc!r}")
            continue
        if info is None:
            continue
        if info.cluster_ip in seen_ips:  # cannot happen in one cluster; keep the tables valid anyway
            catalog.problems.append(f"service {info.namespace}/{info.name}: ClusterIP {info.cluster_ip} reused")
            continue
        seen_ips[info.cluster_ip] = info.key
        catalog.services[info.key] = info

    def merge(key: tuple[str, str], found: dict[str, list[Address]]) -> None:
        bucket = catalog.endpoints.setdefault(key, {})
        for port_name, addresses in found.items():
            merged = bucket.setdefault(port_name, [])
            merged.extend(a for a in addresses if a not in merged)

    for obj in endpoints:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if key in catalog.services:
            try:
                merge(key, endpoints_addresses(obj))
            except (KeyError, TypeError, ValueError) as exc:
                catalog.problems.append(f"endpoints {key[0]}/{key[1]}: {exc!r}")
    for obj in slices:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str((meta.get("labels") or {}).get(LABEL_SLICE_SERVICE)))
        if key in catalog.services:
            try:
                merge(key, slice_addresses(obj))
            except (KeyError, TypeError, ValueError) as exc:
                catalog.problems.append(f"endpointslice {key[0]}/{meta.get('name')}: {exc!r}")
    return catalog


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return "?"
    return f"{meta.get('namespace')}/{meta.get('name')}"
