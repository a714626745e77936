"""From a desired pod to runtime ``ContainerSpec``s: labels, names, files, spec hashes.

Containers carry labels, not local bookkeeping, as the source of truth: after
an agent restart (or a lost state file) the labels say which pod, which
container and which attempt a runtime container is, so the agent adopts it
instead of starting a duplicate. The spec hash label says whether it still
matches the desired spec; a changed spec means replace the container.

Each restart creates a new container (attempt n+1), as the kubelet does, so
the previous one stays for ``logs --previous`` and the attempt number *is* the
restart count, surviving agent restarts for free.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Sequence

import fleetproto as fp
from edge_agent.runtime import ContainerSpec, ContainerStatus, FileSpec, MountSpec, PortSpec, PullPolicy, Resources
from fleetproto.framing import pack

LABEL_NODE = "org.edgefleet.node"
LABEL_POD_UID = "org.edgefleet.pod-uid"
LABEL_POD_NAMESPACE = "org.edgefleet.pod-namespace"
LABEL_POD_NAME = "org.edgefleet.pod-name"
LABEL_CONTAINER = "org.edgefleet.container"
LABEL_ATTEMPT = "org.edgefleet.attempt"
LABEL_SPEC_HASH = "org.edgefleet.spec-hash"
LABEL_NETWORK_OF = "org.edgefleet.network-of"
"""On a pod's second and later containers: the id of the first container whose network they joined."""

_PULL = {
    fp.PullPolicy.ALWAYS: PullPolicy.ALWAYS,
    fp.PullPolicy.IF_NOT_PRESENT: PullPolicy.IF_NOT_PRESENT,
    fp.PullPolicy.NEVER: PullPolicy.NEVER,
}


def pull_policy(container: fp.Container) -> PullPolicy:
    return _PULL[container.image_pull_policy]


def container_name(pod: fp.DesiredPod, container: fp.Container, attempt: int) -> str:
    """Unique per attempt; readable in ``docker ps`` (the kubelet's ``k8s_...`` scheme, reordered)."""
    return f"ef_{pod.namespace}_{pod.name}_{container.name}_{pod.uid[:8]}_{attempt}"


def pod_hostname(pod: fp.DesiredPod) -> str:
    """``spec.hostname``, else the pod's name cut to a DNS label's 63 characters (the kubelet's rule)."""
    return pod.hostname or pod.name[:63].rstrip("-.")


def attempt_of(status: ContainerStatus) -> int:
    try:
        return int(status.labels.get(LABEL_ATTEMPT, "0"))
    except ValueError:
        return 0


def container_files(pod: fp.DesiredPod, container: fp.Container) -> dict[str, FileSpec]:
    """The pod's volume files as this container sees them, by absolute path."""
    out: dict[str, FileSpec] = {}
    for mount in container.volume_mounts:
        files = pod.volume_files(mount.volume)
        if mount.sub_path:
            if mount.sub_path in files:  # a single file mounted at mount_path
                spec = files[mount.sub_path]
                out[mount.mount_path] = FileSpec(spec.data, spec.mode)
                continue
            prefix = mount.sub_path + "/"
            files = {key[len(prefix) :]: spec for key, spec in files.items() if key.startswith(prefix)}
        for rel, spec in files.items():
            out[posixpath.join(mount.mount_path, rel)] = FileSpec(spec.data, spec.mode)
    return out


def spec_hash(pod: fp.DesiredPod, container: fp.Container) -> str:
    """Changes exactly when the runtime container would have to change."""
    files = {path: [hashlib.sha256(f.data).hexdigest(), f.mode] for path, f in container_files(pod, container).items()}
    material = {
        "container": container.to_dict(),
        "files": dict(sorted(files.items())),
        "host_network": pod.host_network,
        "first": pod.containers[0].name == container.name,
    }
    return hashlib.sha256(pack(material)).hexdigest()[:16]


def runtime_spec(
    pod: fp.DesiredPod,
    container: fp.Container,
    *,
    node: str,
    attempt: int,
    network_of: str | None = None,
    mounts: Sequence[MountSpec] = (),
    seccomp_default: bool = False,
) -> ContainerSpec:
    """``network_of``: join that container's network namespace (a pod shares one, like the kubelet's sandbox).

    The container that owns the pod's network namespace is named after the pod (``pod_hostname``);
    the engine gives the ones that join it the same hostname; host-network pods have the device's.
    """
    res = container.resources
    extra = {LABEL_NETWORK_OF: network_of} if network_of and not pod.host_network else {}
    own_network = not pod.host_network and not network_of
    return ContainerSpec(
        name=container_name(pod, container, attempt),
        image=container.image,
        command=container.command,
        args=container.args,
        env={e.name: e.value for e in container.env},
        working_dir=container.working_dir or None,
        ports=[
            PortSpec(
                container_port=p.container_port,
                protocol=p.protocol.value.lower(),
                host_port=p.host_port,
                host_ip=p.host_ip,
            )
            for p in container.ports
        ],
        files=container_files(pod, container),
        tty=container.tty,
        stdin=container.stdin,
        stdin_once=container.stdin_once,
        seccomp_unconfined=container.seccomp is fp.Seccomp.UNCONFINED
        or (container.seccomp is fp.Seccomp.UNSET and not seccomp_default),
        resources=Resources(
            memory_limit_bytes=res.memory_limit_bytes,
            cpu_limit=res.cpu_limit,
            cpu_request=res.cpu_request,
        ),
        labels={
            LABEL_NODE: node,
            LABEL_POD_UID: pod.uid,
            LABEL_POD_NAMESPACE: pod.namespace,
            LABEL_POD_NAME: pod.name,
            LABEL_CONTAINER: container.name,
            LABEL_ATTEMPT: str(attempt),
            LABEL_SPEC_HASH: spec_hash(pod, container),
            **extra,
        },
        network_mode="host" if pod.host_network else f"container:{network_of}" if network_of else None,
        mounts=mounts,
        hostname=pod_hostname(pod) if own_network else None,
    )
