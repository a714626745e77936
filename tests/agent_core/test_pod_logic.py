"""Pure pod logic: runtime specs and labels, spec hashes, back-off, status rules, outbox."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import fleetproto as fp
from edge_agent import podspec
from edge_agent.backoff import Backoff
from edge_agent.outbox import Outbox
from edge_agent.podstatus import ContainerView, container_status, invalid_pod_status, pod_status
from edge_agent.runtime import ContainerState, ContainerStatus, FileSpec

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 1, 1, 0, 1, tzinfo=UTC)


def make_pod(**kw) -> fp.DesiredPod:
    defaults = dict(
        uid="0123456789ab",
        namespace="default",
        name="web",
        containers=(
            fp.Container(
                name="main",
                image="busybox",
                command=("sh", "-c"),
                args=("sleep 1",),
                env=(fp.EnvVar("A", "1"),),
                ports=(fp.ContainerPort(container_port=80, host_port=8080),),
                resources=fp.Resources(cpu_limit=0.5, memory_limit_bytes=64 << 20),
                volume_mounts=(
                    fp.VolumeMount(volume="cfg", mount_path="/etc/app"),
                    fp.VolumeMount(volume="cfg", mount_path="/one.conf", sub_path="a.conf"),
                    fp.VolumeMount(volume="sec", mount_path="/run/sec", sub_path="dir"),
                ),
            ),
            fp.Container(name="side", image="busybox"),
        ),
        files={
            "cfg/a.conf": fp.PodFile(b"a=1", 0o644),
            "cfg/sub/b.conf": fp.PodFile(b"b=2", 0o600),
            "sec/dir/token": fp.PodFile(b"t", 0o400),
            "sec/other": fp.PodFile(b"x", 0o400),
        },
    )
    defaults.update(kw)
    return fp.DesiredPod(**defaults)


def test_runtime_spec_maps_everything_and_labels_the_container() -> None:
    pod = make_pod()
    spec = podspec.runtime_spec(pod, pod.containers[0], node="pi-1", attempt=3)
    assert spec.name == "ef_default_web_main_01234567_3"
    assert spec.command == ("sh", "-c") and spec.args == ("sleep 1",) and spec.env == {"A": "1"}
    assert spec.ports[0].container_port == 80 and spec.ports[0].host_port == 8080 and spec.ports[0].protocol == "tcp"
    assert spec.resources.cpu_limit == 0.5 and spec.resources.memory_limit_bytes == 64 << 20
    assert dict(spec.files) == {
        "/etc/app/a.conf": FileSpec(b"a=1", 0o644),
        "/etc/app/sub/b.conf": FileSpec(b"b=2", 0o600),
        "/one.conf": FileSpec(b"a=1", 0o644),
        "/run/sec/token": FileSpec(b"t", 0o400),
    }
    assert spec.labels[podspec.LABEL_NODE] == "pi-1" and spec.labels[podspec.LABEL_POD_UID] == pod.uid
    assert spec.labels[podspec.LABEL_CONTAINER] == "main" and spec.labels[podspec.LABEL_ATTEMPT] == "3"
    assert spec.network_mode is None
    host = make_pod(host_network=True)
    assert podspec.runtime_spec(host, host.containers[1], node="n", attempt=0).network_mode == "host"


def test_seccomp_follows_the_pod_then_the_agent_default() -> None:
    def unconfined(seccomp: fp.Seccomp, default: bool) -> bool:
        pod = make_pod(containers=(fp.Container(name="main", image="busybox", seccomp=seccomp),))
        return podspec.runtime_spec(
            pod, pod.containers[0], node="n", attempt=0, seccomp_default=default
        ).seccomp_unconfined

    # As a kubelet: unset means unconfined, unless the operator set the default (--seccomp-default).
    assert unconfined(fp.Seccomp.UNSET, default=False) and not unconfined(fp.Seccomp.UNSET, default=True)
    assert unconfined(fp.Seccomp.UNCONFINED, default=True) and unconfined(fp.Seccomp.UNCONFINED, default=False)
    assert not unconfined(fp.Seccomp.RUNTIME_DEFAULT, default=False)
    assert not unconfined(fp.Seccomp.RUNTIME_DEFAULT, default=True)


def test_spec_hash_changes_only_with_the_container() -> None:
    pod = make_pod()
    main, side = pod.containers
    assert podspec.spec_hash(pod, main) == podspec.spec_hash(make_pod(resource_version="99"), main)
    changed_file = make_pod(files={**pod.files, "cfg/a.conf": fp.PodFile(b"a=2")})
    assert podspec.spec_hash(changed_file, main) != podspec.spec_hash(pod, main)
    assert podspec.spec_hash(changed_file, side) == podspec.spec_hash(pod, side), "side mounts nothing"
    new_image = make_pod(containers=(main, fp.Container(name="side", image="busybox:2")))
    assert podspec.spec_hash(new_image, new_image.containers[1]) != podspec.spec_hash(pod, side)


def test_backoff_doubles_to_the_cap() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(0, 8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert backoff.reset_after == 600
    assert Backoff(0.1, 0.4).delay(10**6) == 0.4
    with pytest.raises(ValueError):
        Backoff(5, 1)


def status(state: ContainerState, *, attempt: int = 0, code: int | None = None, reason: str | None = None, **kw):
    return ContainerStatus(
        id=f"id{attempt}",
        name=f"c{attempt}",
        image="busybox",
        state=state,
        exit_code=code,
        reason=reason,
        created_at=T0,
        started_at=kw.get("started_at", T0 if state is not ContainerState.CREATED else None),
        finished_at=T1 if state is ContainerState.EXITED else None,
        labels={podspec.LABEL_ATTEMPT: str(attempt)},
    )


SPEC = fp.Container(name="main", image="busybox")


def test_container_status_states() -> None:
    running = container_status(ContainerView(SPEC, status(ContainerState.RUNNING, attempt=2)))
    assert running.state.kind is fp.StateKind.RUNNING and running.ready and running.restart_count == 2
    assert running.state.started_at == T0.timestamp()

    creating = container_status(ContainerView(SPEC, None))
    assert (creating.state.kind, creating.state.reason) == (fp.StateKind.WAITING, "ContainerCreating")

    pull = container_status(ContainerView(SPEC, None, waiting=("ErrImagePull", "image 'x' not found")))
    assert pull.state.reason == "ErrImagePull" and "not found" in pull.state.message

    exited = status(ContainerState.EXITED, attempt=1, code=137, reason="Error")
    crash = container_status(ContainerView(SPEC, exited, will_restart=True, backoff_seconds=20))
    assert crash.state.reason == "CrashLoopBackOff" and "back-off 20s" in crash.state.message
    assert crash.last_state.kind is fp.StateKind.TERMINATED and crash.last_state.exit_code == 137
    assert crash.last_state.signal == 9 and crash.restart_count == 1

    done = container_status(ContainerView(SPEC, status(ContainerState.EXITED, code=0, reason="Completed")))
    assert done.state.kind is fp.StateKind.TERMINATED and done.state.reason == "Completed"

    previous = status(ContainerState.EXITED, attempt=0, code=1, reason="Error")
    again = container_status(ContainerView(SPEC, status(ContainerState.RUNNING, attempt=1), previous=previous))
    assert again.state.kind is fp.StateKind.RUNNING and again.last_state.exit_code == 1


def views(*currents, will_restart=False):
    return [
        ContainerView(fp.Container(name=f"c{i}", image="x"), c, will_restart=will_restart)
        for i, c in enumerate(currents)
    ]


@pytest.mark.parametrize(
    ("currents", "will_restart", "phase"),
    [
        ((None,), False, fp.PodPhase.PENDING),
        ((status(ContainerState.RUNNING), None), False, fp.PodPhase.PENDING),
        ((status(ContainerState.RUNNING), status(ContainerState.RUNNING)), False, fp.PodPhase.RUNNING),
        ((status(ContainerState.EXITED, code=0),), False, fp.PodPhase.SUCCEEDED),
        ((status(ContainerState.EXITED, code=0), status(ContainerState.EXITED, code=2)), False, fp.PodPhase.FAILED),
        ((status(ContainerState.EXITED, code=2),), True, fp.PodPhase.RUNNING),
        ((status(ContainerState.RUNNING), status(ContainerState.EXITED, code=0)), False, fp.PodPhase.RUNNING),
    ],
)
def test_pod_phase(currents, will_restart, phase) -> None:
    pod = make_pod(containers=tuple(fp.Container(name=f"c{i}", image="x") for i in range(len(currents))))
    report, _ = pod_status(pod, views(*currents, will_restart=will_restart))
    assert report.phase is phase
    ready = report.condition("Ready")
    assert (ready.status is fp.ConditionStatus.TRUE) == all(
        c is not None and c.state is ContainerState.RUNNING for c in currents
    )


def test_unknown_fields_become_a_condition() -> None:
    pod = make_pod().with_unknown(("pod.securityContext",))
    report, _ = pod_status(pod, views(None, None))
    condition = report.condition("UnsupportedFields")
    assert condition.status is fp.ConditionStatus.TRUE and "pod.securityContext" in condition.message
    assert "pod.securityContext" in report.message
    bad = invalid_pod_status("u", "ns", "n", "containers: required")
    assert bad.phase is fp.PodPhase.FAILED and bad.reason == "InvalidSpec"


async def test_outbox_keeps_the_latest_per_pod() -> None:
    box = Outbox()
    make = lambda uid, phase: fp.PodStatusReport(uid=uid, namespace="n", name=uid, phase=phase)  # noqa: E731
    box.put_status(make("a", fp.PodPhase.PENDING))
    box.put_status(make("a", fp.PodPhase.RUNNING))
    box.put_status(make("b", fp.PodPhase.RUNNING))
    box.put_deleted(fp.PodDeleted(uid="b"))
    box.put_node_status(fp.NodeStatus(time=1))
    box.put_node_status(fp.NodeStatus(time=2))
    await box.wait()
    taken = box.take()
    assert [type(m).__name__ for m in taken] == ["NodeStatus", "PodDeleted", "PodStatusReport"]
    assert taken[0].time == 2 and taken[2].phase is fp.PodPhase.RUNNING
    assert box.take() == [] and len(box) == 0
