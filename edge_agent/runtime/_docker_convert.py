"""Translate between runtime types and Docker Engine API JSON.

Pure functions, no I/O: a spec becomes the ``POST /containers/create``
body plus a tar of its files, inspect/stats JSON becomes
``ContainerStatus``/``ContainerStats``. Works for cgroup v1 and v2 stats.
"""

from __future__ import annotations

import io
import posixpath
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidSpec
from .timefmt import parse_docker_time
from .types import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    FileSpec,
)

_STATES = {
    "created": ContainerState.CREATED,
    "configured": ContainerState.CREATED,  # podman: created, storage not yet set up
    "running": ContainerState.RUNNING,
    "paused": ContainerState.RUNNING,
    "restarting": ContainerState.RUNNING,
    "stopping": ContainerState.RUNNING,  # podman: still running, stop in progress
    "exited": ContainerState.EXITED,
    "stopped": ContainerState.EXITED,  # podman: exited, cleanup pending
    "dead": ContainerState.EXITED,
    "removing": ContainerState.EXITED,
}


def container_config(spec: ContainerSpec) -> dict[str, Any]:
    """The body of ``POST /containers/create`` (the fields the docker SDK sent, same values)."""
    config: dict[str, Any] = {
        "Image": spec.image,
        "Hostname": spec.hostname,
        # Kubernetes semantics: command replaces ENTRYPOINT (Docker then drops
        # the image's CMD as well), args replaces CMD.
        "Entrypoint": list(spec.command) or None,
        "Cmd": list(spec.args) or None,
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "WorkingDir": spec.working_dir,
        "Labels": dict(spec.labels),
        "Tty": spec.tty,
        "OpenStdin": spec.stdin,
        "StdinOnce": spec.stdin_once,
        "AttachStdin": spec.stdin,
        "AttachStdout": True,
        "AttachStderr": True,
        "NetworkDisabled": False,
        "ExposedPorts": {f"{port.container_port}/{port.protocol}": {} for port in spec.ports} or None,
        "HostConfig": host_config(spec),
    }
    return {key: value for key, value in config.items() if value is not None}


def host_config(spec: ContainerSpec) -> dict[str, Any]:
    """``HostConfig`` of the create body: port bindings, bind mounts, limits, network mode."""
    config: dict[str, Any] = {"NetworkMode": spec.network_mode or "default"}
    if spec.mounts:
        # ``Binds`` (not ``Mounts``): the form both Docker and Podman's compat API have always taken.
        # A mount at /etc/hosts makes the engine skip its own hosts file for the container.
        config["Binds"] = [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.mounts]
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in spec.ports:
        if port.host_port is not None:
            key = f"{port.container_port}/{port.protocol}"
            bindings.setdefault(key, []).append({"HostIp": port.host_ip or "", "HostPort": str(port.host_port)})
    if bindings:
        if spec.network_mode == "host":
            raise InvalidSpec("host ports make no sense with host networking (the container uses the host's ports)")
        config["PortBindings"] = bindings
    if spec.seccomp_unconfined:
        config["SecurityOpt"] = ["seccomp=unconfined"]
    res = spec.resources
    if res.memory_limit_bytes is not None:
        config["Memory"] = res.memory_limit_bytes
        config["MemorySwap"] = res.memory_limit_bytes  # no swap beyond the limit, as kubelet
    if res.cpu_limit is not None:
        config["NanoCpus"] = int(res.cpu_limit * 1e9)
    if res.cpu_request is not None:
        config["CpuShares"] = max(2, int(res.cpu_request * 1024))
    return config


def files_tar(files: Mapping[str, FileSpec]) -> bytes:
    """A tar to extract at ``/``: each file with its mode, owned by root.

    Parent directories are listed explicitly (mode 0755) so they exist even in
    an image that lacks them.
    """
    import tarfile  # only pods with files need it (0.3 MB resident)

    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen: set[str] = set()
        for path in sorted(files):
            rel = path.lstrip("/")
            parent = posixpath.dirname(rel)
            chain: list[str] = []
            while parent and parent not in seen:
                chain.append(parent)
                parent = posixpath.dirname(parent)
            for directory in reversed(chain):
                seen.add(directory)
                info = tarfile.TarInfo(directory)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                info.mtime = int(now)
                tar.addfile(info)
            spec = files[path]
            info = tarfile.TarInfo(rel)
            info.size = len(spec.data)
            info.mode = spec.mode
            info.mtime = int(now)
            tar.addfile(info, io.BytesIO(spec.data))
    return buf.getvalue()


