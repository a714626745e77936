"""Control messages, stream metadata and codes: round trips, validation, fuzzed decoders."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fleetproto as fp
from fleetproto.framing import pack, unpack
from tests.agent_core import strategies as s

PACKAGE = Path(fp.__file__).parent


def wire_round_trip(message):
    """Through every layer: record -> map -> framed bytes -> map -> record."""
    decoder = fp.MessageDecoder()
    decoder.feed(fp.frame(message))
    return fp.decode(decoder.next_message())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(s.messages)
def test_every_message_round_trips(message) -> None:
    assert wire_round_trip(message) == message


@given(s.pods)
def test_pod_round_trip_keeps_files_bytes_and_modes(pod) -> None:
    back = fp.DesiredPod.from_dict(unpack(pack(pod.to_dict())))
    assert back == pod and back.files == pod.files and back.unknown_fields == ()


def busybox_pod(**extra) -> dict:
    return {
        "uid": "u-1",
        "namespace": "default",
        "name": "web",
        "containers": [{"name": "main", "image": "busybox"}],
        **extra,
    }


def test_unknown_pod_fields_are_collected_with_paths() -> None:
    data = busybox_pod(securityContext={"runAsUser": 1})
    data["containers"][0]["livenessProbe"] = {"exec": {}}
    upsert = fp.decode({"type": "PodUpsert", "pod": data, "generation": 2, "future": 1})
    assert upsert.pod.unknown_fields == ("pod.containers[0].livenessProbe", "pod.securityContext")
    sync = fp.decode({"type": "Sync", "generation": 1, "pods": [data]})
    assert sync.pods[0].unknown_fields == ("pods[0].containers[0].livenessProbe", "pods[0].securityContext")


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.update(uid=""), "pod.uid"),
        (lambda d: d.update(uid="../x"), "pod.uid"),
        (lambda d: d.update(containers=[]), "pod.containers"),
        (lambda d: d["containers"].append({"name": "main", "image": "x"}), "pod.containers[1].name"),
        (lambda d: d["containers"][0].update(name="Main_1"), "pod.containers[0].name"),
        (lambda d: d["containers"][0].update(image=""), "pod.containers[0].image"),
        (lambda d: d["containers"][0].update(command="sh -c x"), "pod.containers[0].command"),
        (lambda d: d["containers"][0].update(env=[{"name": "A=B"}]), "pod.containers[0].env[0].name"),
        (
            lambda d: d["containers"][0].update(ports=[{"container_port": 0}]),
            "pod.containers[0].ports[0].container_port",
        ),
        (lambda d: d["containers"][0].update(ports=[{"container_port": True}]), "pod.containers[0].ports[0]"),
        (lambda d: d["containers"][0].update(working_dir="rel"), "pod.containers[0].working_dir"),
        (lambda d: d.update(restart_policy="Sometimes"), "pod.restart_policy"),
        (lambda d: d.update(files={"cfg/../etc/passwd": {"data": b""}}), "pod.files"),
        (lambda d: d.update(files={"noslash": {"data": b""}}), "pod.files"),
        (lambda d: d.update(files={"cfg/a": {"data": "text"}}), "pod.files.cfg/a.data"),
        (lambda d: d.update(termination_grace_seconds=-1), "pod.termination_grace_seconds"),
        (lambda d: d["containers"][0].update(volume_mounts=[{"volume": "v", "mount_path": "x"}]), "mount_path"),
    ],
)
def test_invalid_pods_name_the_field(mutate, path) -> None:
    data = busybox_pod()
    mutate(data)
    with pytest.raises(fp.SchemaError) as info:
        fp.decode({"type": "PodUpsert", "pod": data})
    assert path in str(info.value)
    assert fp.pod_identity(data) is None or fp.pod_identity(data)[0] == data["uid"]


def test_direction_and_unknown_types() -> None:
    upsert = fp.encode(fp.PodUpsert(pod=fp.DesiredPod.from_dict(busybox_pod())))
    assert isinstance(fp.decode(upsert, sender="cloud"), fp.PodUpsert)
    with pytest.raises(fp.SchemaError, match="may not be sent by the device"):
        fp.decode(upsert, sender="device")
    with pytest.raises(fp.UnknownMessageType):
        fp.decode({"type": "Teleport"}, sender="cloud")
    with pytest.raises(TypeError):
        fp.encode(fp.NodeResources())


def test_constructors_validate() -> None:
    with pytest.raises(ValueError):
        fp.ContainerState(kind=fp.StateKind.TERMINATED)
    with pytest.raises(ValueError):
        fp.Sync(generation=1, pods=[fp.DesiredPod.from_dict(busybox_pod())] * 2)
    with pytest.raises(ValueError):
        fp.ExitStatus()


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted({*fp.control.FROM_DEVICE, *fp.control.FROM_CLOUD})), s.msgpack_values)
def test_decode_arbitrary_fields_raises_only_message_errors(type_, value) -> None:
    data = value if isinstance(value, dict) else {"payload": value}
    with contextlib.suppress(fp.MessageError):
        fp.decode({**data, "type": type_})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(s.messages, st.data())
def test_decode_mutated_valid_messages_raises_only_message_errors(message, data) -> None:
    wire = fp.encode(message)

    def mutate(node, depth=0):
        if isinstance(node, dict) and node:
            key = data.draw(st.sampled_from(sorted(node, key=str)))
            action = data.draw(st.sampled_from(["drop", "replace", "descend"]))
            if action == "drop" and key != "type":
                del node[key]
            elif action == "replace" and key != "type":
                node[key] = data.draw(s.msgpack_values)
            else:
                mutate(node[key], depth + 1)
        elif isinstance(node, list) and node:
            mutate(node[data.draw(st.integers(0, len(node) - 1))], depth + 1)

    for _ in range(data.draw(st.integers(1, 4))):
        mutate(wire)
    with contextlib.suppress(fp.MessageError):
        fp.decode(unpack(pack(wire)))


# ------------------------------------------------------------------ stream kinds


REF = fp.PodRef(namespace="default", pod="web")
OPENS = [
    fp.ControlOpen(),
    fp.ExecOpen(ref=REF, container="main", command=("sh", "-c", "x"), tty=True, stdin=True),
    fp.AttachOpen(ref=REF, stdin=True),
    fp.LogsOpen(ref=REF, follow=True, tail_lines=10, timestamps=True, limit_bytes=100, previous=True),
    fp.LogsOpen(ref=REF, since_time=1.5e9),
    fp.PortForwardOpen(ref=REF, port=8080),
    fp.PortForwardOpen(host=True, port=22),
    fp.HostExecOpen(command=("uptime",)),
    fp.StatsOpen(interval=1.0),
]


@pytest.mark.parametrize("request_", OPENS, ids=lambda r: type(r).__name__)
def test_open_metadata_round_trips(request_) -> None:
    metadata = request_.to_metadata()
    assert metadata["kind"] == request_.kind.value and metadata["v"] == fp.PROTOCOL_VERSION
    assert fp.parse_open(unpack(pack(metadata))) == request_


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({}, "metadata.kind: is required"),
        ({"kind": "teleport"}, "unknown stream kind"),
        ({"kind": "control", "v": 2}, "version 2 is not supported"),
        ({"kind": "exec", "namespace": "a", "pod": "b"}, "command: is required"),
        ({"kind": "exec", "namespace": "a", "pod": "b", "command": []}, "must not be empty"),
        ({"kind": "exec", "namespace": "a", "command": ["sh"]}, "pod: is required"),
        ({"kind": "exec", "namespace": "a", "pod": "b", "command": ["sh"], "tty": "yes"}, "tty"),
        ({"kind": "logs", "namespace": "a", "pod": "b", "tail_lines": -1}, "tail_lines"),
        ({"kind": "logs", "namespace": "a", "pod": "b", "since_seconds": 5, "since_time": 1.0}, "exclude"),
        ({"kind": "portforward", "namespace": "a", "pod": "b", "port": 70000}, "port"),
        ({"kind": "portforward", "port": 80}, "namespace"),
        ({"kind": "stats", "interval": 0.01}, "interval"),
    ],
)
def test_bad_metadata_is_a_schema_error(metadata, match) -> None:
    with pytest.raises(fp.SchemaError, match=match):
        fp.parse_open(metadata)


@settings(max_examples=1000)
@given(st.sampled_from([k.value for k in fp.StreamKind]), s.msgpack_values)
def test_parse_open_fuzz(kind, value) -> None:
    data = value if isinstance(value, dict) else {"x": value}
    with contextlib.suppress(fp.SchemaError):
        fp.parse_open({**data, "kind": kind})


# ------------------------------------------------------------------ codes and purity


def test_error_codes_are_application_codes_and_map_to_http() -> None:
    assert all(code >= 0x100 for code in fp.AppError)
    assert fp.http_status(fp.AppError.NOT_FOUND) == 404
    assert fp.from_http_status(409) == fp.AppError.CONFLICT
    assert all(fp.from_http_status(fp.http_status(code)) == code for code in fp.AppError)
    assert fp.http_status(0x8) == 500 and fp.http_status(0x4A0) == 500


def test_fleetproto_is_sans_io() -> None:
    """No I/O, clocks or randomness, and no imports of either side of the system."""
    forbidden = {"asyncio", "socket", "time", "random", "os", "edge_agent", "cloud_bridge", "seqstream", "ssl"}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
