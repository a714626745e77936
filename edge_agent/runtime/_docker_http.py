"""A small blocking client for the Docker Engine API (also Podman's compat API).

Why not the ``docker`` SDK: it drags in ``requests``/``urllib3`` and friends,
about 7 MB of resident memory on a device where the whole agent should fit in
35 MB, to send a dozen kinds of JSON requests. ``http.client`` is already
loaded (the MQTT client imports it), so this costs next to nothing.

* ``EngineClient.call`` - one request, JSON (or nothing) back, one connection
  per call (a unix socket connect is far cheaper than the request itself).
* ``EngineClient.stream`` - a response read piecewise (logs, pull progress);
  ``EngineStream.abort`` unblocks a thread stuck reading it.
* ``EngineClient.upgrade`` - the ``Upgrade: tcp`` hijack for exec/attach,
  done by hand so bytes arriving with the ``101`` headers are kept.

Errors: ``EngineError`` for an HTTP error status (with the daemon's message),
``OSError``/``http.client.HTTPException`` for transport trouble; the runtime
maps both onto its typed errors (``_docker_errors``).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

MAX_HEAD = 64 * 1024
READ_SIZE = 65536


class EngineError(Exception):
    """The engine answered with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def parse_repository_tag(image: str) -> tuple[str, str | None]:
    """``repo:tag`` / ``repo@digest`` -> (repo, tag or digest); a registry port is not a tag."""
    repo, at, digest = image.rpartition("@")
    if at:
        return repo, digest
    repo, colon, tag = image.rpartition(":")
    if colon and "/" not in tag:
        return repo, tag
    return image, None


def path(template: str, *parts: str) -> str:
    """``template`` with each ``{}`` replaced by a URL-quoted part."""
    return template.format(*(quote(part, safe="") for part in parts))


