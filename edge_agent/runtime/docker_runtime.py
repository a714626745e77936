"""``DockerRuntime``: the Docker Engine API (also Podman's compatible API).

Requests go through a small blocking HTTP client of our own (``_docker_http``;
the ``docker`` SDK with ``requests`` cost about 7 MB of RSS), so every call
runs in a small thread pool of our own (not the loop's default executor,
which the rest of the agent shares); exec and attach streams are hijacked
sockets driven by the event loop itself (``_docker_session``), and log/pull
streams fetch one item per executor call.

Podman: the same class against Podman's Docker-compatible socket, e.g.
``DockerConfig(base_url="unix:///run/podman/podman.sock")`` (rootful,
``systemctl enable --now podman.socket``) or
``unix://$XDG_RUNTIME_DIR/podman/podman.sock`` (rootless). ``version()``
then reports ``podman``. Tested against podman 4.3; where its compat API
answers differently (extra states, qualified image names, HTTP 500 for
conflicts, no record of a failed start) the runtime evens it out, see
``runtime/README.md``.

Hosts: ``unix:///path`` or plain ``tcp://host:port`` (no TLS or ssh hosts).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import math
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from ._blocking import iterate_blocking, run_blocking
from ._docker_convert import container_config, files_tar, stats_from_docker, status_from_inspect
from ._docker_errors import Subject, translate
from ._docker_http import EngineClient, EngineError, EngineStream, Upgraded, parse_repository_tag, path
from ._docker_session import DockerAttachSession, DockerExecSession
from .base import AttachSession, ExecSession, ProgressCallback, Runtime
from .demux import StreamDemuxer
from .errors import ContainerNotRunning, ContainerStartError, ImageNotFound, RuntimeErrorBase
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
MAX_START_ERRORS = 256


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
        self._client: EngineClient | None = None
        self._client_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(self.config.workers, thread_name_prefix="docker-api")
        self._streams = ThreadPoolExecutor(self.config.stream_workers, thread_name_prefix="docker-stream")
        self._start_errors: dict[str, str] = {}
        """Podman keeps no trace of a failed start (State stays "created", no Error): we do, by full id."""

    # --- plumbing ---------------------------------------------------------

    def _api(self) -> EngineClient:
        with self._client_lock:
            if self._client is None:
                self._client = EngineClient(
                    self.config.resolved_url(), api_version=self.config.api_version, timeout=self.config.timeout
                )
            return self._client

    async def _call(self, fn: Callable[[EngineClient], T], *, action: str, subject: Subject, ref: str) -> T:
        def run() -> T:
            try:
                return fn(self._api())
            except Exception as exc:
                raise translate(exc, subject=subject, ref=ref, action=action) from exc

        return await run_blocking(self._executor, run)

    async def _inspect_raw(self, container_id: str) -> dict[str, Any]:
        return await self._call(
            lambda api: api.call("GET", path("/containers/{}/json", container_id)),
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
        info = await self._call(lambda api: api.call("GET", "/version"), action="version", subject="engine", ref="")
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
                lambda api: api.call("GET", path("/images/{}/json", image)),
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
        params = {"fromImage": repo, "tag": tag or "latest"}

        def start(api: EngineClient) -> EngineStream:
            try:
                return api.stream("POST", "/images/create", params=params, headers=api.registry_auth_header(repo))
            except EngineError as exc:
                raise ImageNotFound(image, f"not present locally and the pull failed: {exc.message}") from exc

        stream = await self._call(start, action="pull", subject="image", ref=image)
        messages = (json.loads(line) for line in stream.lines())
        try:
            async for message in iterate_blocking(self._streams, messages, interrupt=stream.abort):
                if not isinstance(message, dict):
                    continue
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
        except (OSError, ValueError) as exc:
            raise translate(exc, subject="image", ref=image, action="pull") from exc

    # --- lifecycle --------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        def run(api: EngineClient) -> str:
            created = api.call("POST", "/containers/create", params={"name": spec.name}, body=container_config(spec))
            container_id: str = created["Id"]
            if spec.files:
                try:
                    api.call(
                        "PUT",
                        path("/containers/{}/archive", container_id),
                        params={"path": "/"},
                        body=files_tar(spec.files),
                        headers={"Content-Type": "application/x-tar"},
                    )
                except BaseException:
                    with contextlib.suppress(Exception):
                        api.call("DELETE", path("/containers/{}", container_id), params={"force": 1, "v": 1})
                    raise
            return container_id

        return await self._call(run, action="create", subject="image", ref=spec.image)

    async def start(self, container_id: str) -> None:
        try:
            await self._call(
                lambda api: api.call("POST", path("/containers/{}/start", container_id)),
                action="start",
                subject="container",
                ref=container_id,
            )
        except ContainerStartError as exc:
            with contextlib.suppress(RuntimeErrorBase):
                full_id = (await self._inspect_raw(container_id))["Id"]
                while len(self._start_errors) >= MAX_START_ERRORS:
                    del self._start_errors[next(iter(self._start_errors))]
                self._start_errors[full_id] = str(exc)
            raise

    async def stop(self, container_id: str, grace_seconds: float = 10.0) -> None:
        grace = max(0, math.ceil(grace_seconds))
        await self._call(
            lambda api: api.call(
                "POST",
                path("/containers/{}/stop", container_id),
                params={"t": grace},
                timeout=self.config.timeout + grace,
            ),
            action="stop",
            subject="container",
            ref=container_id,
        )

    async def remove(self, container_id: str, *, force: bool = True) -> None:
        def run(api: EngineClient) -> None:
            try:
                api.call("DELETE", path("/containers/{}", container_id), params={"force": int(force), "v": 1})
            except EngineError as exc:
                if exc.status == 409 and "already in progress" in exc.message:
                    return
                raise

        await self._call(run, action="remove", subject="container", ref=container_id)
        for key in [k for k in self._start_errors if k.startswith(container_id)]:
            del self._start_errors[key]

    async def inspect(self, container_id: str) -> ContainerStatus:
        return self._status(await self._inspect_raw(container_id))

    def _status(self, data: dict[str, Any]) -> ContainerStatus:
        state = data.get("State") or {}
        error = self._start_errors.get(str(data.get("Id")))
        if error is not None and not state.get("Error") and str(state.get("Status", "")).lower() == "created":
            lowered = error.lower()
            code = 127 if "not found" in lowered or "no such file" in lowered else 126  # as Docker sets them
            data = {**data, "State": {**state, "Error": error, "ExitCode": code}}
        return status_from_inspect(data)

    async def list(self, labels: Mapping[str, str] | None = None) -> builtins.list[ContainerStatus]:
        filters = json.dumps({"label": [f"{key}={value}" for key, value in (labels or {}).items()]})

        def run(api: EngineClient) -> builtins.list[ContainerStatus]:
            out = []
            for item in api.call("GET", "/containers/json", params={"all": 1, "filters": filters}) or []:
                try:
                    out.append(self._status(api.call("GET", path("/containers/{}/json", item["Id"]))))
                except EngineError as exc:
                    if exc.status != 404:
                        raise
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

        def open_stream(api: EngineClient) -> EngineStream:
            stream = api.stream("GET", path("/containers/{}/logs", info["Id"]), params=params)
            stream.settimeout(None)  # a quiet follower is not a dead daemon
            return stream

        stream = await self._call(open_stream, action="logs", subject="container", ref=container_id)
        demux = None if tty else StreamDemuxer()
        try:
            async for data in iterate_blocking(self._streams, stream.chunks(), interrupt=stream.abort):
                if demux is None:
                    yield OutputChunk(Stream.STDOUT, data)
                else:
                    for chunk in demux.feed(data):
                        yield chunk
        except OSError as exc:
            raise translate(exc, subject="container", ref=container_id, action="logs") from exc

    async def exec(
        self, container_id: str, cmd: Sequence[str], *, tty: bool = False, stdin: bool = False
    ) -> ExecSession:
        if isinstance(cmd, str) or not cmd:
            raise RuntimeErrorBase("exec needs a non-empty argument list")

        body = {
            "AttachStdin": stdin,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": tty,
            "Cmd": list(cmd),
            "Privileged": False,
            "User": "",
        }

        def run(api: EngineClient) -> tuple[str, Upgraded]:
            exec_id: str = api.call("POST", path("/containers/{}/exec", container_id), body=body)["Id"]
            return exec_id, api.upgrade(path("/exec/{}/start", exec_id), body={"Tty": tty, "Detach": False})

        exec_id, hijacked = await self._call(run, action="exec", subject="container", ref=container_id)

        async def inspect_exec() -> dict[str, Any]:
            return await self._call(
                lambda api: api.call("GET", path("/exec/{}/json", exec_id)),
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
                        lambda api: api.call(
                            "POST", path("/exec/{}/resize", exec_id), params={"h": height, "w": width}
                        ),
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
            lambda api: api.upgrade(path("/containers/{}/attach", full_id), params=params),
            action="attach",
            subject="container",
            ref=container_id,
        )

        async def wait() -> int:
            status = await self._poll(lambda: self.inspect(full_id), lambda s: s.state is not ContainerState.RUNNING)
            return int(status.exit_code) if status.exit_code is not None else -1

        async def resize(width: int, height: int) -> None:
            await self._call(
                lambda api: api.call("POST", path("/containers/{}/resize", full_id), params={"h": height, "w": width}),
                action="resize",
                subject="container",
                ref=container_id,
            )

        return DockerAttachSession(hijacked, container_id=full_id, tty=tty, resize=resize, wait=wait)

    async def stats(self, container_id: str) -> ContainerStats:
        def run(api: EngineClient) -> ContainerStats:
            params = {"stream": 0}
            if _version_tuple(api.api_version) >= (1, 41):
                params["one-shot"] = 1
            sample = api.call("GET", path("/containers/{}/stats", container_id), params=params)
            size = api.call("GET", path("/containers/{}/json", container_id), params={"size": 1}).get("SizeRw")
            return stats_from_docker(sample, size_rw=int(size) if size is not None else None)

        return await self._call(run, action="stats", subject="container", ref=container_id)

    async def aclose(self) -> None:
        self._client = None  # holds no connections
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._streams.shutdown(wait=False, cancel_futures=True)


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)
