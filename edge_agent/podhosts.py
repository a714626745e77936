"""Each pod's own hosts file, bind-mounted at ``/etc/hosts`` into its containers (as the kubelet does).

An engine writes every container's hosts file once, at creation; the granted
Service names (``services``) change while pods run. So the agent keeps one
file per pod, ``<data_dir>/pods/<uid>/etc-hosts``, and mounts it into each of
the pod's containers (the engine then leaves out its own). It holds:

* the lines Docker writes (localhost and the IPv6 names), then
  ``<pod IP>\\t<hostname>`` once the pod has an address: the hostname is the
  pod's ``spec.hostname``, else its name cut to 63 characters (the kubelet's
  rule; ``podspec`` gives the first container that hostname, the others
  share it through the network namespace);
* the block of Service names (``hostsfile``) while Services are enabled.

Every change is written in place (same inode), so the mounts see it at once.
Without a sandbox container the pod's address exists only once its first
container runs: that container starts with a file without the address line,
and the worker's next pass (right after the start) adds it.

hostNetwork pods share the device's network and so its names: they get
``host_network_file`` (the device's ``[services] hosts_file``) mounted
read-only when Services are enabled, so they see the Service block live as
host programs do; otherwise the engine's default (Docker: a copy of the
device's ``/etc/hosts``). The process runtime mounts nothing: its processes
read the device's hosts file directly.

All writes happen on the event loop thread: the files are a few hundred
bytes, and a single writer means a new Service table and a pod's new address
never interleave their read-modify-write.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection
from pathlib import Path

import fleetproto as fp
from edge_agent.runtime import MountSpec

from .hostsfile import replace_block, update_hosts_file, write_in_place
from .podspec import pod_hostname

log = logging.getLogger("edge_agent.podhosts")

FILE_NAME = "etc-hosts"
MOUNT_TARGET = "/etc/hosts"
HEADER = "# Pod hosts file, managed by edge-agent (rewritten when the pod's address or the Services change)."
ENGINE_LINES = (
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    "fe00::0\tip6-localnet",
    "ff00::0\tip6-mcastprefix",
    "ff02::1\tip6-allnodes",
    "ff02::2\tip6-allrouters",
)
"""What Docker writes before the container's own line (libnetwork's default records)."""


def render(hostname: str, pod_ip: str, service_lines: list[str]) -> str:
    """The whole file: header, engine lines, the pod's line (when it has an address), the Service block."""
    lines = [HEADER, *ENGINE_LINES]
    if pod_ip:
        lines.append(f"{pod_ip}\t{hostname}")
    return replace_block("".join(f"{line}\n" for line in lines), service_lines)


class PodHostsFiles:
    """The pods' hosts files under ``directory``, one subdirectory per pod uid."""

    def __init__(self, directory: Path, *, host_network_file: Path | None = None) -> None:
        self.directory = directory
        self.host_network_file = host_network_file
        self.service_lines: list[str] = []
        self._known: dict[str, tuple[str, str]] = {}
        """uid -> (hostname, pod IP) last written, to re-render on a new Service table."""
        self._texts: dict[str, str] = {}

    def path(self, uid: str) -> Path:
        return self.directory / uid / FILE_NAME

    def mount_for(self, pod: fp.DesiredPod) -> MountSpec | None:
        """What the pod's containers get at ``/etc/hosts`` (None: the engine's own), file created first."""
        if pod.host_network:
            if self.host_network_file is None:
                return None
            return MountSpec(str(self.host_network_file), MOUNT_TARGET, read_only=True)
        return MountSpec(str(self.update(pod)), MOUNT_TARGET)

    def update(self, pod: fp.DesiredPod, pod_ip: str = "") -> Path:
        """Make the pod's file current; an empty ``pod_ip`` keeps the address already written.

        A file left by an earlier agent whose address is not known yet is kept
        as it is (its Service block was brought up to date by ``set_services``).
        """
        path = self.path(pod.uid)
        known = self._known.get(pod.uid)
        if not pod_ip and known is None and path.exists():
            return path
        want = (pod_hostname(pod), pod_ip or (known[1] if known else ""))
        text = render(*want, self.service_lines)
        if self._texts.get(pod.uid) != text or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_in_place(path, text)
            self._texts[pod.uid] = text
        self._known[pod.uid] = want
        return path

    def set_services(self, lines: list[str]) -> int:
        """Put a new Service block into every pod's file; the number of files that failed (logged)."""
        self.service_lines = list(lines)
        failed = 0
        for uid in self._uids():
            path = self.path(uid)
            try:
                known = self._known.get(uid)
                if known is None:
                    update_hosts_file(path, self.service_lines)
                    continue
                text = render(*known, self.service_lines)
                if self._texts.get(uid) != text:
                    write_in_place(path, text)
                    self._texts[uid] = text
            except OSError as exc:
                failed += 1
                log.error("cannot update %s: %s", path, exc)
        return failed

    def remove(self, uid: str) -> None:
        """The pod is gone: its file goes too."""
        self._known.pop(uid, None)
        self._texts.pop(uid, None)
        shutil.rmtree(self.directory / uid, ignore_errors=True)

    def prune(self, keep: Collection[str]) -> list[str]:
        """Remove the files of pods not in ``keep`` (left by an agent that died before removing them)."""
        gone = [uid for uid in self._uids() if uid not in keep]
        for uid in gone:
            self.remove(uid)
        return gone

    def _uids(self) -> list[str]:
        try:
            return sorted(entry.name for entry in self.directory.iterdir() if (entry / FILE_NAME).is_file())
        except FileNotFoundError:
            return []
