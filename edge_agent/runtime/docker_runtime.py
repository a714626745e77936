"""``DockerRuntime``: the Docker Engine API through the ``docker`` SDK (also Podman).

The SDK blocks, so every call runs in a small thread pool of our own (not the
loop's default executor, which the rest of the agent shares); exec and attach
streams are hijacked sockets driven by the event loop itself
(``_docker_session``), and log/pull streams fetch one item per executor call.

Podman: the same class against Podman's Docker-compatible socket, e.g.
``DockerConfig(base_url="unix:///run/podman/podman.sock")`` (rootful,
``systemctl enable --now podman.socket``) or
``unix://$XDG_RUNTIME_DIR/podman/podman.sock`` (rootless). ``version()``
then reports ``podman``. Not tested here (no podman on the test machines).

Streams (exec/attach) need a ``unix://`` or plain ``tcp://`` host; TLS and
ssh hosts work for everything else.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import math
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import docker
import docker.errors
import requests
from docker.utils import parse_repository_tag

from ._blocking import iterate_blocking, run_blocking
from ._docker_convert import (
    container_config,
    files_tar,
    host_config_kwargs,
    stats_from_docker,
    status_from_inspect,
)
from ._docker_errors import Subject, check_response, translate
from ._docker_session import DockerAttachSession, DockerExecSession, hijack
from .base import AttachSession, ExecSession, ProgressCallback, Runtime
from .demux import StreamDemuxer
from .errors import ContainerNotRunning, ImageNotFound, RuntimeErrorBase
from .timefmt import datetime_to_ns
from .types import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    OutputChunk,
    PullPolicy,
    PullProgress,
    RuntimeVersion,
    Stream,
)

T = TypeVar("T")
DEFAULT_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerConfig:
    base_url: str | None = None
    """``unix:///path``, ``tcp://host:port``; None: ``$DOCKER_HOST``, else the standard socket."""
    api_version: str | None = None
    """None negotiates with the daemon on first use."""
    timeout: float = 60.0
    """Per API call (``stop`` adds its grace period)."""
    workers: int = 4
    """Threads for short API calls."""
    stream_workers: int = 32
    """Threads for log follows and pulls (one per pending read)."""
    poll_min: float = 0.02
    poll_max: float = 0.5
    """Back-off bounds when waiting for an exec or container to finish."""

    def resolved_url(self) -> str:
        return self.base_url or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


