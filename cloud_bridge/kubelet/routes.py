"""Kubelet API request targets -> typed requests. Pure; no I/O.

Paths (kubelet ``pkg/kubelet/server/server.go``)::

    /healthz  /pods  /stats/summary  /metrics/resource
    /containerLogs/{ns}/{pod}/{container}
    /exec/{ns}/{pod}[/{uid}]/{container}?command=..&input=1&output=1&error=1&tty=1
    /attach/{ns}/{pod}[/{uid}]/{container}?input=1&output=1&error=1&tty=1
    /portForward/{ns}/{pod}[/{uid}]

Anything malformed raises ``RouteError`` carrying the HTTP status to answer.
Booleans accept Go's ``strconv.ParseBool`` spellings (the apiserver sends
``1`` for exec flags and ``true`` for log flags).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .provider import LogOptions

_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
MAX_QUERY_LENGTH = 64 * 1024


class RouteError(Exception):
    """Answer with HTTP ``status``, ``message`` and any extra ``headers``."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True, slots=True)
class Healthz:
    pass


@dataclass(frozen=True, slots=True)
class Pods:
    pass


@dataclass(frozen=True, slots=True)
class StatsSummary:
    pass


@dataclass(frozen=True, slots=True)
class MetricsResource:
    pass


@dataclass(frozen=True, slots=True)
class ContainerLogs:
    namespace: str
    pod: str
    container: str
    options: LogOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOptions:
    """Which streams an exec/attach client asked for (kubelet NewOptions)."""

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


@dataclass(frozen=True, slots=True)
class Exec:
    namespace: str
    pod: str
    uid: str | None
    container: str
    command: tuple[str, ...]
    streams: StreamOptions


@dataclass(frozen=True, slots=True)
class Attach:
    namespace: str
    pod: str
    uid: str | None
    container: str
    streams: StreamOptions


@dataclass(frozen=True, slots=True)
class PortForward:
    namespace: str
    pod: str
    uid: str | None
    ports: tuple[int, ...]
    """``port`` query values (WebSocket clients); SPDY sends ports per stream."""


Route = Healthz | Pods | StatsSummary | MetricsResource | ContainerLogs | Exec | Attach | PortForward
STREAMING = (Exec, Attach, PortForward)


