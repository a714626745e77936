"""A spawned child process with raw, non-blocking stdio fds and exit detection by pidfd.

Why not ``asyncio.create_subprocess_exec``: its ``wait()`` returns only once
every stdio pipe is closed, so a background grandchild holding stdout keeps
a finished container "running". Here the exit is seen the moment the main
process ends (``pidfd_open``, Linux >= 5.3; polling elsewhere), and output
is read on its own until the pipes close.

The child runs in a new session (``setsid``). With ``tty`` its stdio is the
slave side of a fresh pty, which becomes its controlling terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence

from ._fdio import become_tty_session_leader, open_pty, read_fd, wait_readable, write_fd
from ._process_stats import session_members
from .types import Stream

READ_SIZE = 65536
POLL_INTERVAL = 0.05


def exit_status(returncode: int) -> int:
    """Popen's negative 'killed by signal N' as the shell and Docker report it: 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def kill_session(leader: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group of ``leader`` and every process in its session."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)
    for member in session_members(leader):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member.pid, sig)


class Child:
    def __init__(self, proc: subprocess.Popen[bytes], *, master: int | None) -> None:
        self.proc = proc
        self.master = master
        self.tty = master is not None
        self._stdin_fd = master if master is not None else _fd(proc.stdin)
        self._outputs: dict[Stream, int] = (
            {Stream.STDOUT: master}
            if master is not None
            else {Stream.STDOUT: _fd(proc.stdout), Stream.STDERR: _fd(proc.stderr)}
        )
        self._stdin_closed = self._stdin_fd < 0

    @classmethod
    def spawn(cls, argv: Sequence[str], *, env: dict[str, str], cwd: str, tty: bool, stdin: bool) -> Child:
        """Start ``argv``; OSError if it cannot be executed."""
        if tty:
            master, slave = open_pty()
            try:
                proc = subprocess.Popen(
                    list(argv), stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                    start_new_session=True, preexec_fn=become_tty_session_leader,
                )  # fmt: skip
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            return cls(proc, master=master)
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=cwd, start_new_session=True,
        )  # fmt: skip
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                os.set_blocking(pipe.fileno(), False)
        return cls(proc, master=None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def outputs(self) -> dict[Stream, int]:
        return dict(self._outputs)

    async def read(self, stream: Stream) -> bytes:
        """Next output bytes of ``stream``; ``b""`` once it is closed."""
        fd = self._outputs.get(stream, -1)
        if fd < 0:
            return b""
        return await read_fd(fd, READ_SIZE)

    async def write(self, data: bytes) -> None:
        if self._stdin_closed:
            raise BrokenPipeError("stdin is closed")
        await write_fd(self._stdin_fd, data)

    def close_stdin(self) -> None:
        """Close the stdin pipe (the child reads EOF). Not for a pty: send EOT instead."""
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self.master is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    async def wait(self) -> int:
        """Wait for the child itself to exit (not for its pipes); its exit status."""
        while self.proc.poll() is None:
            try:
                pidfd = os.pidfd_open(self.proc.pid)
            except (AttributeError, OSError):
                await asyncio.sleep(POLL_INTERVAL)
                continue
            try:
                await wait_readable(pidfd)
            finally:
                os.close(pidfd)
        assert self.proc.returncode is not None
        return exit_status(self.proc.returncode)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL the child's whole session (grandchildren included)."""
        kill_session(self.proc.pid)

    def close(self) -> None:
        """Release our ends of the stdio fds (after the readers are done)."""
        self._stdin_closed = True
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._outputs = {}


def _fd(pipe: object) -> int:
    fileno = getattr(pipe, "fileno", None)
    return fileno() if fileno is not None else -1
