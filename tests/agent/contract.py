"""The behaviour every ``Runtime`` must show, run against each real implementation.

``test_runtime_docker.py`` and ``test_runtime_process.py`` subclass
``RuntimeContract`` and provide a ``kit`` fixture. Scripts are POSIX ``sh``
(busybox in the docker image, the host's ``sh`` for processes). Every wait is
bounded, so a broken runtime fails a test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.runtime import (
    ContainerConflict,
    ContainerNotFound,
    ContainerNotRunning,
    ContainerSpec,
    ContainerStartError,
    ContainerState,
    ContainerStatus,
    FileSpec,
    ImageNotFound,
    IOSession,
    MountSpec,
    OutputChunk,
    Runtime,
    Stream,
)
from edge_agent.runtime.timefmt import ns_to_datetime, parse_ns

TIMESTAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z) (.*)$", re.S)
SECONDS_TIMESTAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z) (.*)$", re.S)


@dataclass
class Kit:
    """A runtime plus what differs between runtimes for the same test."""

    rt: Runtime
    image: str
    labels: dict[str, str]
    root: str
    """Shell expression for where ``spec.files`` land ('' for a real container)."""
    workdir: str
    """A working directory this runtime can use."""
    has_network_stats: bool
    missing_images: list[str] = field(default_factory=list)
    subsecond_log_timestamps: bool = True
    """False where the engine stamps log lines to the second only (Podman's compat API)."""
    isolated: bool = True
    """Containers have their own filesystem and hostname (False: host processes, which see the host's)."""

    def spec(self, script: str | None = None, *, command: list[str] | None = None, **kw: Any) -> ContainerSpec:
        name = kw.pop("name", None) or f"t-{uuid.uuid4().hex[:10]}"
        labels = self.labels | kw.pop("labels", {})
        if command is None:
            assert script is not None
            command = ["sh", "-c", script]
        return ContainerSpec(name=name, image=self.image, command=command, labels=labels, **kw)

    async def run(self, script: str | None = None, **kw: Any) -> str:
        container_id = await self.rt.create(self.spec(script, **kw))
        await self.rt.start(container_id)
        return container_id

    async def wait_exit(self, container_id: str, timeout: float = 20.0) -> ContainerStatus:
        async with asyncio.timeout(timeout):
            while True:
                status = await self.rt.inspect(container_id)
                if status.state is ContainerState.EXITED:
                    return status
                await asyncio.sleep(0.05)

    async def logs(self, container_id: str, timeout: float = 20.0, **kw: Any) -> list[OutputChunk]:
        out = []
        async with asyncio.timeout(timeout):
            async for chunk in self.rt.logs(container_id, **kw):
                out.append(chunk)
        return out


def lines(chunks: list[OutputChunk], stream: Stream | None = None) -> list[bytes]:
    data = b"".join(c.data for c in chunks if stream is None or c.stream is stream)
    return data.splitlines()


async def read_until(session: IOSession, needle: bytes, timeout: float = 10.0) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            chunk = await session.read()
            assert chunk is not None, f"output ended before {needle!r}; got {seen!r}"
            seen += chunk.data
    return seen


async def read_all(session: IOSession, timeout: float = 10.0) -> tuple[bytes, bytes]:
    async with asyncio.timeout(timeout):
        return await session.read_all()


async def wait(session: IOSession, timeout: float = 10.0) -> int:
    async with asyncio.timeout(timeout):
        return await session.wait()


@contextlib.asynccontextmanager
async def closing(session: IOSession) -> AsyncIterator[IOSession]:
    try:
        yield session
    finally:
        async with asyncio.timeout(15):
            await session.close()


class RuntimeContract:
    # --- lifecycle -------------------------------------------------------------

    async def test_version(self, kit: Kit) -> None:
        version = await kit.rt.version()
        assert version.name in ("docker", "podman", "process")
        assert version.version

    async def test_create_inspect_list_start(self, kit: Kit) -> None:
        spec = kit.spec("sleep 30", labels={"role": "probe"})
        cid = await kit.rt.create(spec)
        status = await kit.rt.inspect(cid)
        assert status.id == cid
        assert status.name == spec.name
        assert status.image == kit.image
        assert status.state is ContainerState.CREATED
        assert status.labels["role"] == "probe"
        assert status.started_at is None
        assert [s.id for s in await kit.rt.list(kit.labels)] == [cid]
        assert await kit.rt.list({**kit.labels, "role": "other"}) == []

        await kit.rt.start(cid)
        await kit.rt.start(cid)  # idempotent on a running container
        status = await kit.rt.inspect(cid)
        assert status.state is ContainerState.RUNNING
        assert status.pid and status.pid > 0
        assert status.started_at is not None
        assert status.exit_code is None
        assert (await kit.rt.inspect(spec.name)).id == cid  # names work as references

    async def test_stop_kills_after_grace_when_term_is_ignored(self, kit: Kit) -> None:
        cid = await kit.run("trap '' TERM; echo ready; while true; do sleep 0.2; done")
        await self._wait_for_log(kit, cid, b"ready")
        began = time.monotonic()
        await kit.rt.stop(cid, grace_seconds=1)
        took = time.monotonic() - began
        status = await kit.rt.inspect(cid)
        assert status.state is ContainerState.EXITED
        assert status.exit_code == 137, status
        assert status.reason == "Error"
        assert 0.9 <= took < 10, f"stop took {took:.2f}s with a 1s grace period"
        assert status.started_at and status.finished_at and status.started_at <= status.finished_at

    async def test_stop_graceful_term(self, kit: Kit) -> None:
        cid = await kit.run("trap 'exit 143' TERM; echo ready; while true; do sleep 0.1; done")
        await self._wait_for_log(kit, cid, b"ready")
        began = time.monotonic()
        await kit.rt.stop(cid, grace_seconds=20)
        took = time.monotonic() - began
        status = await kit.rt.inspect(cid)
        assert status.exit_code == 143, status
        assert took < 10, f"a process that handles SIGTERM took {took:.2f}s to stop"
        await kit.rt.stop(cid, grace_seconds=1)  # no-op once exited

    async def test_exit_code_and_completed_reason(self, kit: Kit) -> None:
        ok = await kit.run("exit 0")
        bad = await kit.run("exit 7")
        ok_status, bad_status = await kit.wait_exit(ok), await kit.wait_exit(bad)
        assert (ok_status.exit_code, ok_status.reason) == (0, "Completed")
        assert (bad_status.exit_code, bad_status.reason) == (7, "Error")

    async def test_spec_env_files_workdir_args(self, kit: Kit) -> None:
        script = (
            'echo "foo=$FOO"; echo "args=$0,$1"; pwd; '
            f'cat "{kit.root}/etc/app/config.yaml"; stat -c %a "{kit.root}/etc/app/run.sh"'
        )
        spec = kit.spec(
            command=["sh", "-c", script],
            args=["arg0", "arg1"],
            env={"FOO": "bar baz"},
            working_dir=kit.workdir,
            files={
                "/etc/app/config.yaml": FileSpec(b"key: value\n", 0o640),
                "/etc/app/run.sh": FileSpec(b"#!/bin/sh\n", 0o750),
            },
        )
        cid = await kit.rt.create(spec)
        await kit.rt.start(cid)
        status = await kit.wait_exit(cid)
        out = lines(await kit.logs(cid), Stream.STDOUT)
        assert status.exit_code == 0, (status, out)
        assert out == [
            b"foo=bar baz",
            b"args=arg0,arg1",
            kit.workdir.encode(),
            b"key: value",
            b"750",
        ]

    async def test_bind_mounts_and_hostname(self, kit: Kit, tmp_path: Path) -> None:
        """What the pod layer relies on for ``/etc/hosts``: a mount is the host's inode, so an in-place
        rewrite on the host shows at once; ``read_only`` holds; the hostname is set. Host processes
        (not isolated) run with such a spec and keep seeing the host's own files and name."""
        hosts = tmp_path / "etc-hosts"
        hosts.write_text("10.0.0.1\tfirst-name\n")
        extra = tmp_path / "extra"
        extra.write_text("read me\n")
        for path in (hosts, extra):
            path.chmod(0o644)
        mounts = [MountSpec(str(hosts), "/etc/hosts"), MountSpec(str(extra), "/etc/extra.conf", read_only=True)]
        cid = await kit.run("sleep 60", mounts=mounts, hostname="web-0")

        async def run(script: str) -> bytes:
            session = await kit.rt.exec(cid, ["sh", "-c", script])
            async with closing(session):
                out, err = await read_all(session)
                assert await wait(session) == 0, err
                return out

        if not kit.isolated:
            assert await run("cat /etc/hosts") == Path("/etc/hosts").read_bytes()
            assert await run("cat /proc/sys/kernel/hostname") == socket.gethostname().encode() + b"\n"
            return
        assert await run("cat /etc/hosts") == b"10.0.0.1\tfirst-name\n"
        assert await run("cat /proc/sys/kernel/hostname") == b"web-0\n"
        assert await run("cat /etc/extra.conf; echo x 2>/dev/null >> /etc/extra.conf || echo read-only") == (
            b"read me\nread-only\n"
        )
        with hosts.open("r+") as handle:  # in place: same inode
            handle.write("10.0.0.2\tsecond-name\n")
        assert await run("cat /etc/hosts") == b"10.0.0.2\tsecond-name\n"
        await run("echo '10.0.0.3\tfrom-inside' >> /etc/hosts")  # writable, and the host's file
        assert hosts.read_text() == "10.0.0.2\tsecond-name\n10.0.0.3\tfrom-inside\n"

    async def test_seccomp_default_profile_or_unconfined(self, kit: Kit) -> None:
        """The engine's default seccomp filter, or none with ``seccomp_unconfined`` (a pod's
        ``Unconfined``); an exec into the container runs under the same profile."""
        if not kit.isolated:
            return  # host processes: the process runtime applies no profile either way
        confined = await kit.run("grep '^Seccomp:' /proc/self/status; sleep 60")
        loose = await kit.run("grep '^Seccomp:' /proc/self/status; sleep 60", seccomp_unconfined=True)
        for cid, mode in ((confined, b"2"), (loose, b"0")):  # 2: a filter, 0: none
            async with asyncio.timeout(10):
                while not (out := lines(await kit.logs(cid, follow=False))):
                    await asyncio.sleep(0.05)
            assert out == [b"Seccomp:\t" + mode], out
            session = await kit.rt.exec(cid, ["grep", "^Seccomp:", "/proc/self/status"])
            async with closing(session):
                stdout, _err = await read_all(session)
                assert await wait(session) == 0
            assert stdout == b"Seccomp:\t" + mode + b"\n"

    async def test_name_conflict(self, kit: Kit) -> None:
        spec = kit.spec("true")
        await kit.rt.create(spec)
        with pytest.raises(ContainerConflict):
            await kit.rt.create(spec)

    async def test_remove_running_and_missing(self, kit: Kit) -> None:
        cid = await kit.run("sleep 60")
        await kit.rt.remove(cid)
        assert await kit.rt.list(kit.labels) == []
        with pytest.raises(ContainerNotFound):
            await kit.rt.inspect(cid)

    async def test_start_failure_is_typed(self, kit: Kit) -> None:
        cid = await kit.rt.create(kit.spec(command=["/nonexistent/program"]))
        with pytest.raises(ContainerStartError):
            await kit.rt.start(cid)
        status = await kit.rt.inspect(cid)
        assert status.reason == "StartError"
        assert status.exit_code in (126, 127)
        assert status.message and "/nonexistent/program" in status.message

    # --- logs ------------------------------------------------------------------------

    async def test_logs_streams_separated_in_order(self, kit: Kit) -> None:
        cid = await kit.run("echo o1; sleep 0.05; echo e1 >&2; sleep 0.05; echo o2; sleep 0.05; echo e2 >&2")
        await kit.wait_exit(cid)
        chunks = await kit.logs(cid)
        assert lines(chunks, Stream.STDOUT) == [b"o1", b"o2"]
        assert lines(chunks, Stream.STDERR) == [b"e1", b"e2"]
        assert lines(chunks) == [b"o1", b"e1", b"o2", b"e2"]

    async def test_logs_tail_timestamps_since(self, kit: Kit) -> None:
        cid = await kit.run("for i in 1 2 3 4 5; do echo line$i; sleep 0.05; done")
        await kit.wait_exit(cid)
        assert lines(await kit.logs(cid, tail=2)) == [b"line4", b"line5"]
        assert lines(await kit.logs(cid, tail=0)) == []
        assert len(lines(await kit.logs(cid, tail=100))) == 5

        stamped = lines(await kit.logs(cid, timestamps=True))
        assert len(stamped) == 5
        times = []
        pattern = TIMESTAMP if kit.subsecond_log_timestamps else SECONDS_TIMESTAMP
        for index, line in enumerate(stamped, start=1):
            match = pattern.match(line)
            assert match, f"no RFC 3339 timestamp prefix: {line!r}"
            assert match.group(2) == f"line{index}".encode()
            times.append(parse_ns(match.group(1)))
        assert times == sorted(times)
        if kit.subsecond_log_timestamps:
            # since is inclusive; datetime keeps microseconds, so step back one.
            since = ns_to_datetime(times[2]) - timedelta(microseconds=1)
            assert lines(await kit.logs(cid, since=since)) == [b"line3", b"line4", b"line5"]
        else:
            assert len(lines(await kit.logs(cid, since=ns_to_datetime(times[0])))) == 5
        assert lines(await kit.logs(cid, since=ns_to_datetime(times[-1]) + timedelta(seconds=5))) == []

    async def test_logs_follow_until_exit(self, kit: Kit) -> None:
        cid = await kit.run("for i in 1 2 3 4 5; do echo tick$i; sleep 0.2; done")
        began = time.monotonic()
        got = await kit.logs(cid, follow=True, timeout=20)
        assert lines(got) == [b"tick1", b"tick2", b"tick3", b"tick4", b"tick5"]
        assert time.monotonic() - began >= 0.5, "follow returned before the container finished"
        assert (await kit.rt.inspect(cid)).state is ContainerState.EXITED

    async def test_logs_follow_can_stop_early(self, kit: Kit) -> None:
        cid = await kit.run("echo first; sleep 60")
        stream = kit.rt.logs(cid, follow=True)
        async with asyncio.timeout(10):
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for chunk in stream:
                    assert chunk.data == b"first\n"
                    break

    # --- exec ------------------------------------------------------------------------

    async def test_exec_separates_streams_and_exit_code(self, kit: Kit) -> None:
        cid = await kit.run("sleep 60")
        session = await kit.rt.exec(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        async with closing(session):
            assert not session.tty
            assert await read_all(session) == (b"out\n", b"err\n")
            assert await wait(session) == 3

    async def test_exec_stdin_echo_then_eof(self, kit: Kit) -> None:
        cid = await kit.run("sleep 60")
        session = await kit.rt.exec(cid, ["cat"], stdin=True)
        async with closing(session):
            await session.write(b"hello\n")
            assert await read_until(session, b"hello\n") == b"hello\n"
            await session.close_stdin()
            assert await read_all(session) == (b"", b"")
            assert await wait(session) == 0

    async def test_exec_stdin_bulk_backpressure(self, kit: Kit) -> None:
        cid = await kit.run("sleep 60")
        session = await kit.rt.exec(cid, ["sh", "-c", "cat | wc -c"], stdin=True)
        async with closing(session):
            payload = bytes(range(256)) * 4096  # 1 MiB
            async with asyncio.timeout(20):
                await session.write(payload)
                await session.close_stdin()
            out, _ = await read_all(session)
            assert out.strip() == str(len(payload)).encode()
            assert await wait(session) == 0

    async def test_exec_tty_resize(self, kit: Kit) -> None:
        cid = await kit.run("sleep 60")
        session = await kit.rt.exec(cid, ["sh"], tty=True, stdin=True)
        async with closing(session):
            assert session.tty
            await session.resize(width=123, height=45)
            await session.write(b"stty size\n")
            await read_until(session, b"45 123")
            await session.resize(width=90, height=33)
            await session.write(b"stty size; exit 4\n")
            out, err = await read_all(session)
            assert b"33 90" in out
            assert err == b""  # a TTY merges everything into one stream
            assert await wait(session) == 4

    async def test_exec_missing_program(self, kit: Kit) -> None:
        cid = await kit.run("sleep 60")
        session = await kit.rt.exec(cid, ["no-such-program-xyz"])
        async with closing(session):
            out, err = await read_all(session)
            assert b"no-such-program-xyz" in out + err
            assert await wait(session) in (126, 127)

    async def test_concurrent_execs_keep_their_output_apart(self, kit: Kit) -> None:
        cid = await kit.run("sleep 60")

        async def one(index: int) -> tuple[bytes, bytes, int]:
            session = await kit.rt.exec(cid, ["sh", "-c", f"echo out{index}; echo err{index} >&2"])
            async with closing(session):
                out, err = await read_all(session, timeout=20)
                return out, err, await wait(session, timeout=20)

        results = await asyncio.gather(*(one(i) for i in range(12)))
        for index, result in enumerate(results):
            assert result == (f"out{index}\n".encode(), f"err{index}\n".encode(), 0)

    async def test_exec_needs_running_container(self, kit: Kit) -> None:
        cid = await kit.rt.create(kit.spec("true"))
        with pytest.raises(ContainerNotRunning):
            await kit.rt.exec(cid, ["true"])

    # --- attach ---------------------------------------------------------------------

    async def test_attach_stdin_once_eof_ends_container(self, kit: Kit) -> None:
        cid = await kit.run(command=["cat"], stdin=True, stdin_once=True)
        session = await kit.rt.attach(cid)
        async with closing(session):
            await session.write(b"ping\n")
            assert await read_until(session, b"ping\n") == b"ping\n"
            await session.close_stdin()
            assert await wait(session) == 0
        status = await kit.wait_exit(cid)
        assert status.exit_code == 0

    async def test_attach_tty_resize(self, kit: Kit) -> None:
        cid = await kit.run(command=["sh"], stdin=True, tty=True)
        session = await kit.rt.attach(cid)
        async with closing(session):
            assert session.tty
            await session.resize(width=101, height=37)
            await session.write(b"stty size\n")
            await read_until(session, b"37 101")
            await session.write(b"exit 9\n")
            assert await wait(session) == 9

    async def test_close_wakes_a_pending_read(self, kit: Kit) -> None:
        cid = await kit.run(command=["sh"], stdin=True)
        sessions = [await kit.rt.exec(cid, ["sleep", "30"]), await kit.rt.attach(cid)]
        for session in sessions:
            reader = asyncio.create_task(session.read())
            await asyncio.sleep(0.2)
            assert not reader.done(), "nothing was written, so the read must still wait"
            async with asyncio.timeout(10):
                await session.close()
                assert await reader is None

    # --- errors ---------------------------------------------------------------------

    async def test_missing_container_is_typed(self, kit: Kit) -> None:
        ref = "0" * 64
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: kit.rt.inspect(ref),
            lambda: kit.rt.start(ref),
            lambda: kit.rt.stop(ref, 1),
            lambda: kit.rt.remove(ref),
            lambda: kit.rt.stats(ref),
            lambda: kit.rt.exec(ref, ["true"]),
            lambda: kit.rt.attach(ref),
            lambda: kit.logs(ref),
        ]
        for call in calls:
            with pytest.raises(ContainerNotFound) as info:
                await call()
            assert ref in str(info.value)

    async def test_missing_image_is_typed(self, kit: Kit) -> None:
        assert kit.missing_images
        for image in kit.missing_images:
            with pytest.raises(ImageNotFound) as info:
                async with asyncio.timeout(60):
                    await kit.rt.ensure_image(image)
            assert image in str(info.value)
            spec = ContainerSpec(name=f"t-{uuid.uuid4().hex[:10]}", image=image, command=["true"], labels=kit.labels)
            with pytest.raises(ImageNotFound):
                await kit.rt.create(spec)
        await kit.rt.ensure_image(kit.image)  # present: no error

    # --- stats ------------------------------------------------------------------------

    async def test_stats_report_usage(self, kit: Kit) -> None:
        script = (
            f'dd if=/dev/zero of="{kit.root}/tmp-blob" bs=1024 count=200 2>/dev/null; '
            "echo written; i=0; while true; do i=$((i+1)); done"
        )
        cid = await kit.run(script)
        await self._wait_for_log(kit, cid, b"written")
        await asyncio.sleep(0.5)
        stats = await kit.rt.stats(cid)
        assert stats.cpu_usage_ns > 50_000_000, stats  # half a second of a busy loop
        assert stats.memory_usage_bytes > 0
        assert stats.memory_working_set_bytes > 0
        assert stats.pids is not None and stats.pids >= 1
        assert stats.fs_used_bytes is not None and stats.fs_used_bytes >= 200 * 1024
        if kit.has_network_stats:
            assert stats.net_rx_bytes is not None and stats.net_tx_bytes is not None
        later = await kit.rt.stats(cid)
        assert later.cpu_usage_ns >= stats.cpu_usage_ns  # cumulative

    # --- helpers ----------------------------------------------------------------------

    async def _wait_for_log(self, kit: Kit, cid: str, needle: bytes, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if needle in b"".join(c.data for c in await kit.logs(cid)):
                    return
                await asyncio.sleep(0.05)
