"""The agent's own Engine API client and the create body, against byte-level fake daemons.

The real daemon paths are covered by the runtime contract (dockerd and
podman); these pin the wire details a real daemon rarely shows: chunk
boundaries inside JSON records, a refused upgrade, credentials lookup.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edge_agent.runtime import ContainerSpec, InvalidSpec, MountSpec, PortSpec, Resources
from edge_agent.runtime._docker_convert import container_config, familiar_image
from edge_agent.runtime._docker_errors import translate
from edge_agent.runtime._docker_http import EngineClient, EngineError, parse_repository_tag
from edge_agent.runtime.errors import ContainerConflict, ContainerNotRunning, RuntimeUnavailable


@contextmanager
def fake_daemon(path: Path, respond: Callable[[bytes], bytes]) -> Iterator[list[bytes]]:
    """Serve one connection on a unix socket: read a request, send ``respond(request)``, close."""
    requests: list[bytes] = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += conn.recv(4096)
            requests.append(head + b"\r\n\r\n" + body)
            conn.sendall(respond(data))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield requests
    finally:
        server.close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("busybox", ("busybox", None)),
        ("busybox:1.36", ("busybox", "1.36")),
        ("127.0.0.1:5000/a/b", ("127.0.0.1:5000/a/b", None)),
        ("127.0.0.1:5000/a/b:v2", ("127.0.0.1:5000/a/b", "v2")),
        ("a/b@sha256:abc", ("a/b", "sha256:abc")),
    ],
)
def test_repository_and_tag(image: str, expected: tuple[str, str | None]) -> None:
    assert parse_repository_tag(image) == expected


def test_pull_progress_records_split_across_chunks(tmp_path: Path) -> None:
    records = [{"status": "Downloading", "id": "l1", "progressDetail": {"current": n, "total": 9}} for n in range(3)]
    wire = b"".join(json.dumps(r).encode() + b"\r\n" for r in records)
    chunks = [wire[i : i + 7] for i in range(0, len(wire), 7)]  # boundaries inside the JSON
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    with fake_daemon(tmp_path / "d.sock", lambda _: head + body) as seen:
        client = EngineClient(f"unix://{tmp_path}/d.sock", api_version="1.41", timeout=5)
        stream = client.stream("POST", "/images/create", params={"fromImage": "a/b", "tag": "1"})
        assert [json.loads(line) for line in stream.lines()] == records
    assert seen[0].startswith(b"POST /v1.41/images/create?fromImage=a%2Fb&tag=1 HTTP/1.1\r\n")


def test_refused_upgrade_is_an_engine_error_with_the_daemon_message(tmp_path: Path) -> None:
    message = json.dumps({"message": "No such exec instance: nope"}).encode()
    reply = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(message),
        message,
    )
    with fake_daemon(tmp_path / "d.sock", lambda _: reply) as seen:
        client = EngineClient(f"unix://{tmp_path}/d.sock", api_version="1.41", timeout=5)
        with pytest.raises(EngineError) as caught:
            client.upgrade("/exec/nope/start", body={"Tty": False, "Detach": False})
    assert caught.value.status == 404 and caught.value.message == "No such exec instance: nope"
    assert b"Upgrade: tcp" in seen[0] and seen[0].endswith(b'{"Tty": false, "Detach": false}')


def test_unreachable_and_unsupported_hosts(tmp_path: Path) -> None:
    client = EngineClient(f"unix://{tmp_path}/missing.sock", timeout=2)
    with pytest.raises(OSError) as caught:
        client.call("GET", "/version", versioned=False)
    assert isinstance(translate(caught.value, subject="engine", ref="", action="version"), RuntimeUnavailable)
    with pytest.raises(ValueError, match="unsupported docker host"):
        EngineClient("ssh://device")


def test_podman_500_sentences_become_typed_errors() -> None:
    conflict = EngineError(500, 'container create: the container name "x" is already in use by abc')
    assert isinstance(translate(conflict, subject="image", ref="img", action="create"), ContainerConflict)
    stopped = EngineError(500, "can only create exec sessions on running containers: container state improper")
    assert isinstance(translate(stopped, subject="container", ref="c", action="exec"), ContainerNotRunning)


def test_registry_credentials_from_the_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = base64.b64encode(b"robot:s3cret:with-colon").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"registry.example:5000": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    client = EngineClient("unix:///nowhere.sock")
    header = client.registry_auth_header("registry.example:5000/team/app")
    decoded = json.loads(base64.urlsafe_b64decode(header["X-Registry-Auth"]))
    assert decoded == {"username": "robot", "password": "s3cret:with-colon", "serveraddress": "registry.example:5000"}
    assert client.registry_auth_header("team/app") == {}  # docker.io: no entry


def test_create_body_carries_the_spec() -> None:
    spec = ContainerSpec(
        name="c",
        image="img",
        command=["sh"],
        args=["-c", "true"],
        env={"A": "1"},
        working_dir="/w",
        ports=[PortSpec(8080, host_port=18080, host_ip="127.0.0.1"), PortSpec(53, protocol="udp")],
        resources=Resources(memory_limit_bytes=64 << 20, cpu_limit=0.5, cpu_request=0.25),
        stdin=True,
    )
    body = container_config(spec)
    assert body["Entrypoint"] == ["sh"] and body["Cmd"] == ["-c", "true"] and body["Env"] == ["A=1"]
    assert body["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert body["OpenStdin"] and body["AttachStdin"] and not body["StdinOnce"]
    host = body["HostConfig"]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}]}
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["CpuShares"]) == (64 << 20, 64 << 20, 5e8, 256)
    assert host["NetworkMode"] == "default"
    assert "Entrypoint" not in container_config(ContainerSpec(name="d", image="img"))  # image default kept
    with pytest.raises(InvalidSpec, match="host networking"):
        container_config(ContainerSpec(name="e", image="img", network_mode="host", ports=[PortSpec(80, host_port=80)]))


def test_create_body_mounts_and_hostname() -> None:
    spec = ContainerSpec(
        name="m",
        image="img",
        hostname="web-0",
        mounts=[MountSpec("/var/lib/a/etc-hosts", "/etc/hosts"), MountSpec("/srv/x/", "/x", read_only=True)],
    )
    body = container_config(spec)
    assert body["Hostname"] == "web-0"
    assert body["HostConfig"]["Binds"] == ["/var/lib/a/etc-hosts:/etc/hosts:rw", "/srv/x:/x:ro"]
    plain = container_config(ContainerSpec(name="p", image="img"))
    assert "Hostname" not in plain and "Binds" not in plain["HostConfig"]
    for bad in (("relative", "/etc/hosts"), ("/a:b", "/etc/hosts"), ("/a", "/")):
        with pytest.raises(InvalidSpec, match="mount"):
            MountSpec(*bad)
    with pytest.raises(InvalidSpec, match="same target"):
        ContainerSpec(name="t", image="img", mounts=[MountSpec("/a", "/etc/hosts"), MountSpec("/b", "/etc//hosts")])
    with pytest.raises(InvalidSpec, match="hostname"):
        ContainerSpec(name="h", image="img", hostname="web-0", network_mode="container:abc")
    with pytest.raises(InvalidSpec, match="hostname"):
        ContainerSpec(name="h", image="img", hostname="bad_name")


def test_familiar_image_names() -> None:
    assert familiar_image("docker.io/library/busybox:1") == "busybox:1"
    assert familiar_image("docker.io/edgefleet/busybox:test") == "edgefleet/busybox:test"
    assert familiar_image("quay.io/a/b") == "quay.io/a/b"
