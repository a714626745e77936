"""``ProcessRuntime``: containers as supervised host processes, for devices without an engine.

What an image means (``_process_image``):

* ``process:<program>`` - ``<program>`` (absolute path, or a name on the
  agent's ``PATH``) is the default entrypoint: ``argv = [program, *args]``.
* ``host`` - ``command`` is required: ``argv = [*command, *args]``.
* A spec ``command`` always replaces the default program (Kubernetes semantics).
  Any other image is ``ImageNotFound``.

What a container gets:

* a directory ``<data_dir>/containers/<id>/``; ``spec.files`` are written to
  ``root/<path>`` there (``/etc/app.conf`` -> ``root/etc/app.conf``); ``root``
  is also ``$HOME``, ``$EDGEFLEET_CONTAINER_ROOT`` and the default working dir
* ``working_dir`` is a host path (created if missing, as Docker does)
* environment: ``PATH`` of the agent, ``HOME``, ``HOSTNAME``,
  ``EDGEFLEET_CONTAINER_ROOT``, ``EDGEFLEET_CONTAINER_NAME`` (``TERM`` with a
  TTY), then ``spec.env`` on top; nothing else of the agent's environment
* its own session (``setsid``); with ``tty`` a pty as controlling terminal
* output in ``log`` (CRI format, see ``_process_logs``), so ``logs`` works
  with tail, since, timestamps and follow, also after the process ended

Not isolated: no namespaces or cgroups, so ``ports``, ``network_mode``,
``resources``, ``mounts`` and ``hostname`` are recorded but not enforced (a
process sees the host's files, e.g. its ``/etc/hosts``, and its hostname),
and network stats are ``None``.
Containers live as long as the runtime: ``aclose`` stops them, and a runtime
started on the same ``data_dir`` marks runs it finds unfinished as exited
(code 255, reason ``RuntimeRestarted``) after killing any survivor.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ._child import kill_session
from ._process_container import ProcessContainer
from ._process_image import build_argv, resolve_program
from ._process_logs import read_logs
from ._process_stats import dir_size, session_usage, start_ticks
from ._process_store import Record, Store, spec_extra
from .base import AttachSession, ExecSession, ProgressCallback, Runtime
from .errors import ContainerConflict, ContainerNotFound, RuntimeErrorBase
from .timefmt import datetime_to_ns, now_ns
from .types import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    OutputChunk,
    PullPolicy,
    PullProgress,
    RuntimeVersion,
)

log = logging.getLogger(__name__)
VERSION = "0.1.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessRuntimeConfig:
    data_dir: Path
    max_log_bytes: int = 10 * 1024 * 1024
    """Per log file; one rotated file is kept (kubelet's containerLogMaxSize default)."""
    attach_buffer_bytes: int = 4 * 1024 * 1024
    """An attached reader this far behind is detached rather than slowing the container."""
    drain_timeout: float = 2.0
    """After the main process exits, how long to collect output still in the pipes."""
    close_grace_seconds: float = 2.0
    """SIGTERM grace for running containers at ``aclose``."""
    follow_poll: float = 0.5
    """A log follower re-checks at least this often (it is woken on output anyway)."""


class ProcessRuntime(Runtime):
    """A ``Runtime`` whose containers are host processes under one data directory."""

    def __init__(self, config: ProcessRuntimeConfig) -> None:
        self.config = config
        self._store = Store(Path(config.data_dir))
        self._containers: dict[str, ProcessContainer] = {}
        self._creating: set[str] = set()
        self._closed = False
        for record in self._store.load_all():
            self._recover(record)
            self._containers[record.id] = self._wrap(record)

    def _wrap(self, record: Record) -> ProcessContainer:
        return ProcessContainer(
            record,
            store=self._store,
            max_log_bytes=self.config.max_log_bytes,
            attach_limit=self.config.attach_buffer_bytes,
            drain_timeout=self.config.drain_timeout,
        )

    def _recover(self, record: Record) -> None:
        if record.state != ContainerState.RUNNING.value:
            return
        if record.pid is not None and start_ticks(record.pid) == record.pid_start_ticks:
            log.warning("killing %s (pid %s) left running by a previous runtime", record.name, record.pid)
            kill_session(record.pid)
        record.state = ContainerState.EXITED.value
        record.exit_code = 255
        record.reason = "RuntimeRestarted"
        record.message = "the runtime restarted while the container ran"
        record.finished_ns = now_ns()
        record.pid = record.pid_start_ticks = None
        self._store.save(record)

    def _get(self, ref: str) -> ProcessContainer:
        if self._closed:
            raise RuntimeErrorBase("the process runtime is closed")
        found = self._containers.get(ref)
        if found is not None:
            return found
        for container in self._containers.values():
            if container.record.name == ref:
                return container
        matches = [c for cid, c in self._containers.items() if len(ref) >= 4 and cid.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise ContainerNotFound(ref)

    # --- engine and images ----------------------------------------------------

    async def version(self) -> RuntimeVersion:
        return RuntimeVersion(name="process", version=VERSION, api_version="1")

    async def ensure_image(
        self,
        image: str,
        progress_cb: ProgressCallback | None = None,
        *,
        policy: PullPolicy = PullPolicy.IF_NOT_PRESENT,
    ) -> None:
        program = resolve_program(image)  # ImageNotFound for anything not runnable
        if progress_cb is not None:
            progress_cb(PullProgress(image=image, status=f"present ({program or 'host'})"))

    # --- lifecycle ------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        if self._closed:
            raise RuntimeErrorBase("the process runtime is closed")
        argv = build_argv(spec)
        if spec.name in self._creating or any(c.record.name == spec.name for c in self._containers.values()):
            raise ContainerConflict(f"container name {spec.name!r} is already in use")
        container_id = secrets.token_hex(32)
        self._store.dir(container_id).mkdir(parents=True)
        self._creating.add(spec.name)  # the name is taken from here on, across the awaits below
        try:
            root = await asyncio.to_thread(self._store.place_files, container_id, spec)
            record = Record(
                id=container_id,
                name=spec.name,
                image=spec.image,
                argv=argv,
                env=dict(spec.env),
                working_dir=spec.working_dir or str(root),
                tty=spec.tty,
                stdin=spec.stdin,
                stdin_once=spec.stdin_once,
                labels=dict(spec.labels),
                created_ns=now_ns(),
                extra=spec_extra(spec),
            )
            self._store.save(record)
            self._containers[container_id] = self._wrap(record)
        except BaseException:
            self._store.delete(container_id)
            raise
        finally:
            self._creating.discard(spec.name)
        return container_id

    async def start(self, container_id: str) -> None:
        container = self._get(container_id)
        async with container.lock:
            await container.start()

    async def stop(self, container_id: str, grace_seconds: float = 10.0) -> None:
        container = self._get(container_id)
        async with container.lock:
            await container.stop(max(0.0, grace_seconds))

    async def remove(self, container_id: str, *, force: bool = True) -> None:
        container = self._get(container_id)
        async with container.lock:
            if container.running:
                if not force:
                    raise ContainerConflict(f"container {container.record.name} is running")
                await container.stop(0)
            await container.close()
            self._containers.pop(container.record.id, None)
            await asyncio.to_thread(self._store.delete, container.record.id)

    async def inspect(self, container_id: str) -> ContainerStatus:
        return self._get(container_id).record.status()

    async def list(self, labels: Mapping[str, str] | None = None) -> builtins.list[ContainerStatus]:
        wanted = dict(labels or {})
        return [
            c.record.status()
            for c in self._containers.values()
            if all(c.record.labels.get(k) == v for k, v in wanted.items())
        ]

    # --- I/O -----------------------------------------------------------------------

    async def logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
        timestamps: bool = False,
    ) -> AsyncIterator[OutputChunk]:
        container = self._get(container_id)
        poll = self.config.follow_poll

        async def changed(event: asyncio.Event) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), poll)

        records = read_logs(
            self._store.log_path(container.record.id),
            follow=follow,
            tail=tail,
            since_ns=datetime_to_ns(since) if since is not None else None,
            timestamps=timestamps,
            running=lambda: container.running,
            watch=container.watch,
            changed=changed,
        )
        async with contextlib.aclosing(records):
            async for chunk in records:
                yield chunk

    async def exec(
        self, container_id: str, cmd: Sequence[str], *, tty: bool = False, stdin: bool = False
    ) -> ExecSession:
        if isinstance(cmd, str) or not cmd:
            raise RuntimeErrorBase("exec needs a non-empty argument list")
        return await self._get(container_id).exec(list(cmd), tty=tty, stdin=stdin)

    async def attach(self, container_id: str, *, stdin: bool = True) -> AttachSession:
        return self._get(container_id).attach(stdin=stdin)

    async def stats(self, container_id: str) -> ContainerStats:
        container = self._get(container_id)
        pid = container.record.pid if container.running else None
        usage = await asyncio.to_thread(session_usage, pid)
        used = await asyncio.to_thread(dir_size, self._store.dir(container.record.id))
        return ContainerStats(
            timestamp=datetime.now(UTC),
            cpu_usage_ns=usage.cpu_ns,
            memory_usage_bytes=usage.rss_bytes,
            memory_working_set_bytes=usage.rss_bytes,
            memory_rss_bytes=usage.rss_bytes,
            memory_limit_bytes=None,
            net_rx_bytes=None,
            net_tx_bytes=None,
            fs_used_bytes=used,
            fs_read_bytes=usage.read_bytes,
            fs_write_bytes=usage.write_bytes,
            pids=usage.pids,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        containers = builtins.list(self._containers.values())
        await asyncio.gather(
            *(c.stop(self.config.close_grace_seconds) for c in containers if c.running),
            return_exceptions=True,
        )
        for container in containers:
            await container.close()
        self._closed = True
