"""What the device is and how it is doing: node info for ``NodeHello``, conditions for ``NodeStatus``.

Linux only, from ``/proc``, ``os.statvfs`` and the socket module (no psutil:
it would be the agent's biggest dependency for a few numbers). Every reader
degrades to a default rather than raising: a missing ``/proc`` file must not
keep a device from reporting in.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import platform
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import fleetproto as fp

from . import __version__

SIOCGIFADDR = 0x8915
MAX_PODS = 110
"""The kubelet's default ``maxPods``."""

# Kubelet's default hard eviction thresholds, as condition triggers.
MEMORY_PRESSURE_BYTES = 100 * 1024 * 1024
DISK_PRESSURE_FRACTION = 0.10
PID_PRESSURE_FRACTION = 0.95


def meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    """``/proc/meminfo`` in bytes (``MemTotal``, ``MemAvailable``, ...)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[name] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


@dataclass(frozen=True, slots=True)
class DiskUsage:
    total: int
    available: int


def disk_usage(path: Path) -> DiskUsage:
    try:
        st = os.statvfs(path)
    except OSError:
        return DiskUsage(0, 0)
    return DiskUsage(total=st.f_blocks * st.f_frsize, available=st.f_bavail * st.f_frsize)


def _ipv4_of(ifname: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None  # interface without an IPv4 address
    return socket.inet_ntoa(packed[20:24])


def _ipv6_addresses(path: str = "/proc/net/if_inet6") -> list[str]:
    out = []
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 6:
                addr = ipaddress.IPv6Address(bytes.fromhex(parts[0]))
                if not (addr.is_loopback or addr.is_link_local):
                    out.append(str(addr))
    return out


def _skip_interface(name: str) -> bool:
    """Container plumbing, not the device's addresses."""
    return name == "lo" or name.startswith(("veth", "docker", "br-", "efdocker", "cni", "flannel", "podman"))


def addresses() -> list[fp.NodeAddress]:
    """InternalIP per interface (IPv4 first, then global IPv6), and the Hostname."""
    out: list[fp.NodeAddress] = []
    with contextlib.suppress(OSError):
        for _, name in socket.if_nameindex():
            if _skip_interface(name):
                continue
            ip = _ipv4_of(name)
            if ip and not ipaddress.IPv4Address(ip).is_loopback:
                out.append(fp.NodeAddress("InternalIP", ip))
    out += [fp.NodeAddress("InternalIP", ip) for ip in _ipv6_addresses()]
    if not out:
        out.append(fp.NodeAddress("InternalIP", "127.0.0.1"))
    out.append(fp.NodeAddress("Hostname", socket.gethostname()))
    return out


def primary_ip() -> str:
    return next((a.address for a in addresses() if a.type == "InternalIP"), "127.0.0.1")


def os_image() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386"}


def node_info(data_dir: Path, *, runtime: fp.RuntimeInfo, features: tuple[str, ...] = ()) -> fp.NodeInfo:
    uname = platform.uname()
    return fp.NodeInfo(
        os=uname.system.lower(),
        arch=_ARCH.get(uname.machine, uname.machine),
        kernel=uname.release,
        hostname=socket.gethostname(),
        os_image=os_image(),
        cpus=os.cpu_count() or 1,
        memory_bytes=meminfo().get("MemTotal", 0),
        disk_bytes=disk_usage(data_dir).total,
        addresses=tuple(addresses()),
        agent_version=__version__,
        runtime=runtime,
        features=features,
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
        machine_id=_read("/etc/machine-id"),
    )


def capacity(data_dir: Path) -> fp.NodeResources:
    return fp.NodeResources(
        cpu_millis=(os.cpu_count() or 1) * 1000,
        memory_bytes=meminfo().get("MemTotal", 0),
        ephemeral_storage_bytes=disk_usage(data_dir).total,
        pods=MAX_PODS,
    )


def _pid_usage() -> float:
    try:
        running = len([p for p in os.listdir("/proc") if p.isdigit()])
        limit = int(_read("/proc/sys/kernel/pid_max") or 0)
    except OSError:
        return 0.0
    return running / limit if limit else 0.0


def _condition(type_: str, bad: bool, reason_bad: str, reason_ok: str, message: str, now: float) -> fp.Condition:
    return fp.Condition(
        type=type_,
        status=fp.ConditionStatus.TRUE if bad else fp.ConditionStatus.FALSE,
        reason=reason_bad if bad else reason_ok,
        message=message,
        last_transition=now,
    )


