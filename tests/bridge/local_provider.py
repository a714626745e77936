"""A test double for the device side: a ``Provider`` that runs LOCAL processes.

* exec: the command runs here (pipes, or a pty when the client asked for a
  TTY; resizes set the pty size), in ``workdir``.
* attach: a fresh ``attach_command`` (``cat``) per session: the "main
  process" echoes what it is sent.
* port-forward: pod port -> a TCP port on 127.0.0.1 (``ports``).
* logs: in-memory lines per container; ``append_log`` / ``end_log``.

Pods: ``pods`` (known, online) and ``offline`` (-> Unavailable); anything
else -> NotFound. Node-scoped calls: every node name is served (recorded in
``node_calls``) except those in ``offline_nodes`` (-> Unavailable); stats
are a fixed sample of the known pods, converted by ``cloud_bridge.stats_format``.
Everything else in the tests is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import fcntl
import os
import signal
import struct
import termios
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fleetproto as fp
from cloud_bridge import stats_format
from cloud_bridge.kubelet import (
    BadRequest,
    ByteConn,
    LogOptions,
    NotFound,
    StreamIO,
    TerminalSize,
    Unavailable,
)

Key = tuple[str, str]


@dataclass
class _Log:
    lines: list[tuple[dt.datetime, bytes]] = field(default_factory=list)
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class LocalProvider:
    def __init__(self, workdir: Path, *, attach_command: Sequence[str] = ("cat",)) -> None:
        self.workdir = workdir
        self.known: dict[Key, set[str]] = {}  # (ns, pod) -> container names
        self.pod_objects: dict[Key, dict[str, Any]] = {}
        self.offline: set[Key] = set()
        self.offline_nodes: set[str] = set()
        self.node_calls: list[tuple[str, str | None]] = []  # (call, node)
        self.ports: dict[int, int] = {}
        self.attach_command = list(attach_command)
        self.resizes: list[TerminalSize] = []
        self.exec_calls: list[tuple[str, str, str, list[str]]] = []
        self.running: set[asyncio.subprocess.Process] = set()
        self.followers = 0  # log iterators in follow mode still open
        self._logs: dict[tuple[str, str, str], _Log] = {}

    # -- test controls (call on the provider's loop) ------------------------------------

    def add_pod(self, ns: str, pod: str, containers: Sequence[str] = ("main",), obj: dict | None = None) -> None:
        self.known[(ns, pod)] = set(containers)
        if obj is not None:
            self.pod_objects[(ns, pod)] = obj

    def append_log(self, ns: str, pod: str, container: str, line: bytes, at: dt.datetime | None = None) -> None:
        log = self._logs.setdefault((ns, pod, container), _Log())
        log.lines.append((at or dt.datetime.now(dt.UTC), line))
        log.notify()

    def end_log(self, ns: str, pod: str, container: str) -> None:
        log = self._logs.setdefault((ns, pod, container), _Log())
        log.ended = True
        log.notify()

    # -- lookups ---------------------------------------------------------------------------

    def _check(self, ns: str, pod: str, container: str | None = None) -> None:
        if (ns, pod) in self.offline:
            raise Unavailable(f"device for pod {ns}/{pod} is offline")
        containers = self.known.get((ns, pod))
        if containers is None:
            raise NotFound(f'pod "{pod}" not found in namespace "{ns}" on this bridge')
        if container is not None and container not in containers:
            raise NotFound(f'container "{container}" not found in pod "{pod}"')

    # -- Provider ----------------------------------------------------------------------------

    async def exec(self, namespace: str, pod: str, container: str, command: Sequence[str], io: StreamIO) -> int:
        self._check(namespace, pod, container)
        self.exec_calls.append((namespace, pod, container, list(command)))
        if io.tty:
            return await self._run_pty(list(command), io)
        return await self._run_pipes(list(command), io)

    async def attach(self, namespace: str, pod: str, container: str, io: StreamIO) -> None:
        self._check(namespace, pod, container)
        if io.tty:
            await self._run_pty(self.attach_command, io)
        else:
            await self._run_pipes(self.attach_command, io)

    async def port_forward(self, namespace: str, pod: str, port: int, conn: ByteConn) -> None:
        self._check(namespace, pod)
        target = self.ports.get(port)
        if target is None:
            raise BadRequest(f"nothing listens on port {port} in pod {pod}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError as exc:
            raise Unavailable(f"cannot connect to port {port}: {exc}") from exc

        async def upstream() -> None:
            while data := await conn.read():
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        async def downstream() -> None:
            while data := await reader.read(65536):
                await conn.write(data)
            await conn.close_write()

        try:
            await asyncio.gather(upstream(), downstream())
        finally:
            writer.close()

    async def logs(self, namespace: str, pod: str, container: str, opts: LogOptions) -> AsyncIterator[bytes]:
        self._check(namespace, pod, container)
        log = self._logs.setdefault((namespace, pod, container), _Log())
        return self._log_lines(log, opts)

    async def _log_lines(self, log: _Log, opts: LogOptions) -> AsyncIterator[bytes]:
        def fmt(at: dt.datetime, line: bytes) -> bytes:
            if opts.timestamps:
                return at.strftime("%Y-%m-%dT%H:%M:%S.%f000Z ").encode() + line
            return line

        cutoff = None
        if opts.since_seconds is not None:
            cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=opts.since_seconds)
        elif opts.since_time is not None:
            cutoff = opts.since_time
        lines = [(at, line) for at, line in log.lines if cutoff is None or at >= cutoff]
        if opts.tail_lines is not None:
            lines = lines[len(lines) - opts.tail_lines :] if opts.tail_lines else []
        for at, line in lines:
            yield fmt(at, line)
        if not opts.follow:
            return
        seen = len(log.lines)
        self.followers += 1
        try:
            while True:
                while seen < len(log.lines):
                    yield fmt(*log.lines[seen])
                    seen += 1
                if log.ended:
                    return
                await log.changed.wait()
        finally:
            self.followers -= 1

    async def pods(self, node: str | None = None) -> list[dict[str, Any]]:
        self.node_calls.append(("pods", node))
        objs = [self.pod_objects.get(key, {"metadata": {"namespace": key[0], "name": key[1]}}) for key in self.known]
        return [o for o in objs if node is None or (o.get("spec") or {}).get("nodeName") == node]

    def _sample(self, node: str) -> tuple[fp.StatsSummary, dict[str, stats_format.PodMeta]]:
        if node in self.offline_nodes:
            raise Unavailable(f"device {node} is offline")
        known: dict[str, stats_format.PodMeta] = {}
        usages = []
        for (ns, pod), containers in sorted(self.known.items()):
            obj = self.pod_objects.get((ns, pod), {})
            if (obj.get("spec") or {}).get("nodeName") not in (None, node):
                continue
            uid = f"uid-{ns}-{pod}"
            known[uid] = stats_format.PodMeta(uid=uid, namespace=ns, name=pod)
            cs = tuple(
                fp.ContainerUsage(name=c, cpu_usage_ns=2_500_000_000, memory_working_set_bytes=4 << 20)
                for c in sorted(containers)
            )
            usages.append(fp.PodUsage(uid=uid, namespace=ns, name=pod, containers=cs))
        node_usage = fp.NodeUsage(
            cpu_usage_ns=12_500_000_000,
            memory_working_set_bytes=256 << 20,
            memory_available_bytes=768 << 20,
            fs_capacity_bytes=10 << 30,
            fs_available_bytes=4 << 30,
        )
        return fp.StatsSummary(time=1_700_000_000.0, node=node_usage, pods=tuple(usages)), known

    async def stats_summary(self, node: str) -> dict[str, Any]:
        self.node_calls.append(("stats_summary", node))
        sample, known = self._sample(node)
        return stats_format.summary_document(node, sample, known)

    async def metrics_resource(self, node: str) -> str:
        self.node_calls.append(("metrics_resource", node))
        sample, known = self._sample(node)
        return stats_format.resource_metrics_text(sample, known)

    # -- processes ----------------------------------------------------------------------------

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        """Kill the process group at once (even if we are being cancelled), then wait."""
        self.running.discard(proc)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)

    async def _run_pipes(self, command: list[str], io: StreamIO) -> int:
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE if io.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.workdir,
                start_new_session=True,
            )
        except OSError as exc:
            sink = io.stderr or io.stdout
            if sink is not None:
                await sink.write(f"exec {command[0]!r}: {exc.strerror}\n".encode())
            return 126 if isinstance(exc, PermissionError) else 127
        self.running.add(proc)
        try:
            await io.ready()  # started: now answer the upgrade
        except BaseException:
            await self._reap(proc)
            raise

        async def pump_in() -> None:
            assert io.stdin is not None and proc.stdin is not None
            try:
                while data := await io.stdin.read():
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                proc.stdin.close()

        async def pump_out(source: asyncio.StreamReader, sink: Any) -> None:
            while data := await source.read(65536):
                if sink is not None:
                    await sink.write(data)

        feeder = asyncio.create_task(pump_in()) if io.stdin else None
        try:
            assert proc.stdout is not None and proc.stderr is not None
            await asyncio.gather(pump_out(proc.stdout, io.stdout), pump_out(proc.stderr, io.stderr or io.stdout))
            return _exit_code(await proc.wait())
        finally:
            if feeder is not None:
                feeder.cancel()
                await asyncio.wait({feeder}, timeout=5)
            await self._reap(proc)

    async def _run_pty(self, command: list[str], io: StreamIO) -> int:
        master, slave = os.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_take_controlling_tty,
                env={**os.environ, "TERM": "xterm", "PS1": "$ "},
            )
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.running.add(proc)
        try:
            await io.ready()
        except BaseException:
            await self._reap(proc)
            os.close(master)
            raise

        async def pump_in() -> None:
            assert io.stdin is not None
            while data := await io.stdin.read():
                await _write_fd(master, data)

        async def pump_out() -> None:
            while data := await _read_fd(master):
                if io.stdout is not None:
                    await io.stdout.write(data)

        async def follow_resizes() -> None:
            async for size in io.resizes():
                self.resizes.append(size)
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))

        helpers = [asyncio.create_task(follow_resizes())]
        if io.stdin is not None:
            helpers.append(asyncio.create_task(pump_in()))
        output = asyncio.create_task(pump_out())
        try:
            code = _exit_code(await proc.wait())
            # The rest of the output: until EIO (slave closed everywhere), bounded.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(output), 2)
            return code
        finally:
            for task in (*helpers, output):
                task.cancel()
            try:
                await self._reap(proc)
                await asyncio.wait({*helpers, output}, timeout=5)
            finally:
                os.close(master)


def _take_controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


async def _wait_fd(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, ready)
    try:
        await fut
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


async def _read_fd(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            await _wait_fd(fd, writable=False)
        except OSError as exc:
            if exc.errno == errno.EIO:  # the pty's slave side is closed everywhere
                return b""
            raise


async def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
        except BlockingIOError:
            await _wait_fd(fd, writable=True)
