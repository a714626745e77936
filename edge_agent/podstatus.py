"""Pod status from what the runtime shows: pure functions, no I/O.

Follows the kubelet's rules closely enough that ``kubectl get pods`` reads
the same as on a normal node:

* a container's state is ``waiting`` (with ``ContainerCreating``,
  ``ErrImagePull``, ``ImagePullBackOff``, ``CrashLoopBackOff``,
  ``CreateContainerError``), ``running`` or ``terminated``; the instance
  before the current one is its ``last_state``;
* restart count = the attempt number of the current instance;
* phase: ``Succeeded``/``Failed`` once every container terminated for good,
  ``Running`` once every container was started at least once, else
  ``Pending``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import fleetproto as fp
from edge_agent.runtime import ContainerState, ContainerStatus

from .podspec import attempt_of

CREATING = "ContainerCreating"
CRASH_LOOP = "CrashLoopBackOff"
UNSUPPORTED_FIELDS = "UnsupportedFields"


def ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def should_restart(policy: fp.RestartPolicy, exit_code: int | None) -> bool:
    if policy is fp.RestartPolicy.ALWAYS:
        return True
    if policy is fp.RestartPolicy.ON_FAILURE:
        return exit_code != 0
    return False


def is_finished(status: ContainerStatus) -> bool:
    """Exited, or created but failed to start: this instance will not run again."""
    return status.state is ContainerState.EXITED or (
        status.state is ContainerState.CREATED and status.reason == "StartError"
    )


def terminated(status: ContainerStatus) -> fp.ContainerState:
    code = status.exit_code if status.exit_code is not None else (128 if status.reason == "StartError" else 0)
    return fp.ContainerState(
        kind=fp.StateKind.TERMINATED,
        reason=status.reason or ("Completed" if code == 0 else "Error"),
        message=status.message or "",
        exit_code=code,
        signal=code - 128 if 128 < code < 160 else None,
        started_at=ts(status.started_at),
        finished_at=ts(status.finished_at),
        container_id=status.id,
    )


@dataclass(frozen=True, slots=True)
class ContainerView:
    """Everything known about one desired container at one moment."""

    spec: fp.Container
    current: ContainerStatus | None = None
    previous: ContainerStatus | None = None
    waiting: tuple[str, str] | None = None
    """(reason, message) the worker set while it could not run the container (pulling, back-off)."""
    will_restart: bool = False
    backoff_seconds: float = 0.0


def container_status(view: ContainerView) -> fp.ContainerStatus:
    current, previous = view.current, view.previous
    last = terminated(previous) if previous is not None and is_finished(previous) else None
    running = current is not None and current.state is ContainerState.RUNNING
    if view.waiting is not None and not running:
        if current is not None and is_finished(current):
            last = terminated(current)
        state = fp.ContainerState(kind=fp.StateKind.WAITING, reason=view.waiting[0], message=view.waiting[1])
    elif current is None or (current.state is ContainerState.CREATED and not is_finished(current)):
        state = fp.ContainerState(kind=fp.StateKind.WAITING, reason=CREATING)
    elif running:
        state = fp.ContainerState(kind=fp.StateKind.RUNNING, started_at=ts(current.started_at), container_id=current.id)
    elif view.will_restart:
        last = terminated(current)
        message = f"back-off {view.backoff_seconds:g}s restarting failed container={view.spec.name}"
        state = fp.ContainerState(kind=fp.StateKind.WAITING, reason=CRASH_LOOP, message=message)
    else:
        state = terminated(current)
    return fp.ContainerStatus(
        name=view.spec.name,
        state=state,
        last_state=last,
        ready=running,
        started=running,
        restart_count=attempt_of(current) if current is not None else 0,
        image=view.spec.image,
        container_id=current.id if current is not None else "",
    )


def phase(views: list[ContainerView], statuses: list[fp.ContainerStatus]) -> fp.PodPhase:
    final = [
        s.state.kind is fp.StateKind.TERMINATED and not v.will_restart for v, s in zip(views, statuses, strict=True)
    ]
    if all(final):
        ok = all(s.state.exit_code == 0 for s in statuses)
        return fp.PodPhase.SUCCEEDED if ok else fp.PodPhase.FAILED
    started = [v.current is not None and (v.current.started_at is not None or is_finished(v.current)) for v in views]
    return fp.PodPhase.RUNNING if all(started) else fp.PodPhase.PENDING


def _cond(type_: str, ok: bool, reason: str = "", message: str = "") -> fp.Condition:
    status = fp.ConditionStatus.TRUE if ok else fp.ConditionStatus.FALSE
    return fp.Condition(type=type_, status=status, reason=reason, message=message)


def pod_status(
    pod: fp.DesiredPod,
    views: list[ContainerView],
    *,
    pod_ip: str = "",
    host_ip: str = "",
    start_time: float | None = None,
) -> tuple[fp.PodStatusReport, list[fp.Condition]]:
    """The report (conditions without transition times) and its conditions, for ``Transitions``."""
    statuses = [container_status(v) for v in views]
    pod_phase = phase(views, statuses)
    ready = all(s.ready for s in statuses)
    not_ready = [s.name for s in statuses if not s.ready]
    why = "" if ready else f"containers with unready status: [{' '.join(not_ready)}]"
    reason = "PodCompleted" if pod_phase in (fp.PodPhase.SUCCEEDED, fp.PodPhase.FAILED) else "ContainersNotReady"
    conditions = [
        _cond("PodScheduled", True),
        _cond("Initialized", True),
        _cond("ContainersReady", ready, "" if ready else reason, why),
        _cond("Ready", ready, "" if ready else reason, why),
    ]
    message = ""
    if pod.unknown_fields:
        message = "fields not supported by this device were ignored: " + ", ".join(pod.unknown_fields)
        conditions.append(
            fp.Condition(
                type=UNSUPPORTED_FIELDS, status=fp.ConditionStatus.TRUE, reason="UnknownFields", message=message
            )
        )
    report = fp.PodStatusReport(
        uid=pod.uid,
        namespace=pod.namespace,
        name=pod.name,
        phase=pod_phase,
        conditions=tuple(conditions),
        container_statuses=tuple(statuses),
        pod_ip=pod_ip,
        host_ip=host_ip,
        start_time=start_time,
        message=message,
        observed_resource_version=pod.resource_version,
    )
    return report, conditions


def invalid_pod_status(uid: str, namespace: str, name: str, problem: str) -> fp.PodStatusReport:
    """For an upsert the device could not accept at all: nothing runs, the reason says why."""
    return fp.PodStatusReport(
        uid=uid,
        namespace=namespace,
        name=name,
        phase=fp.PodPhase.FAILED,
        reason="InvalidSpec",
        message=f"the device rejected this pod: {problem}",
        conditions=(
            fp.Condition(type="Ready", status=fp.ConditionStatus.FALSE, reason="InvalidSpec", message=problem),
        ),
    )
