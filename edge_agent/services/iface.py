"""The interface that holds the granted ClusterIPs on the device (pyroute2, blocking).

Each ClusterIP is a /32 on a ``dummy`` link (an empty bridge where the
kernel has no dummy driver), so the kernel treats it as a local address:
listeners bind to it, local programs connect to it without a route, and
containers on a bridge network reach it through their default route to the
host. Call from a thread (``asyncio.to_thread``): netlink calls block. Only
a link of those two kinds is ever touched, so a misconfigured name cannot
take down a real interface.
"""

from __future__ import annotations

import errno
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

MAX_IFNAME = 15
OUR_KINDS = ("dummy", "bridge")


class DummyInterface:
    def __init__(self, name: str) -> None:
        if not 0 < len(name) <= MAX_IFNAME:
            raise ValueError(f"interface name {name!r} must be 1-{MAX_IFNAME} characters")
        self.name = name
        self.kind = "dummy"

    def _index(self, ipr: IPRoute) -> int | None:
        """The link's index; an existing link of another kind is never ours to touch."""
        found = ipr.link_lookup(ifname=self.name)
        if not found:
            return None
        (link,) = ipr.get_links(found[0])
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        if kind not in OUR_KINDS:
            raise OSError(f"interface {self.name} exists and is a {kind or 'physical'} link, not the agent's")
        return int(found[0])

    def addresses(self) -> set[str]:
        with IPRoute() as ipr:
            index = self._index(ipr)
            if index is None:
                return set()
            return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=socket.AF_INET)}

    def sync(self, wanted: set[str]) -> None:
        """Create the link if needed, bring it up, and hold exactly ``wanted`` (as /32s)."""
        with IPRoute() as ipr:
            index = self._index(ipr)
            if index is None:
                try:
                    ipr.link("add", ifname=self.name, kind="dummy")
                except NetlinkError as exc:
                    if exc.code != errno.EOPNOTSUPP:
                        raise
                    # A kernel without the dummy driver: an empty bridge holds local addresses just as well.
                    ipr.link("add", ifname=self.name, kind="bridge")
                    self.kind = "bridge"
                index = self._index(ipr)
                if index is None:
                    raise OSError(f"interface {self.name} vanished right after it was created")
            ipr.link("set", index=index, state="up")
            have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=socket.AF_INET)}
            for address in sorted(have - wanted):
                ipr.addr("del", index=index, address=address, prefixlen=32)
            for address in sorted(wanted - have):
                try:
                    ipr.addr("add", index=index, address=address, prefixlen=32)
                except NetlinkError as exc:
                    if exc.code != 17:  # EEXIST: raced with ourselves, fine
                        raise

    def remove(self) -> bool:
        """Delete the link (and so every address on it); False if it did not exist."""
        with IPRoute() as ipr:
            index = self._index(ipr)
            if index is None:
                return False
            ipr.link("del", index=index)
            return True
