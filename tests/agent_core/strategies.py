"""Hypothesis strategies for fleetproto records (shared by the fuzz and round-trip tests)."""

from __future__ import annotations

from hypothesis import strategies as st

import fleetproto as fp

label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True)
uid = st.from_regex(r"[a-f0-9]{8}-[a-f0-9]{4}", fullmatch=True)
text = st.text(max_size=20)
abs_path = st.lists(label, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
rel_path = st.lists(label, min_size=1, max_size=3).map("/".join)
times = st.none() | st.floats(0, 2e9, allow_nan=False)
maybe_int = st.none() | st.integers(1, 2**40)

env = st.builds(fp.EnvVar, st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), text)
ports = st.builds(
    fp.ContainerPort,
    container_port=st.integers(1, 65535),
    protocol=st.sampled_from(list(fp.Protocol)),
    name=st.just("") | label,
    host_port=st.none() | st.integers(1, 65535),
)
resources = st.builds(
    fp.Resources,
    cpu_limit=st.none() | st.floats(0.001, 64),
    memory_limit_bytes=maybe_int,
    cpu_request=st.none() | st.floats(0.001, 64),
    memory_request_bytes=maybe_int,
)
mounts = st.builds(
    fp.VolumeMount, volume=label, mount_path=abs_path, sub_path=st.just("") | rel_path, read_only=st.booleans()
)
containers = st.builds(
    fp.Container,
    name=label,
    image=st.from_regex(r"[a-z]{1,8}(:[a-z0-9]{1,5})?", fullmatch=True),
    image_pull_policy=st.sampled_from(list(fp.PullPolicy)),
    command=st.lists(text, max_size=3).map(tuple),
    args=st.lists(text, max_size=3).map(tuple),
    working_dir=st.just("") | abs_path,
    env=st.lists(env, max_size=3).map(tuple),
    ports=st.lists(ports, max_size=2).map(tuple),
    resources=resources,
    volume_mounts=st.lists(mounts, max_size=2).map(tuple),
    tty=st.booleans(),
    stdin=st.booleans(),
    seccomp=st.sampled_from(list(fp.Seccomp)),
)
files = st.dictionaries(
    st.tuples(label, rel_path).map("/".join),
    st.builds(fp.PodFile, st.binary(max_size=32), st.integers(0, 0o7777)),
    max_size=3,
)
pods = st.builds(
    fp.DesiredPod,
    uid=uid,
    namespace=label,
    name=label,
    containers=st.lists(containers, min_size=1, max_size=3, unique_by=lambda c: c.name).map(tuple),
    resource_version=st.just("") | st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    restart_policy=st.sampled_from(list(fp.RestartPolicy)),
    termination_grace_seconds=st.floats(0, 600),
    files=files,
    host_network=st.booleans(),
)
conditions = st.builds(
    fp.Condition,
    type=st.sampled_from(["Ready", "ContainersReady", "MemoryPressure"]),
    status=st.sampled_from(list(fp.ConditionStatus)),
    reason=text,
    message=text,
    last_transition=times,
)
states = st.one_of(
    st.builds(fp.ContainerState, kind=st.just(fp.StateKind.WAITING), reason=text, message=text),
    st.builds(fp.ContainerState, kind=st.just(fp.StateKind.RUNNING), started_at=times),
    st.builds(
        fp.ContainerState,
        kind=st.just(fp.StateKind.TERMINATED),
        exit_code=st.integers(0, 255),
        reason=text,
        started_at=times,
        finished_at=times,
        container_id=text,
    ),
)
container_statuses = st.builds(
    fp.ContainerStatus,
    name=label,
    state=states,
    last_state=st.none() | states,
    ready=st.booleans(),
    started=st.booleans(),
    restart_count=st.integers(0, 1000),
    image=text,
    container_id=text,
)
pod_status = st.builds(
    fp.PodStatusReport,
    uid=uid,
    namespace=label,
    name=label,
    phase=st.sampled_from(list(fp.PodPhase)),
    conditions=st.lists(conditions, max_size=3).map(tuple),
    container_statuses=st.lists(container_statuses, max_size=3).map(tuple),
    pod_ip=st.just("") | st.ip_addresses(v=4).map(str),
    start_time=times,
    message=text,
)
node_resources = st.builds(
    fp.NodeResources,
    cpu_millis=st.integers(0, 10**6),
    memory_bytes=st.integers(0, 2**40),
    ephemeral_storage_bytes=st.integers(0, 2**44),
    pods=st.integers(0, 500),
)
node_info = st.builds(
    fp.NodeInfo,
    os=st.just("linux"),
    arch=st.sampled_from(["amd64", "arm64", "arm"]),
    kernel=text,
    hostname=text,
    cpus=st.integers(0, 256),
    memory_bytes=st.integers(0, 2**40),
    disk_bytes=st.integers(0, 2**44),
    addresses=st.lists(st.builds(fp.NodeAddress, st.just("InternalIP"), st.ip_addresses().map(str)), max_size=3).map(
        tuple
    ),
    agent_version=text,
    runtime=st.builds(fp.RuntimeInfo, st.sampled_from(["docker", "process"]), text),
    features=st.lists(st.sampled_from(["host_exec", "host_port_forward"]), unique=True).map(tuple),
)
messages = st.one_of(
    st.builds(fp.NodeHello, node=node_info, generation=st.integers(0, 2**40), pods=st.lists(uid).map(tuple)),
    st.builds(
        fp.NodeStatus,
        time=st.floats(0, 2e9),
        conditions=st.lists(conditions, max_size=3).map(tuple),
        capacity=node_resources,
        allocatable=node_resources,
        counters=st.dictionaries(label, st.integers(0, 2**40), max_size=3),
    ),
    pod_status,
    st.builds(fp.PodUpsert, pod=pods, generation=st.integers(0, 2**40)),
    st.builds(
        fp.PodDelete,
        uid=uid,
        namespace=label,
        name=label,
        grace_seconds=st.none() | st.floats(0, 100),
        generation=st.integers(0, 100),
    ),
    st.builds(
        fp.Sync, generation=st.integers(0, 2**40), pods=st.lists(pods, max_size=3, unique_by=lambda p: p.uid).map(tuple)
    ),
    st.builds(fp.Error, code=st.sampled_from(list(fp.AppError)), message=text, about=text),
    st.builds(fp.PodDeleted, uid=uid, namespace=label, name=label),
)

# Any msgpack-representable value, for fuzzing decoders with well-formed but arbitrary input.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