def conditions(
    data_dir: Path, *, runtime_ok: bool, runtime_message: str = "", now: float | None = None
) -> list[fp.Condition]:
    """Ready and the pressure conditions, judged as the kubelet's defaults would."""
    now = time.time() if now is None else now
    mem = meminfo()
    available = mem.get("MemAvailable", mem.get("MemFree", 0))
    disk = disk_usage(data_dir)
    disk_low = disk.total > 0 and disk.available / disk.total < DISK_PRESSURE_FRACTION
    out = [
        fp.Condition(
            type="Ready",
            status=fp.ConditionStatus.TRUE if runtime_ok else fp.ConditionStatus.FALSE,
            reason="AgentReady" if runtime_ok else "RuntimeUnavailable",
            message="edge agent is posting ready status" if runtime_ok else runtime_message,
            last_transition=now,
        ),
        _condition(
            "MemoryPressure",
            bool(mem) and available < MEMORY_PRESSURE_BYTES,
            "AgentHasInsufficientMemory",
            "AgentHasSufficientMemory",
            f"{available // (1024 * 1024)} MiB available",
            now,
        ),
        _condition(
            "DiskPressure",
            disk_low,
            "AgentHasDiskPressure",
            "AgentHasNoDiskPressure",
            f"{disk.available // (1024 * 1024)} MiB free in {data_dir}",
            now,
        ),
        _condition(
            "PIDPressure",
            _pid_usage() > PID_PRESSURE_FRACTION,
            "AgentHasInsufficientPID",
            "AgentHasSufficientPID",
            "",
            now,
        ),
    ]
    return out


def parse_net_dev(text: str) -> list[fp.InterfaceUsage]:
    """``/proc/net/dev`` rows (after the two header lines) as counters; malformed rows are skipped."""
    out = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16 or not all(f.isdigit() for f in fields):
            continue
        rx, rx_err, tx, tx_err = (int(fields[i]) for i in (0, 2, 8, 10))
        out.append(fp.InterfaceUsage(name=name.strip(), rx_bytes=rx, tx_bytes=tx, rx_errors=rx_err, tx_errors=tx_err))
    return out


def host_interfaces(
    proc_net_dev: str = "/proc/net/dev", sys_class_net: str = "/sys/class/net"
) -> tuple[fp.InterfaceUsage, ...]:
    """The node's network interfaces for stats: those backed by a device (not loopback,
    bridges or veths of containers); all but ``lo`` if none is (e.g. inside a container)."""
    try:
        rows = parse_net_dev(Path(proc_net_dev).read_text())
    except OSError:
        return ()
    physical = [r for r in rows if Path(sys_class_net, r.name, "device").exists()]
    return tuple(physical or [r for r in rows if r.name != "lo"])


def node_usage(data_dir: Path) -> fp.NodeUsage:
    """Node-level usage for ``StatsSummary``: CPU from ``/proc/stat``, memory, the data dir's disk."""
    cpu_ns = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))  # minus idle, iowait
        cpu_ns = ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    mem = meminfo()
    total = mem.get("MemTotal", 0)
    available = mem.get("MemAvailable", 0)
    disk = disk_usage(data_dir)
    return fp.NodeUsage(
        cpu_usage_ns=cpu_ns,
        memory_working_set_bytes=max(0, total - available),
        memory_available_bytes=available,
        fs_capacity_bytes=disk.total,
        fs_available_bytes=disk.available,
        interfaces=host_interfaces(),
    )


def shares_our_netns(pid: int) -> bool:
    """Whether ``pid`` lives in the agent's own network namespace (host network, process runtime)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def netns_addresses(pid: int) -> list[str]:
    """IPv4 addresses of the network namespace of ``pid`` (the pod IP), from its ``fib_trie``.

    Read through ``/proc/<pid>/net``, which shows the namespace of that process,
    so it works for any runtime without asking it.
    """
    out: list[str] = []
    try:
        lines = Path(f"/proc/{pid}/net/fib_trie").read_text().splitlines()
    except OSError:
        return out
    last = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif stripped == "/32 host LOCAL" and last and not last.startswith("127.") and last not in out:
            out.append(last)
    return out
