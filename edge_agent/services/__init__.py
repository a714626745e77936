"""Cluster Services on the device: apply the ``ServiceTable`` the cloud sends.

For every granted Service the device gets what a pod in the cluster would
see: its ClusterIP (a /32 on the dummy interface ``[services] interface``),
a listener on each of its TCP ports there, and its DNS names in the managed
block of ``[services] hosts_file`` and of every pod's own hosts file
(``podhosts``). Each connection to a listener is carried to the bridge over
one ``service`` stream (``listeners``).

Order matters: listeners of withdrawn Services stop before their addresses
go, addresses exist before new listeners bind. A failing step is logged and
counted and the rest still applies. ``start`` removes what a crashed agent
left behind; ``close`` removes everything (interface, listeners, hosts block).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import fleetproto as fp

from ..config import ServiceSettings
from ..hostsfile import hosts_lines, update_hosts_file
from ..podhosts import PodHostsFiles
from .iface import DummyInterface
from .listeners import OpenStream, ServiceListeners

log = logging.getLogger("edge_agent.services")

__all__ = ["ServiceManager"]


class ServiceManager:
    def __init__(
        self,
        settings: ServiceSettings,
        open_stream: OpenStream,
        counters: Counter[str],
        *,
        pod_hosts: PodHostsFiles | None = None,
    ) -> None:
        """``pod_hosts``: the pods' own hosts files, which get the same block as ``settings.hosts_file``."""
        self.settings = settings
        self.pod_hosts = pod_hosts
        self.counters = counters
        self.interface = DummyInterface(settings.interface)
        self.listeners = ServiceListeners(open_stream, counters)
        self.table = fp.ServiceTable()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            await self._teardown()

    async def close(self) -> None:
        async with self._lock:
            await self.listeners.close()
            await self._teardown()
            self.table = fp.ServiceTable()

    async def apply(self, table: fp.ServiceTable) -> None:
        async with self._lock:
            self.counters["service_tables"] += 1
            wanted = {
                (s.cluster_ip, p.port): fp.ServiceOpen(namespace=s.namespace, service=s.name, port=p.port)
                for s in table.services
                for p in s.ports
            }
            await self.listeners.remove_except(wanted)
            try:
                await asyncio.to_thread(self.interface.sync, {s.cluster_ip for s in table.services})
            except Exception as exc:
                self.counters["service_interface_errors"] += 1
                log.error("cannot put ClusterIPs on %s: %s", self.interface.name, exc)
            failed = await self.listeners.add_missing(wanted)
            if failed:
                log.error("cannot listen on %s", ", ".join(failed))
            lines = hosts_lines(table.services, self.settings.cluster_domain)
            try:
                await asyncio.to_thread(update_hosts_file, self.settings.hosts_file, lines)
            except OSError as exc:
                self.counters["service_hosts_errors"] += 1
                log.error("cannot write %s: %s", self.settings.hosts_file, exc)
            self._set_pod_hosts(lines)
            self.table = table
            names = ", ".join(s.key for s in table.services) or "none"
            log.info("cluster services reachable: %s", names)

    async def _teardown(self) -> None:
        try:
            if await asyncio.to_thread(self.interface.remove):
                log.info("removed interface %s", self.interface.name)
        except Exception as exc:
            self.counters["service_interface_errors"] += 1
            log.error("cannot remove interface %s: %s", self.interface.name, exc)
        try:
            await asyncio.to_thread(update_hosts_file, self.settings.hosts_file, [])
        except OSError as exc:
            self.counters["service_hosts_errors"] += 1
            log.error("cannot clean %s: %s", self.settings.hosts_file, exc)
        self._set_pod_hosts([])

    def _set_pod_hosts(self, lines: list[str]) -> None:
        """The same block into every pod's hosts file (on the loop: ``PodHostsFiles`` has one writer)."""
        if self.pod_hosts is not None:
            self.counters["service_hosts_errors"] += self.pod_hosts.set_services(lines)
