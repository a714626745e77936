"""Resource usage of a process container, read from ``/proc``.

A container is its main process's session (it is started with ``setsid``),
so usage is summed over every live process whose session id is the main
pid. CPU includes the time of children those processes already reaped
(``cutime``/``cstime``). There is no per-container network namespace, so
network counters are ``None``; disk usage is the container directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    session: int
    cpu_ticks: int
    """utime + stime + cutime + cstime"""
    start_ticks: int
    rss_pages: int


def read_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    # rest[0] is field 3 (state); field n is rest[n - 3].
    return ProcStat(
        pid=pid,
        session=int(rest[3]),
        cpu_ticks=sum(int(rest[i]) for i in (11, 12, 13, 14)),
        start_ticks=int(rest[19]),
        rss_pages=int(rest[21]),
    )


def start_ticks(pid: int) -> int | None:
    stat = read_stat(pid)
    return stat.start_ticks if stat else None


def session_members(leader: int) -> list[ProcStat]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None and stat.session == leader:
                out.append(stat)
    return out


def _io_bytes(pid: int) -> tuple[int, int]:
    read = write = 0
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "read_bytes":
                read = int(value)
            elif key == "write_bytes":
                write = int(value)
    except (OSError, ValueError):
        pass
    return read, write


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_ns: int
    rss_bytes: int
    read_bytes: int
    write_bytes: int
    pids: int


def session_usage(leader: int | None) -> Usage:
    if leader is None:
        return Usage(0, 0, 0, 0, 0)
    members = session_members(leader)
    reads = writes = 0
    for member in members:
        r, w = _io_bytes(member.pid)
        reads += r
        writes += w
    return Usage(
        cpu_ns=sum(m.cpu_ticks for m in members) * 1_000_000_000 // _TICKS,
        rss_bytes=sum(m.rss_pages for m in members) * _PAGE,
        read_bytes=reads,
        write_bytes=writes,
        pids=len(members),
    )


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total