class DockerRuntime(Runtime):
    """A ``Runtime`` on a Docker (or Podman) Engine API socket."""

    def __init__(self, config: DockerConfig | None = None) -> None:
        self.config = config or DockerConfig()
        self._client: docker.APIClient | None = None
        self._client_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(self.config.workers, thread_name_prefix="docker-api")
        self._streams = ThreadPoolExecutor(self.config.stream_workers, thread_name_prefix="docker-stream")

    # --- plumbing ---------------------------------------------------------

    def _api(self) -> docker.APIClient:
        with self._client_lock:
            if self._client is None:
                self._client = docker.APIClient(
                    base_url=self.config.resolved_url(),
                    version=self.config.api_version or "auto",
                    timeout=self.config.timeout,
                )
            return self._client

    async def _call(self, fn: Callable[[docker.APIClient], T], *, action: str, subject: Subject, ref: str) -> T:
        def run() -> T:
            try:
                return fn(self._api())
            except Exception as exc:
                raise translate(exc, subject=subject, ref=ref, action=action) from exc

        return await run_blocking(self._executor, run)

    def _url(self, api: docker.APIClient, path: str) -> str:
        return f"{api.base_url}/v{api.api_version}{path}"

    async def _inspect_raw(self, container_id: str) -> dict[str, Any]:
        return await self._call(
            lambda api: api.inspect_container(container_id),
            action="inspect",
            subject="container",
            ref=container_id,
        )

    async def _poll(self, probe: Callable[[], Any], done: Callable[[Any], bool]) -> Any:
        delay = self.config.poll_min
        while True:
            value = await probe()
            if done(value):
                return value
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.poll_max)

    # --- engine and images ------------------------------------------------

    async def version(self) -> RuntimeVersion:
        info = await self._call(lambda api: api.version(), action="version", subject="engine", ref="")
        names = " ".join(str(c.get("Name", "")) for c in info.get("Components") or [])
        name = "podman" if "podman" in names.lower() else "docker"
        return RuntimeVersion(
            name=name,
            version=str(info.get("Version", "")),
            api_version=str(info.get("ApiVersion", "")),
        )

    async def _image_present(self, image: str) -> bool:
        try:
            await self._call(
                lambda api: api.inspect_image(image),
                action="inspect image",
                subject="image",
                ref=image,
            )
        except ImageNotFound:
            return False
        return True

    async def ensure_image(
        self,
        image: str,
        progress_cb: ProgressCallback | None = None,
        *,
        policy: PullPolicy = PullPolicy.IF_NOT_PRESENT,
    ) -> None:
        present = await self._image_present(image)
        if policy is PullPolicy.NEVER and not present:
            raise ImageNotFound(image, "not present locally and the pull policy is Never")
        if present and policy is not PullPolicy.ALWAYS:
            return
        try:
            await self._pull(image, progress_cb)
        except ImageNotFound:
            raise
        except RuntimeErrorBase as exc:
            raise ImageNotFound(image, f"not present locally and the pull failed: {exc}") from exc
        if not await self._image_present(image):
            raise ImageNotFound(image, "the pull reported success but the image is not present")

    async def _pull(self, image: str, progress_cb: ProgressCallback | None) -> None:
        repo, tag = parse_repository_tag(image)
        # Without a tag the Engine pulls *every* tag; Kubernetes means :latest.
        tag = tag or "latest"

        def start(api: docker.APIClient) -> Iterator[dict[str, Any]]:
            try:
                return iter(api.pull(repo, tag=tag, stream=True, decode=True))
            except docker.errors.APIError as exc:
                detail = exc.explanation or str(exc)
                if isinstance(detail, bytes):
                    detail = detail.decode("utf-8", "replace")
                raise ImageNotFound(image, f"not present locally and the pull failed: {detail}") from exc

        messages = await self._call(start, action="pull", subject="image", ref=image)
        async for message in iterate_blocking(self._streams, messages, interrupt=lambda: None):
            if "error" in message:
                detail = (message.get("errorDetail") or {}).get("message") or message["error"]
                raise ImageNotFound(image, f"not present locally and the pull failed: {detail}")
            if progress_cb is not None:
                detail = message.get("progressDetail") or {}
                progress_cb(
                    PullProgress(
                        image=image,
                        status=str(message.get("status", "")),
                        layer=message.get("id"),
                        current=detail.get("current"),
                        total=detail.get("total"),
                    )
                )

    # --- lifecycle --------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        def run(api: docker.APIClient) -> str:
            host_config = api.create_host_config(**host_config_kwargs(spec))
            config = container_config(api, spec, host_config)
            container_id: str = api.create_container_from_config(config, name=spec.name)["Id"]
            if spec.files:
                try:
                    if not api.put_archive(container_id, "/", files_tar(spec.files)):
                        raise RuntimeErrorBase(f"placing files into {spec.name} failed")
                except BaseException:
                    with contextlib.suppress(Exception):
                        api.remove_container(container_id, force=True, v=True)
                    raise
            return container_id

        return await self._call(run, action="create", subject="image", ref=spec.image)

    async def start(self, container_id: str) -> None:
        await self._call(
            lambda api: api.start(container_id),
            action="start",
            subject="container",
            ref=container_id,
        )

    async def stop(self, container_id: str, grace_seconds: float = 10.0) -> None:
        grace = max(0, math.ceil(grace_seconds))
        await self._call(
            lambda api: api.stop(container_id, timeout=grace),
            action="stop",
            subject="container",
            ref=container_id,
        )

    async def remove(self, container_id: str, *, force: bool = True) -> None:
        def run(api: docker.APIClient) -> None:
            try:
                api.remove_container(container_id, force=force, v=True)
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                    return
                raise

        await self._call(run, action="remove", subject="container", ref=container_id)

    async def inspect(self, container_id: str) -> ContainerStatus:
        return status_from_inspect(await self._inspect_raw(container_id))

    async def list(self, labels: Mapping[str, str] | None = None) -> builtins.list[ContainerStatus]:
        filters = {"label": [f"{key}={value}" for key, value in (labels or {}).items()]}

        def run(api: docker.APIClient) -> builtins.list[ContainerStatus]:
            out = []
            for item in api.containers(all=True, filters=filters):
                try:
                    out.append(status_from_inspect(api.inspect_container(item["Id"])))
                except docker.errors.NotFound:
                    continue  # removed between listing and inspecting
            return out

        return await self._call(run, action="list", subject="container", ref="")

    # --- output -----------------------------------------------------------

    async def logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
        timestamps: bool = False,
    ) -> AsyncIterator[OutputChunk]:
        info = await self._inspect_raw(container_id)
        tty = bool((info.get("Config") or {}).get("Tty"))
        params: dict[str, Any] = {
            "stdout": 1,
            "stderr": 1,
            "follow": int(follow),
            "timestamps": int(timestamps),
            "tail": "all" if tail is None else str(max(0, tail)),
        }
        if since is not None:
            seconds, nanos = divmod(datetime_to_ns(since), 1_000_000_000)
            params["since"] = f"{seconds}.{nanos:09d}"

        def open_stream(api: docker.APIClient) -> requests.Response:
            url = self._url(api, f"/containers/{quote(info['Id'])}/logs")
            response = api.get(url, params=params, stream=True)
            check_response(response, subject="container", ref=container_id, action="logs")
            sock = _response_socket(response)
            if sock is not None:
                sock.settimeout(None)  # a quiet follower is not a dead daemon
            return response

        response = await self._call(open_stream, action="logs", subject="container", ref=container_id)
        demux = None if tty else StreamDemuxer()
        chunks = response.iter_content(chunk_size=None)
        async for data in iterate_blocking(self._streams, chunks, interrupt=lambda: _abort(response)):
            if demux is None:
                yield OutputChunk(Stream.STDOUT, data)
            else:
                for chunk in demux.feed(data):
                    yield chunk

    async def exec(
        self, container_id: str, cmd: Sequence[str], *, tty: bool = False, stdin: bool = False
    ) -> ExecSession:
        if isinstance(cmd, str) or not cmd:
            raise RuntimeErrorBase("exec needs a non-empty argument list")

        def run(api: docker.APIClient) -> tuple[str, Any]:
            created = api.exec_create(container_id, list(cmd), stdin=stdin, tty=tty, stdout=True, stderr=True)
            exec_id: str = created["Id"]
            return exec_id, hijack(api.exec_start(exec_id, tty=tty, socket=True))

        exec_id, hijacked = await self._call(run, action="exec", subject="container", ref=container_id)

        async def inspect_exec() -> dict[str, Any]:
            return await self._call(
                lambda api: api.exec_inspect(exec_id),
                action="exec inspect",
                subject="exec",
                ref=exec_id,
            )

        async def wait() -> int:
            info = await self._poll(inspect_exec, lambda i: not i.get("Running"))
            code = info.get("ExitCode")
            if code is None:
                raise RuntimeErrorBase(f"exec {exec_id} ended without an exit code")
            return int(code)

        async def resize(width: int, height: int) -> None:
            # Right after start the exec's process may not exist yet; the docker
            # CLI retries for the same reason.
            for attempt in range(20):
                try:
                    await self._call(
                        lambda api: api.exec_resize(exec_id, height=height, width=width),
                        action="exec resize",
                        subject="exec",
                        ref=exec_id,
                    )
                    return
                except RuntimeErrorBase:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.05)

        return DockerExecSession(hijacked, exec_id=exec_id, tty=tty, resize=resize, wait=wait)

    async def attach(self, container_id: str, *, stdin: bool = True) -> AttachSession:
        info = await self._inspect_raw(container_id)
        if not (info.get("State") or {}).get("Running"):
            raise ContainerNotRunning(container_id)
        tty = bool((info.get("Config") or {}).get("Tty"))
        full_id = info["Id"]
        params = {"stdin": int(stdin), "stdout": 1, "stderr": 1, "stream": 1, "logs": 0}
        hijacked = await self._call(
            lambda api: hijack(api.attach_socket(full_id, params=params)),
            action="attach",
            subject="container",
            ref=container_id,
        )

        async def wait() -> int:
            status = await self._poll(lambda: self.inspect(full_id), lambda s: s.state is not ContainerState.RUNNING)
            return int(status.exit_code) if status.exit_code is not None else -1

        async def resize(width: int, height: int) -> None:
            await self._call(
                lambda api: api.resize(full_id, height=height, width=width),
                action="resize",
                subject="container",
                ref=container_id,
            )

        return DockerAttachSession(hijacked, container_id=full_id, tty=tty, resize=resize, wait=wait)

    async def stats(self, container_id: str) -> ContainerStats:
        def run(api: docker.APIClient) -> ContainerStats:
            one_shot = True if docker.utils.version_gte(api.api_version, "1.41") else None
            sample = api.stats(container_id, stream=False, one_shot=one_shot)
            response = api.get(self._url(api, f"/containers/{quote(container_id)}/json"), params={"size": 1})
            check_response(response, subject="container", ref=container_id, action="stats")
            size = response.json().get("SizeRw")
            return stats_from_docker(sample, size_rw=int(size) if size is not None else None)

        return await self._call(run, action="stats", subject="container", ref=container_id)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await run_blocking(self._executor, client.close)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._streams.shutdown(wait=False, cancel_futures=True)


def _response_socket(response: requests.Response) -> socket.socket | None:
    try:
        sock = response.raw._fp.fp.raw._sock  # urllib3 -> http.client -> SocketIO -> socket
    except AttributeError:
        return None
    return sock if isinstance(sock, socket.socket) else None


def _abort(response: requests.Response) -> None:
    """Unblock a thread reading ``response`` (shutdown wakes a blocked recv; close does not)."""
    sock = _response_socket(response)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()