def familiar_image(name: str) -> str:
    """``docker.io/library/x`` -> ``x``, ``docker.io/a/b`` -> ``a/b``: the name as Docker shows it.

    Podman reports the fully qualified name it resolved a short name to; Docker
    the name as given. Both then report ``edgefleet/busybox:test``.
    """
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def status_from_inspect(data: Mapping[str, Any]) -> ContainerStatus:
    state = data.get("State") or {}
    config = data.get("Config") or {}
    raw = str(state.get("Status", "")).lower()
    mapped = _STATES.get(raw, ContainerState.UNKNOWN)
    exit_code: int | None = None
    reason: str | None = None
    if mapped is ContainerState.EXITED:
        exit_code = int(state.get("ExitCode", 0))
        if state.get("OOMKilled"):
            reason = "OOMKilled"
        elif exit_code == 0:
            reason = "Completed"
        else:
            reason = "Error"
    elif mapped is ContainerState.CREATED and state.get("Error"):
        exit_code = int(state.get("ExitCode", 0)) or None
        reason = "StartError"
    pid = int(state.get("Pid") or 0) or None
    return ContainerStatus(
        id=data["Id"],
        name=str(data.get("Name", "")).lstrip("/"),
        image=familiar_image(str(config.get("Image", ""))),
        state=mapped,
        exit_code=exit_code,
        reason=reason,
        message=state.get("Error") or None,
        created_at=parse_docker_time(data.get("Created")),
        started_at=parse_docker_time(state.get("StartedAt")),
        finished_at=parse_docker_time(state.get("FinishedAt")),
        labels=dict(config.get("Labels") or {}),
        pid=pid if mapped is ContainerState.RUNNING else None,
    )


def status_from_list(item: Mapping[str, Any]) -> ContainerStatus:
    """Cheap status from ``GET /containers/json`` (no times or exit code there)."""
    names = item.get("Names") or [""]
    return ContainerStatus(
        id=item["Id"],
        name=str(names[0]).lstrip("/"),
        image=familiar_image(str(item.get("Image", ""))),
        state=_STATES.get(str(item.get("State", "")).lower(), ContainerState.UNKNOWN),
        created_at=datetime.fromtimestamp(int(item.get("Created", 0)), UTC),
        labels=dict(item.get("Labels") or {}),
    )


def _blkio(stats: Mapping[str, Any]) -> tuple[int | None, int | None]:
    entries = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive")
    if entries is None:
        return None, None
    read = write = 0
    for entry in entries:
        op = str(entry.get("op", "")).lower()
        if op == "read":
            read += int(entry.get("value", 0))
        elif op == "write":
            write += int(entry.get("value", 0))
    return read, write


def stats_from_docker(stats: Mapping[str, Any], *, size_rw: int | None) -> ContainerStats:
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    memory = stats.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    usage = int(memory.get("usage", 0))
    # Working set as cAdvisor computes it: usage minus inactive page cache.
    inactive = int(detail.get("total_inactive_file", detail.get("inactive_file", 0)))
    rss = detail.get("total_rss", detail.get("rss", detail.get("anon")))
    limit = memory.get("limit")
    networks = stats.get("networks")
    rx = tx = None
    if networks is not None:
        rx = sum(int(n.get("rx_bytes", 0)) for n in networks.values())
        tx = sum(int(n.get("tx_bytes", 0)) for n in networks.values())
    read, write = _blkio(stats)
    pids = (stats.get("pids_stats") or {}).get("current")
    when = parse_docker_time(stats.get("read")) or datetime.now(UTC)
    return ContainerStats(
        timestamp=when,
        cpu_usage_ns=int(cpu.get("total_usage", 0)),
        memory_usage_bytes=usage,
        memory_working_set_bytes=max(0, usage - inactive),
        memory_rss_bytes=int(rss) if rss is not None else None,
        memory_limit_bytes=int(limit) if limit else None,
        net_rx_bytes=rx,
        net_tx_bytes=tx,
        fs_used_bytes=size_rw,
        fs_read_bytes=read,
        fs_write_bytes=write,
        pids=int(pids) if pids is not None else None,
    )
