"""One process container: its record, its live process and the task supervising it.

Life of a run: ``start`` spawns the main process in a new session (on pipes,
or on a pty with the pty as controlling terminal); the supervisor task
copies output to the log and to attached readers, waits for the main
process, then - as an engine tearing down a container - kills whatever is
left of its session and its execs, records the exit and wakes waiters.

Exit codes follow Docker: the process's code, or 128+N if signal N killed it.
``stop`` signals the main process only (SIGTERM), like Docker, and the whole
session with SIGKILL once the grace period is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket

from ._child import Child
from ._fdio import set_winsize
from ._process_logs import LogWriter
from ._process_session import ProcessAttachSession, ProcessExecSession, Subscriber
from ._process_stats import start_ticks
from ._process_store import Record, Store
from .base import AttachSession, ExecSession
from .errors import ContainerNotRunning, ContainerStartError, RuntimeErrorBase
from .timefmt import now_ns
from .types import ContainerState, OutputChunk, Stream

log = logging.getLogger(__name__)
EOT = b"\x04"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ProcessContainer:
    def __init__(
        self,
        record: Record,
        *,
        store: Store,
        max_log_bytes: int,
        attach_limit: int,
        drain_timeout: float,
    ) -> None:
        self.record = record
        self._store = store
        self._max_log_bytes = max_log_bytes
        self._attach_limit = attach_limit
        self._drain_timeout = drain_timeout
        self.lock = asyncio.Lock()
        self._child: Child | None = None
        self._stdin_open = False
        self._supervisor: asyncio.Task[None] | None = None
        self._exited = asyncio.Event()
        self._exited.set()
        self._changed = asyncio.Event()
        self._subscribers: set[Subscriber] = set()
        self._execs: set[ProcessExecSession] = set()

    # --- state -------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.record.state == ContainerState.RUNNING.value

    def watch(self) -> asyncio.Event:
        """An event set at the next change (output or state); take it before reading."""
        return self._changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _save(self) -> None:
        self._store.save(self.record)
        self._notify()

    def environment(self) -> dict[str, str]:
        root = str(self._store.files_root(self.record.id))
        base = {
            "PATH": os.environ.get("PATH", DEFAULT_PATH),
            "HOME": root,
            "HOSTNAME": socket.gethostname(),
            "EDGEFLEET_CONTAINER_ROOT": root,
            "EDGEFLEET_CONTAINER_NAME": self.record.name,
        }
        if self.record.tty:
            base["TERM"] = "xterm"
        return base | self.record.env

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        rec = self.record
        if self.running:
            return
        cwd = rec.working_dir
        try:
            os.makedirs(cwd, exist_ok=True)
            child = Child.spawn(rec.argv, env=self.environment(), cwd=cwd, tty=rec.tty, stdin=rec.stdin)
        except OSError as exc:
            now = now_ns()
            rec.state = ContainerState.EXITED.value
            rec.exit_code = 127 if exc.errno == errno.ENOENT else 126
            rec.reason = "StartError"
            rec.message = f"cannot run {rec.argv[0]!r} in {cwd}: {exc}"
            rec.started_ns = rec.finished_ns = now
            rec.pid = rec.pid_start_ticks = None
            self._save()
            raise ContainerStartError(f"container {rec.name}: {rec.message}") from exc
        writer = LogWriter(self._store.log_path(rec.id), max_bytes=self._max_log_bytes)
        self._child = child
        self._stdin_open = rec.stdin
        self._exited = asyncio.Event()
        rec.state = ContainerState.RUNNING.value
        rec.pid = child.pid
        rec.pid_start_ticks = start_ticks(child.pid)
        rec.started_ns = now_ns()
        rec.finished_ns = rec.exit_code = rec.reason = rec.message = None
        self._save()
        self._supervisor = asyncio.create_task(
            self._supervise(child, writer), name=f"process-runtime:{rec.name}:{child.pid}"
        )
        self._supervisor.add_done_callback(self._supervisor_done)

    def _supervisor_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("supervisor of %s failed", self.record.name, exc_info=task.exception())

    async def _supervise(self, child: Child, writer: LogWriter) -> None:
        pumps = [
            asyncio.create_task(self._pump(child, stream, writer), name=f"{self.record.name}:{stream.name}")
            for stream in child.outputs()
        ]
        code: int | None = None
        try:
            code = await child.wait()
            # The main process is gone: take down the rest, as an engine does
            # when a container's pid 1 exits, then collect the last output.
            child.kill_all()
            for session in list(self._execs):
                session.kill()
            await asyncio.wait(pumps, timeout=self._drain_timeout)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            writer.close()
            child.close()
            self._finish(code)

    def _finish(self, code: int | None) -> None:
        rec = self.record
        self._child = None
        self._stdin_open = False
        rec.state = ContainerState.EXITED.value
        rec.exit_code = code if code is not None else 255
        rec.reason = "Completed" if code == 0 else "Error"
        rec.finished_ns = now_ns()
        rec.pid = rec.pid_start_ticks = None
        self._save()
        for subscriber in list(self._subscribers):
            subscriber.push(None)
        self._subscribers.clear()
        self._exited.set()

    def _emit(self, stream: Stream, data: bytes, writer: LogWriter) -> None:
        writer.write(stream, data)
        chunk = OutputChunk(stream, data)
        for subscriber in list(self._subscribers):
            if not subscriber.push(chunk):
                self._subscribers.discard(subscriber)
                log.warning("attach reader of %s fell behind; detached it", self.record.name)
        self._notify()

    async def _pump(self, child: Child, stream: Stream, writer: LogWriter) -> None:
        while data := await child.read(stream):
            self._emit(stream, data, writer)

    async def wait_exit(self) -> int:
        await self._exited.wait()
        code = self.record.exit_code
        return code if code is not None else 255

    async def stop(self, grace_seconds: float) -> None:
        child = self._child
        if child is None or not self.running:
            return
        if grace_seconds > 0:
            child.signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), grace_seconds)
        if not self._exited.is_set():
            child.kill_all()
            try:
                await asyncio.wait_for(self._exited.wait(), 10)
            except TimeoutError:
                raise RuntimeErrorBase(f"container {self.record.name} did not die after SIGKILL") from None

    async def close(self) -> None:
        """Stop supervising (used at runtime shutdown, after stop)."""
        for session in list(self._execs):
            await session.close()
        if self._supervisor is not None and not self._supervisor.done():
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor

    # --- I/O --------------------------------------------------------------------

    async def exec(self, argv: list[str], *, tty: bool, stdin: bool) -> ExecSession:
        if not self.running:
            raise ContainerNotRunning(self.record.id)
        session = ProcessExecSession.spawn(
            argv, env=self.environment(), cwd=self.record.working_dir, tty=tty, stdin=stdin
        )
        if isinstance(session, ProcessExecSession):
            self._execs.add(session)
            session.on_close(self._execs.discard)
        return session

    def attach(self, *, stdin: bool) -> AttachSession:
        if not self.running:
            raise ContainerNotRunning(self.record.id)
        subscriber = Subscriber(self._attach_limit)
        self._subscribers.add(subscriber)
        return ProcessAttachSession(
            tty=self.record.tty,
            subscriber=subscriber,
            stdin=stdin and self.record.stdin,
            write=self._write_stdin,
            close_stdin=self._attach_closed_stdin,
            resize=self._resize,
            wait=self.wait_exit,
            detach=self._subscribers.discard,
        )

    async def _write_stdin(self, data: bytes) -> None:
        child = self._child
        if child is None or not self._stdin_open:
            raise RuntimeErrorBase(f"stdin of container {self.record.name} is closed")
        try:
            await child.write(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise RuntimeErrorBase(f"stdin of container {self.record.name} closed: {exc}") from exc

    async def _attach_closed_stdin(self) -> None:
        """An attached client ended its input: the container's stdin ends only with stdin_once."""
        child = self._child
        if child is None or not (self.record.stdin_once and self._stdin_open):
            return
        if child.tty:
            with contextlib.suppress(OSError):
                await child.write(EOT)
        child.close_stdin()
        self._stdin_open = False

    def _resize(self, width: int, height: int) -> None:
        if self._child is not None and self._child.master is not None:
            set_winsize(self._child.master, width=width, height=height)
