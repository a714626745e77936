"""Drive an interactive program (``kubectl exec -it``) through a real pseudo-terminal.

Every read has a deadline, so a hung peer fails a test with what was seen so
far instead of hanging it. The window size is set on the pty with
``TIOCSWINSZ``. The child runs in a new session without a controlling
terminal (so it cannot touch the caller's), hence the kernel does not signal
it on a size change: ``resize`` sends ``SIGWINCH`` itself.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Sequence


class TerminalTimeout(AssertionError):
    """Expected output did not arrive in time; the message holds what did."""


class PtyProcess:
    """A child process whose stdin/stdout/stderr are the slave side of a fresh pty."""

    def __init__(
        self, cmd: Sequence[str], *, env: dict[str, str] | None = None, rows: int = 24, cols: int = 80
    ) -> None:
        self.master, slave = os.openpty()
        self._set_size(slave, rows, cols)
        try:
            self.proc = subprocess.Popen(
                list(cmd), stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
            )
        except BaseException:
            os.close(self.master)
            raise
        finally:
            os.close(slave)
        self.output = bytearray()
        """Everything read so far (``expect`` consumes from ``_pos``)."""
        self._pos = 0
        self._eof = False

    @staticmethod
    def _set_size(fd: int, rows: int, cols: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def resize(self, rows: int, cols: int) -> None:
        """New window size on the pty, then SIGWINCH so the child reads it."""
        self._set_size(self.master, rows, cols)
        self.proc.send_signal(signal.SIGWINCH)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.master, view)
            view = view[written:]

    def _read_some(self, timeout: float) -> bool:
        """Append what is readable within ``timeout``; False at EOF (the child closed the pty)."""
        if self._eof:
            return False
        ready, _, _ = select.select([self.master], [], [], max(timeout, 0))
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every slave fd is closed
            chunk = b""
        if not chunk:
            self._eof = True
            return False
        self.output += chunk
        return True

    def expect(self, pattern: bytes | re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        """Wait for ``pattern`` in the output after the previous match; consume through it."""
        regex = re.compile(re.escape(pattern)) if isinstance(pattern, bytes) else pattern
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output, self._pos)
            if match:
                self._pos = match.end()
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._eof:
                seen = bytes(self.output[self._pos :])
                state = "EOF" if self._eof else f"timeout {timeout}s"
                raise TerminalTimeout(f"{state} waiting for {regex.pattern!r}; unread output: {seen!r}")
            self._read_some(min(remaining, 0.5))

    def read_until_eof(self, timeout: float) -> bytes:
        """The remaining output up to the child's close of the pty."""
        deadline = time.monotonic() + timeout
        while self._read_some(min(deadline - time.monotonic(), 0.5)):
            if time.monotonic() >= deadline:
                raise TerminalTimeout(f"no EOF within {timeout}s; unread output: {bytes(self.output[self._pos :])!r}")
        rest = bytes(self.output[self._pos :])
        self._pos = len(self.output)
        return rest

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """Kill the child if it still runs; close the pty. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def __enter__(self) -> PtyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