def parse_bool(value: str, name: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RouteError(400, f"invalid boolean for query parameter {name!r}: {value!r}")


def parse_target(method: str, target: str) -> Route:
    """Parse ``method`` and the request target (path + query)."""
    if len(target) > MAX_QUERY_LENGTH:
        raise RouteError(414, "request target too long")
    parts = urlsplit(target)
    raw = parts.path
    if not raw.startswith("/"):
        raise RouteError(400, f"bad request target {target[:100]!r}")
    segments = [unquote(s) for s in raw.rstrip("/").split("/")[1:]] if raw != "/" else []
    if any(not s or "\x00" in s for s in segments):
        raise RouteError(404, f"no such path {raw!r}")
    query = _query(parts.query)
    head = segments[0] if segments else ""
    rest = segments[1:]

    if head in ("exec", "attach", "portForward"):
        if method not in ("GET", "POST"):
            raise RouteError(405, f"method {method} not allowed for /{head}")
        if head == "portForward":
            return _port_forward(rest, query)
        return _exec_or_attach(head, rest, query)
    if method != "GET":
        raise RouteError(405, f"method {method} not allowed for {raw}")
    if segments == ["healthz"]:
        return Healthz()
    if segments == ["pods"]:
        return Pods()
    if segments == ["stats", "summary"]:
        return StatsSummary()
    if segments == ["metrics", "resource"]:
        return MetricsResource()
    if head == "containerLogs":
        if len(rest) != 3:
            raise RouteError(404, "expected /containerLogs/{namespace}/{pod}/{container}")
        return ContainerLogs(rest[0], rest[1], rest[2], _log_options(query))
    raise RouteError(404, f"no such path {raw!r}")


def _query(raw: str) -> dict[str, list[str]]:
    try:
        return parse_qs(raw, keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
    except ValueError as exc:
        raise RouteError(400, f"bad query string: {exc}") from None


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _flag(query: dict[str, list[str]], name: str) -> bool:
    value = _one(query, name)
    return False if value is None or value == "" else parse_bool(value, name)


def _int(query: dict[str, list[str]], name: str, minimum: int) -> int | None:
    value = _one(query, name)
    if value is None or value == "":
        return None
    try:
        number = int(value, 10)
    except ValueError:
        raise RouteError(400, f"invalid integer for query parameter {name!r}: {value[:40]!r}") from None
    if number < minimum:
        raise RouteError(400, f"query parameter {name!r} must be at least {minimum}, got {number}")
    return number


def _log_options(query: dict[str, list[str]]) -> LogOptions:
    since_seconds = _int(query, "sinceSeconds", 1)
    since_time = None
    raw_time = _one(query, "sinceTime")
    if raw_time:
        try:
            since_time = dt.datetime.fromisoformat(raw_time)
        except ValueError:
            raise RouteError(400, f"invalid RFC3339 time for sinceTime: {raw_time[:60]!r}") from None
        if since_time.tzinfo is None:
            raise RouteError(400, "sinceTime needs a time zone (RFC3339)")
    if since_seconds is not None and since_time is not None:
        raise RouteError(400, "at most one of sinceTime or sinceSeconds may be specified")
    stream = _one(query, "stream") or None
    if stream is not None and stream not in ("All", "Stdout", "Stderr"):
        raise RouteError(400, f"stream must be All, Stdout or Stderr, got {stream[:20]!r}")
    return LogOptions(
        follow=_flag(query, "follow"),
        previous=_flag(query, "previous"),
        timestamps=_flag(query, "timestamps"),
        tail_lines=_int(query, "tailLines", 0),
        since_seconds=since_seconds,
        since_time=since_time,
        limit_bytes=_int(query, "limitBytes", 1),
        stream=stream,
    )


def _stream_options(query: dict[str, list[str]]) -> StreamOptions:
    tty = _flag(query, "tty")
    stdin, stdout, stderr = _flag(query, "input"), _flag(query, "output"), _flag(query, "error")
    if tty and stderr:
        stderr = False  # kubelet: "exec with tty and stderr is not supported, bypassing stderr"
    if not (stdin or stdout or stderr):
        raise RouteError(400, "you must specify at least 1 of stdin, stdout, stderr")
    return StreamOptions(stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)


def _exec_or_attach(kind: str, rest: list[str], query: dict[str, list[str]]) -> Exec | Attach:
    if len(rest) == 3:
        ns, pod, container = rest
        uid = None
    elif len(rest) == 4:
        ns, pod, uid, container = rest
    else:
        raise RouteError(404, f"expected /{kind}/{{namespace}}/{{pod}}[/{{uid}}]/{{container}}")
    streams = _stream_options(query)
    if kind == "attach":
        return Attach(ns, pod, uid, container, streams)
    command = tuple(query.get("command", ()))
    if not command or not command[0]:
        raise RouteError(400, "you must specify at least one command for the container")
    return Exec(ns, pod, uid, container, command, streams)


def _port_forward(rest: list[str], query: dict[str, list[str]]) -> PortForward:
    if len(rest) == 2:
        ns, pod = rest
        uid = None
    elif len(rest) == 3:
        ns, pod, uid = rest
    else:
        raise RouteError(404, "expected /portForward/{namespace}/{pod}[/{uid}]")
    ports = []
    for value in query.get("port", ()):
        for item in value.split(","):
            ports.append(parse_port(item))
    return PortForward(ns, pod, uid, tuple(ports))


def parse_port(value: str) -> int:
    try:
        port = int(value.strip(), 10)
    except ValueError:
        raise RouteError(400, f"invalid port {value[:20]!r}") from None
    if not 0 < port < 65536:
        raise RouteError(400, f"port {port} out of range 1-65535")
    return port
