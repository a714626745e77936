"""On-disk state of ``ProcessRuntime``: one directory per container.

Layout under ``<data_dir>/containers/<id>/``:

* ``state.json`` - the ``Record`` below, replaced atomically on every change
* ``root/``      - the container's files (``spec.files`` land at ``root/<path>``),
                   and its default working directory
* ``log``, ``log.1`` - output in CRI log format (``_process_logs``)

The record keeps what ``start`` needs (argv, env, working dir), not the
spec's file contents, which are on disk already.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InvalidSpec
from .timefmt import ns_to_datetime
from .types import ContainerSpec, ContainerState, ContainerStatus


@dataclass(kw_only=True)
class Record:
    id: str
    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    working_dir: str
    tty: bool
    stdin: bool
    stdin_once: bool
    labels: dict[str, str]
    created_ns: int
    state: str = ContainerState.CREATED.value
    pid: int | None = None
    pid_start_ticks: int | None = None
    """Start time of ``pid`` (``/proc/<pid>/stat`` field 22) to detect pid reuse."""
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    started_ns: int | None = None
    finished_ns: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Spec parts kept for reference only (ports, resources)."""

    def status(self) -> ContainerStatus:
        state = ContainerState(self.state)
        return ContainerStatus(
            id=self.id,
            name=self.name,
            image=self.image,
            state=state,
            exit_code=self.exit_code,
            reason=self.reason,
            message=self.message,
            created_at=ns_to_datetime(self.created_ns),
            started_at=ns_to_datetime(self.started_ns) if self.started_ns else None,
            finished_at=ns_to_datetime(self.finished_ns) if self.finished_ns else None,
            labels=dict(self.labels),
            pid=self.pid if state is ContainerState.RUNNING else None,
        )


def spec_extra(spec: ContainerSpec) -> dict[str, Any]:
    return {
        "ports": [asdict(port) for port in spec.ports],
        "resources": asdict(spec.resources),
        "network_mode": spec.network_mode,
        "mounts": [asdict(mount) for mount in spec.mounts],
        "hostname": spec.hostname,
    }


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "containers"
        self.root.mkdir(parents=True, exist_ok=True)

    def dir(self, container_id: str) -> Path:
        return self.root / container_id

    def files_root(self, container_id: str) -> Path:
        return self.dir(container_id) / "root"

    def log_path(self, container_id: str) -> Path:
        return self.dir(container_id) / "log"

    def save(self, record: Record) -> None:
        path = self.dir(record.id) / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), sort_keys=True))
        os.replace(tmp, path)

    def load_all(self) -> list[Record]:
        known = {f.name for f in fields(Record)}
        records = []
        for entry in sorted(self.root.iterdir()):
            path = entry / "state.json"
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # half-created or foreign directory: not ours to interpret
            records.append(Record(**{k: v for k, v in data.items() if k in known}))
        return records

    def place_files(self, container_id: str, spec: ContainerSpec) -> Path:
        """Create ``root/`` and write the spec's files into it; the root path."""
        root = self.files_root(container_id)
        root.mkdir(parents=True, exist_ok=True)
        for path, file in spec.files.items():
            target = (root / path.lstrip("/")).resolve()
            if root.resolve() not in target.parents:
                raise InvalidSpec(f"file path {path!r} escapes the container root")
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(file.data)
            os.chmod(target, file.mode)
        return root

    def delete(self, container_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.dir(container_id))