class EngineStream:
    """A response body read in pieces by one thread; ``abort`` may be called from another."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._response = response
        self._sock = conn.sock

    def settimeout(self, timeout: float | None) -> None:
        if self._sock is not None:
            self._sock.settimeout(timeout)

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives (chunked encoding removed)."""
        try:
            while True:
                data = self._response.read1(READ_SIZE)
                if not data:
                    return
                yield data
        finally:
            self.close()

    def lines(self) -> Iterator[bytes]:
        """Newline-separated records (pull progress JSON), blank lines skipped."""
        buffer = b""
        for data in self.chunks():
            buffer += data
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                if line.strip():
                    yield line
        if buffer.strip():
            yield buffer

    def abort(self) -> None:
        """Unblock a reader (shutdown wakes a blocked recv; close alone does not)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._response.close()
        with contextlib.suppress(Exception):
            self._conn.close()


class Upgraded:
    """A hijacked connection: the socket and the bytes that came with the ``101`` headers."""

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self.leftover = leftover


class EngineClient:
    """Blocking Engine API calls; thread-safe (no shared connection)."""

    def __init__(self, base_url: str, *, api_version: str | None = None, timeout: float = 60.0) -> None:
        url = urlsplit(base_url)
        if url.scheme == "unix":
            self._unix_path: str | None = url.path or url.netloc
            self._host, self._port = "localhost", 80
        elif url.scheme in ("tcp", "http"):
            self._unix_path = None
            self._host, self._port = url.hostname or "localhost", url.port or 2375
        else:
            raise ValueError(f"unsupported docker host {base_url!r} (use unix:///path or tcp://host:port)")
        self.base_url = base_url
        self.timeout = timeout
        self._api_version = api_version
        self._version_lock = threading.Lock()
        self._auth = _RegistryAuth()

    # --- plumbing ---------------------------------------------------------

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._unix_path is not None:
            return _UnixConnection(self._unix_path, timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    @property
    def api_version(self) -> str:
        """The version prefix for requests; negotiated once (the daemon's own, as the docker CLI does)."""
        with self._version_lock:
            if self._api_version is None:
                info = self.call("GET", "/version", versioned=False)
                self._api_version = str(info["ApiVersion"])
            return self._api_version

    def _target(self, url_path: str, params: Mapping[str, Any] | None, versioned: bool) -> str:
        prefix = f"/v{self.api_version}" if versioned else ""
        query = f"?{urlencode(params)}" if params else ""
        return f"{prefix}{url_path}{query}"

    def _send(
        self,
        method: str,
        url_path: str,
        *,
        params: Mapping[str, Any] | None,
        body: Any,
        headers: Mapping[str, str] | None,
        timeout: float | None,
        versioned: bool = True,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        target = self._target(url_path, params, versioned)
        all_headers = {"Host": "docker", **(headers or {})}
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
            all_headers.setdefault("Content-Type", "application/octet-stream")
        else:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, target, body=data, headers=all_headers)
            response = conn.getresponse()
            if response.status >= 400:
                raise EngineError(response.status, _error_message(response.read()))
        except BaseException:
            conn.close()
            raise
        return conn, response

    # --- the three kinds of request ---------------------------------------

    def call(
        self,
        method: str,
        url_path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        versioned: bool = True,
    ) -> Any:
        """One request; the decoded JSON body, or None when there is none."""
        conn, response = self._send(
            method, url_path, params=params, body=body, headers=headers, timeout=timeout, versioned=versioned
        )
        try:
            data = response.read()
        finally:
            conn.close()
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode("utf-8", "replace")

    def stream(
        self,
        method: str,
        url_path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> EngineStream:
        conn, response = self._send(method, url_path, params=params, body=body, headers=headers, timeout=None)
        return EngineStream(conn, response)

    def upgrade(self, url_path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> Upgraded:
        """POST with ``Upgrade: tcp``; the raw connection once the daemon switched protocols."""
        target = self._target(url_path, params, True)
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"POST {target} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        conn = self._connection(self.timeout)
        conn.connect()
        sock = conn.sock
        assert isinstance(sock, socket.socket)
        try:
            sock.sendall(head + data)
            received = b""
            while b"\r\n\r\n" not in received:
                if len(received) > MAX_HEAD:
                    raise http.client.HTTPException("response headers too long")
                more = sock.recv(READ_SIZE)
                if not more:
                    raise http.client.RemoteDisconnected("the engine closed the connection before answering")
                received += more
            header, _, rest = received.partition(b"\r\n\r\n")
            status = _status(header)
            if status >= 400:
                raise EngineError(status, _error_message(_rest_of_body(sock, header, rest)))
            if status not in (101, 200):
                raise http.client.HTTPException(f"unexpected HTTP {status} to an upgrade request")
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return Upgraded(sock, rest)

    def registry_auth_header(self, image: str) -> dict[str, str]:
        """``X-Registry-Auth`` from ``~/.docker/config.json`` for the image's registry, if any."""
        return self._auth.header(image)


def _status(header: bytes) -> int:
    line = header.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise http.client.BadStatusLine(line)
    return int(parts[1])


def _rest_of_body(sock: socket.socket, header: bytes, rest: bytes) -> bytes:
    """The (small) error body of a refused upgrade, bounded by Content-Length when given."""
    length = None
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    with contextlib.suppress(OSError):
        while length is not None and len(rest) < min(length, MAX_HEAD):
            more = sock.recv(READ_SIZE)
            if not more:
                break
            rest += more
    return rest


def _error_message(data: bytes) -> str:
    try:
        decoded = json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace").strip()
    if isinstance(decoded, dict) and "message" in decoded:
        return str(decoded["message"])
    return str(decoded)


class _RegistryAuth:
    """Static credentials (``auths`` entries) of the docker CLI config; credential helpers are not run."""

    def __init__(self) -> None:
        self._loaded = False
        self._auths: dict[str, Any] = {}

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        directory = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
        with contextlib.suppress(OSError, ValueError, AttributeError):
            auths = json.loads(Path(directory, "config.json").read_text()).get("auths") or {}
            if isinstance(auths, dict):
                self._auths = auths

    def header(self, image: str) -> dict[str, str]:
        self._load()
        if not self._auths:
            return {}
        first, _, rest = image.partition("/")
        registry = first if rest and ("." in first or ":" in first or first == "localhost") else "docker.io"
        candidates = [registry, f"https://{registry}", f"http://{registry}"]
        if registry == "docker.io":
            candidates += ["https://index.docker.io/v1/", "index.docker.io"]
        for key in candidates:
            entry = self._auths.get(key)
            if not isinstance(entry, dict) or not entry.get("auth"):
                continue
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                payload = json.dumps({"username": user, "password": password, "serveraddress": registry})
                return {"X-Registry-Auth": base64.urlsafe_b64encode(payload.encode()).decode()}
        return {}
