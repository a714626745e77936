"""Per-node kubelet ports: which virtual node a connection to the bridge is for.

Why: the apiserver proxies ``/api/v1/nodes/N/proxy/stats/summary`` (and
metrics-server scrapes ``/metrics/resource``) to
``https://<preferred node address>:<daemonEndpoints port>/stats/summary``
(``pkg/registry/core/node/strategy.go`` ``ResourceLocation`` and
``pkg/kubelet/client`` ``GetConnectionInfo``). Nothing in that request names
the node: the path is node-less and the Host header is just address:port.
Pod-scoped URLs (exec, logs, ...) name the pod, node-scoped ones do not. So
with ``--kubelet-node-ports FIRST-LAST`` the bridge listens on every port of
that range as well, gives each virtual node its own port (its
``daemonEndpoints`` port), and finds the node from the local port a
connection arrived on. The shared ``--kubelet-port`` keeps serving every
pod-scoped request for every node.

The other way, ``--kubelet-hostname-suffix``: Nodes advertise a ``Hostname``
address ``<device><suffix>`` (first in the apiserver's default
``--kubelet-preferred-address-types``), so the name the client dials (TLS SNI,
else the Host header, which the apiserver's node proxy does not set to it)
names the device.
It needs a DNS name per device resolving to the bridge (the apiserver only
proxies to names resolving to global unicast addresses) and a serving cert
covering them, and metrics-server's stock manifest prefers InternalIP, whose
Host header names nothing. The port works in any cluster, hence the default.

Assignments survive bridge restarts: each Node carries its port in the
``edgefleet.io/kubelet-port`` annotation; the bridge seeds this table from
existing Nodes before it serves any device. Collisions (two Nodes claiming
one port, a port outside the range) go to the first claimant (by name); the
other node gets a free port when it next comes online.

Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ANNOTATION_PORT = "edgefleet.io/kubelet-port"


class PortsExhausted(Exception):
    """Every port of the range is taken: the range bounds how many nodes this bridge serves."""


def parse_range(text: str) -> tuple[int, int]:
    """``"10300-10399"`` -> ``(10300, 10399)`` (inclusive); ValueError with a clear message otherwise."""
    first_text, sep, last_text = text.partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if sep else first
    except ValueError:
        raise ValueError(f"expected a port range FIRST-LAST, got {text!r}") from None
    if not 0 < first <= last < 65536:
        raise ValueError(f"port range {text!r} must be 1-65535 with FIRST <= LAST")
    return first, last


class NodePorts:
    def __init__(self, first: int, last: int) -> None:
        if not 0 < first <= last < 65536:
            raise ValueError(f"bad port range {first}-{last}")
        self.first = first
        self.last = last
        self._by_node: dict[str, int] = {}
        self._by_port: dict[int, str] = {}

    def __contains__(self, port: int) -> bool:
        return self.first <= port <= self.last

    @property
    def ports(self) -> range:
        return range(self.first, self.last + 1)

    def node_at(self, port: int) -> str | None:
        return self._by_port.get(port)

    def port_of(self, node: str) -> int | None:
        return self._by_node.get(node)

    def seed(self, claims: Mapping[str, int | None]) -> None:
        """Reserve ports recorded on existing Nodes (``node -> annotated port``)."""
        for node in sorted(claims):
            port = claims[node]
            if node in self._by_node or port is None or port not in self or port in self._by_port:
                continue
            self._bind(node, port)

    def assign(self, node: str, preferred: int | None = None) -> int:
        """The node's port: its current one, else ``preferred`` if free and in range,
        else the lowest free port. Raises ``PortsExhausted``."""
        current = self._by_node.get(node)
        if current is not None:
            return current
        if preferred is not None and preferred in self and preferred not in self._by_port:
            return self._bind(node, preferred)
        for port in self.ports:
            if port not in self._by_port:
                return self._bind(node, port)
        raise PortsExhausted(f"all {self.last - self.first + 1} kubelet node ports are taken; widen the range")

    def release(self, node: str) -> None:
        port = self._by_node.pop(node, None)
        if port is not None:
            self._by_port.pop(port, None)

    def _bind(self, node: str, port: int) -> int:
        self._by_node[node] = port
        self._by_port[port] = node
        return port


def annotated_port(annotations: Mapping[str, str] | None) -> int | None:
    """The port a Node's annotation records, None if absent or not a number."""
    raw = (annotations or {}).get(ANNOTATION_PORT)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def claims_from_nodes(nodes: Iterable[tuple[str, Mapping[str, str] | None]]) -> dict[str, int | None]:
    """``(name, annotations)`` pairs -> what ``NodePorts.seed`` takes."""
    return {name: annotated_port(annotations) for name, annotations in nodes}
