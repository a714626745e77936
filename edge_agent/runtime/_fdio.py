"""Async reads and writes on raw file descriptors (pipes, pty masters, pidfds), plus pty setup.

A pty master is not something ``asyncio`` can wrap in a transport portably,
so all child stdio is driven with ``add_reader``/``add_writer`` directly. Reading
a master whose slave side is closed everywhere fails with ``EIO``: that is
the pty's end of file.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct
import termios

READ_SIZE = 65536


def open_pty(*, width: int = 80, height: int = 24) -> tuple[int, int]:
    """(master, slave); the master is non-blocking and not inherited by children."""
    master, slave = os.openpty()
    os.set_blocking(master, False)
    os.set_inheritable(master, False)
    set_winsize(master, width=width, height=height)
    return master, slave


def set_winsize(fd: int, *, width: int, height: int) -> None:
    """TIOCSWINSZ; the kernel sends SIGWINCH to the terminal's foreground group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def become_tty_session_leader() -> None:
    """``preexec_fn`` for a child on a pty: after ``setsid``, make stdin its controlling tty.

    Needed so Ctrl-C and window-size changes reach the child as signals.
    """
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _wait(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def wait_readable(fd: int) -> None:
    await _wait(fd, write=False)


async def read_fd(fd: int, size: int = READ_SIZE) -> bytes:
    """Up to ``size`` bytes; ``b""`` at end of file (including a pty's EIO)."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise
        await _wait(fd, write=False)


async def write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            written = 0
        view = view[written:]
        if view:
            await _wait(fd, write=True)
