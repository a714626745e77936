"""Hosts files the agent writes: its block of Service names (pure) and in-place writes.

The block sits between two marker lines and is the only part of a foreign
file (the device's ``/etc/hosts``) the agent touches; every other line is
kept byte for byte. Files are rewritten in place (not renamed over): the
device's ``/etc/hosts`` is often a bind mount (in containers, and under
``ip netns exec`` from ``/etc/netns/<name>/hosts``) and a rename over a mount
point fails; and each pod's hosts file (``podhosts``) is bind-mounted into
its containers, where a mount follows the inode, not the name.

Names per Service, as a pod's resolver would find them with the search path
``<ns>.svc.<domain> svc.<domain> <domain>``: ``<svc>.<ns>.svc.<domain>``,
``<svc>.<ns>.svc``, ``<svc>.<ns>``, and the bare ``<svc>`` when no other
granted Service has that name in another namespace.

No pyroute2 here (``edge_agent.services`` imports it): the pod layer uses
this module whether or not Services are enabled.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import fleetproto as fp

BEGIN = "# BEGIN edgefleet services (managed by edge-agent, do not edit)"
END = "# END edgefleet services"


def hosts_lines(services: Iterable[fp.ServiceEntry], domain: str) -> list[str]:
    entries = sorted(services, key=lambda s: (s.namespace, s.name))
    bare = Counter(s.name for s in entries)
    lines = []
    for s in entries:
        names = [f"{s.name}.{s.namespace}.svc.{domain}", f"{s.name}.{s.namespace}.svc", f"{s.name}.{s.namespace}"]
        if bare[s.name] == 1:
            names.append(s.name)
        lines.append(f"{s.cluster_ip}\t{' '.join(names)}")
    return lines


def replace_block(text: str, lines: list[str]) -> str:
    """``text`` without any earlier block, plus the new one at the end (none if ``lines`` is empty)."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif inside and line.strip() == END:
            inside = False
        elif not inside:
            kept.append(line)
    # An unterminated block (a crash mid-write) ends at the end of the file: dropped as well.
    if lines:
        kept += [BEGIN, *lines, END]
    return "".join(f"{line}\n" for line in kept)


def update_hosts_file(path: Path, lines: list[str]) -> bool:
    """Write the block into ``path`` (created if missing); False if it already said exactly that."""
    try:
        old = path.read_text()
    except FileNotFoundError:
        old = ""
    new = replace_block(old, lines)
    if new == old:
        return False
    write_in_place(path, new)
    return True


def write_in_place(path: Path, text: str, mode: int = 0o644) -> None:
    """Overwrite ``path``'s bytes keeping its inode (created with ``mode`` if missing)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        data = text.encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
