"""Container output on disk in the CRI log format, and reading it back.

One record per line: ``<RFC3339Nano> <stdout|stderr> <F|P> <content>\\n``
(the format kubelet reads from containerd and CRI-O). ``F`` ends a line of
the program's output; ``P`` is a piece of a line written as it came (a
prompt, a progress bar), continued by later records. Output is written when
it arrives, never held back waiting for a newline.

``tail`` counts lines (records up to an ``F``), ``since`` compares record
times at full nanosecond precision, and ``timestamps`` puts each record's
time in front of its content, as the kubelet does. Rotation keeps one old
file: ``log`` -> ``log.1`` before a write would take ``log`` past its limit.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .timefmt import format_ns, now_ns, parse_ns
from .types import OutputChunk, Stream

_NAMES = {Stream.STDOUT: b"stdout", Stream.STDERR: b"stderr"}
_STREAMS = {b"stdout": Stream.STDOUT, b"stderr": Stream.STDERR}


@dataclass(frozen=True, slots=True)
class LogRecord:
    time_ns: int
    stream: Stream
    full: bool
    content: bytes

    def render(self, *, timestamps: bool) -> OutputChunk:
        data = self.content + b"\n" if self.full else self.content
        if timestamps:
            data = format_ns(self.time_ns).encode() + b" " + data
        return OutputChunk(self.stream, data)


def encode(stream: Stream, data: bytes, time_ns: int) -> bytes:
    """The records for one chunk of output."""
    stamp = format_ns(time_ns).encode()
    name = _NAMES[stream]
    parts = data.split(b"\n")
    out = [b"%s %s F %s\n" % (stamp, name, line) for line in parts[:-1]]
    if parts[-1]:
        out.append(b"%s %s P %s\n" % (stamp, name, parts[-1]))
    return b"".join(out)


def parse_line(line: bytes) -> LogRecord | None:
    """One record (without its newline); None for a malformed line."""
    pieces = line.split(b" ", 3)
    if len(pieces) < 3 or pieces[1] not in _STREAMS or pieces[2] not in (b"F", b"P"):
        return None
    try:
        stamp = parse_ns(pieces[0])
    except ValueError:
        return None
    return LogRecord(stamp, _STREAMS[pieces[1]], pieces[2] == b"F", pieces[3] if len(pieces) == 4 else b"")


class LogWriter:
    """Appends records; synchronous, small writes on the event loop thread."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, stream: Stream, data: bytes) -> None:
        if not data or self._fd < 0:
            return
        blob = encode(stream, data, now_ns())
        if self._size and self._size + len(blob) > self.max_bytes:
            self._rotate()
        os.write(self._fd, blob)
        self._size += len(blob)

    def _rotate(self) -> None:
        os.close(self._fd)
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Tailer:
    """Reads whole records from an open log file, following it across rotation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._partial = b""

    def _open(self) -> bool:
        try:
            self._file = self.path.open("rb")
        except FileNotFoundError:
            return False
        self._partial = b""
        return True

    def read_available(self) -> list[LogRecord]:
        if self._file is None and not self._open():
            return []
        assert self._file is not None
        out = self._drain(self._file)
        if self._rotated():
            self._file.close()
            self._file = None
            if self._open():
                out += self._drain(self._file)
        return out

    def _drain(self, file: BinaryIO | None) -> list[LogRecord]:
        if file is None:
            return []
        data = self._partial + file.read()
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [rec for line in lines if (rec := parse_line(line)) is not None]

    def _rotated(self) -> bool:
        assert self._file is not None
        try:
            return os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _read_rotated(path: Path) -> list[LogRecord]:
    old = path.with_name(path.name + ".1")
    try:
        data = old.read_bytes()
    except FileNotFoundError:
        return []
    return [rec for line in data.split(b"\n") if line and (rec := parse_line(line)) is not None]


def _tail(records: list[LogRecord], lines: int) -> list[LogRecord]:
    if lines <= 0:
        return []
    # Walk back over `lines` line ends; a trailing unfinished line counts as one.
    count = 0
    start = len(records)
    for index in range(len(records) - 1, -1, -1):
        if records[index].full or index == len(records) - 1:
            if count == lines:
                break
            count += 1
        start = index
    return records[start:]


async def read_logs(
    path: Path,
    *,
    follow: bool,
    tail: int | None,
    since_ns: int | None,
    timestamps: bool,
    running: Callable[[], bool],
    watch: Callable[[], asyncio.Event],
    changed: Callable[[asyncio.Event], Awaitable[None]],
) -> AsyncGenerator[OutputChunk, None]:
    """Yield the log, then (``follow``) new records until ``running()`` turns false.

    ``watch()`` gives an event set at the next change; it is taken *before*
    each read, and ``changed(event)`` waits for it (or a poll interval), so no
    write between the read and the wait goes unnoticed.
    """
    tailer = _Tailer(path)

    def initial() -> list[LogRecord]:
        return _read_rotated(path) + tailer.read_available()

    def keep(records: Iterable[LogRecord]) -> list[LogRecord]:
        return [r for r in records if since_ns is None or r.time_ns >= since_ns]

    try:
        records = keep(await asyncio.to_thread(initial))
        if tail is not None:
            records = _tail(records, tail)
        for record in records:
            yield record.render(timestamps=timestamps)
        while follow:
            # Take the event and check liveness *before* reading: output written
            # before the exit was recorded is then always seen.
            event = watch()
            alive = running()
            for record in keep(tailer.read_available()):
                yield record.render(timestamps=timestamps)
            if not alive:
                return
            await changed(event)
    finally:
        tailer.close()
