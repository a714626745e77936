"""A device's ``StatsSummary`` as the kubelet serves it: ``/stats/summary`` and ``/metrics/resource``.

Pure functions, no I/O and no clock: the sample carries its own time.

* ``summary_document`` builds a kubelet ``stats/v1alpha1`` Summary (field
  names from ``k8s.io/kubelet/pkg/apis/stats/v1alpha1``). CPU rates
  (``usageNanoCores``) need two samples; with no usable previous sample they
  are left out, as a kubelet does right after it starts.
* ``resource_metrics_text`` writes what the kubelet's resource metrics
  collector (``pkg/kubelet/metrics/collectors/resource_metrics.go``) exposes,
  in Prometheus text format 0.0.4 with millisecond timestamps: metrics-server
  reads ``node_/container_/pod_cpu_usage_seconds_total`` and
  ``*_memory_working_set_bytes`` from it.

Only pods the bridge knows on that node are reported (matched by UID, so a
container left over from a deleted pod of the same name is not counted).
Pod totals are sums over containers; a pod's network counters are the largest
of its containers' (containers of one pod share a network namespace, so
summing would count the same interface twice).

The text is formatted here rather than with ``prometheus_client.generate_latest``:
that drops ``_total`` from counter families in ``# TYPE`` lines, where the
kubelet keeps the full name. Values use ``floatToGoString`` so they read as
Go's client would print them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.utils import floatToGoString

import fleetproto as fp

NANOS = 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class PodMeta:
    """What the bridge knows of a pod the device reports (from the API object)."""

    uid: str
    namespace: str
    name: str
    start_time: float | None = None
    container_starts: Mapping[str, float] = field(default_factory=dict)


def pod_meta(obj: Mapping[str, Any]) -> PodMeta:
    """``PodMeta`` from a v1 Pod dict: identity, ``status.startTime``, containers' ``startedAt``."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    starts: dict[str, float] = {}
    for cs in status.get("containerStatuses") or ():
        started = parse_time(((cs.get("state") or {}).get("running") or {}).get("startedAt"))
        if started is not None and cs.get("name"):
            starts[str(cs["name"])] = started
    return PodMeta(
        uid=str(meta.get("uid", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        start_time=parse_time(status.get("startTime")),
        container_starts=starts,
    )


def parse_time(value: Any) -> float | None:
    """An RFC 3339 time (as the API writes it) as epoch seconds; None if absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def rfc3339(epoch: float) -> str:
    """metav1.Time's JSON form (second precision, UTC)."""
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_rate(prev_ns: int, prev_time: float, ns: int, time: float) -> int | None:
    """Nanocores between two cumulative CPU samples; None if they cannot give a rate
    (no time passed, or the counter went back: the container or device restarted)."""
    elapsed = time - prev_time
    if elapsed <= 0 or ns < prev_ns:
        return None
    return int((ns - prev_ns) / elapsed)


def known_pods(summary: fp.StatsSummary, known: Mapping[str, PodMeta]) -> list[tuple[PodMeta, fp.PodUsage]]:
    """The reported pods the bridge knows (by UID), with their API identity, in report order."""
    out = []
    for usage in summary.pods:
        meta = known.get(usage.uid)
        if meta is not None:
            out.append((meta, usage))
    return out


# ---------------------------------------------------------------------------------------- /stats/summary


def _cpu(time: str, ns: int, rate: int | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"time": time, "usageCoreNanoSeconds": ns}
    if rate is not None:
        doc["usageNanoCores"] = rate
    return doc


def _previous_containers(previous: fp.StatsSummary | None) -> dict[tuple[str, str], int]:
    if previous is None:
        return {}
    return {(p.uid, c.name): c.cpu_usage_ns for p in previous.pods for c in p.containers}


def summary_document(
    node: str,
    summary: fp.StatsSummary,
    known: Mapping[str, PodMeta],
    *,
    previous: fp.StatsSummary | None = None,
    node_start: float | None = None,
) -> dict[str, Any]:
    """The kubelet ``/stats/summary`` document for ``node`` from one device sample.

    ``previous`` (an earlier sample of the same device) gives CPU rates;
    ``node_start`` is the node's start time (default: the sample's time)."""
    t = rfc3339(summary.time)
    n = summary.node
    prev_t = previous.time if previous is not None else None
    node_rate = (
        cpu_rate(previous.node.cpu_usage_ns, previous.time, n.cpu_usage_ns, summary.time)
        if previous is not None
        else None
    )
    fs = {
        "time": t,
        "availableBytes": n.fs_available_bytes,
        "capacityBytes": n.fs_capacity_bytes,
        "usedBytes": max(0, n.fs_capacity_bytes - n.fs_available_bytes),
    }
    pods = known_pods(summary, known)
    node_doc: dict[str, Any] = {
        "nodeName": node,
        "startTime": rfc3339(node_start if node_start is not None else summary.time),
        "cpu": _cpu(t, n.cpu_usage_ns, node_rate),
        "memory": {
            "time": t,
            "availableBytes": n.memory_available_bytes,
            "workingSetBytes": n.memory_working_set_bytes,  # usageBytes (with page cache) is not reported
        },
        "fs": fs,
        "runtime": {"imageFs": dict(fs), "containerFs": dict(fs)},
    }
    if n.interfaces:
        node_doc["network"] = _node_network(t, n.interfaces)
    prev_containers = _previous_containers(previous)
    return {
        "node": node_doc,
        "pods": [_pod_doc(meta, usage, t, summary.time, prev_t, prev_containers) for meta, usage in pods],
    }


def _interface(i: fp.InterfaceUsage) -> dict[str, Any]:
    return {
        "name": i.name,
        "rxBytes": i.rx_bytes,
        "rxErrors": i.rx_errors,
        "txBytes": i.tx_bytes,
        "txErrors": i.tx_errors,
    }


def _node_network(t: str, interfaces: tuple[fp.InterfaceUsage, ...]) -> dict[str, Any]:
    """Every interface in ``interfaces``; inline the kubelet's default (``eth0``), else the first
    (a device's uplink is often ``wlan0`` or ``end0``, and consumers read the inline one)."""
    main = next((i for i in interfaces if i.name == "eth0"), interfaces[0])
    return {"time": t, **_interface(main), "interfaces": [_interface(i) for i in interfaces]}


def _pod_doc(
    meta: PodMeta,
    usage: fp.PodUsage,
    t: str,
    now: float,
    prev_t: float | None,
    prev_containers: Mapping[tuple[str, str], int],
) -> dict[str, Any]:
    containers = []
    pod_rate: int | None = 0 if prev_t is not None else None
    for c in usage.containers:
        prev_ns = prev_containers.get((usage.uid, c.name))
        rate = cpu_rate(prev_ns, prev_t, c.cpu_usage_ns, now) if prev_ns is not None and prev_t is not None else None
        pod_rate = pod_rate + rate if pod_rate is not None and rate is not None else None
        memory: dict[str, Any] = {
            "time": t,
            "usageBytes": c.memory_usage_bytes,
            "workingSetBytes": c.memory_working_set_bytes,
        }
        if c.memory_rss_bytes is not None:
            memory["rssBytes"] = c.memory_rss_bytes
        start = meta.container_starts.get(c.name, meta.start_time)
        doc: dict[str, Any] = {
            "name": c.name,
            "startTime": rfc3339(start if start is not None else now),
            "cpu": _cpu(t, c.cpu_usage_ns, rate),
            "memory": memory,
        }
        if c.fs_used_bytes is not None:
            doc["rootfs"] = {"time": t, "usedBytes": c.fs_used_bytes}
        containers.append(doc)
    cs = usage.containers
    pod: dict[str, Any] = {
        "podRef": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
        "startTime": rfc3339(meta.start_time if meta.start_time is not None else now),
        "containers": containers,
        "cpu": _cpu(t, sum(c.cpu_usage_ns for c in cs), pod_rate if cs else None),
        "memory": {
            "time": t,
            "usageBytes": sum(c.memory_usage_bytes for c in cs),
            "workingSetBytes": sum(c.memory_working_set_bytes for c in cs),
        },
    }
    rx = [c.net_rx_bytes for c in cs if c.net_rx_bytes is not None]
    tx = [c.net_tx_bytes for c in cs if c.net_tx_bytes is not None]
    if rx or tx:
        pod["network"] = {"time": t, "name": "eth0", "rxBytes": max(rx, default=0), "txBytes": max(tx, default=0)}
    used = [c.fs_used_bytes for c in cs if c.fs_used_bytes is not None]
    if used:
        pod["ephemeral-storage"] = {"time": t, "usedBytes": sum(used)}
    pids = [c.pids for c in cs if c.pids is not None]
    if pids:
        pod["process_stats"] = {"process_count": sum(pids)}
    return pod


# ---------------------------------------------------------------------------------------- /metrics/resource

_HELP = {
    "node_cpu_usage_seconds_total": ("counter", "[STABLE] Cumulative cpu time consumed by the node in core-seconds"),
    "node_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the node in bytes"),
    "container_start_time_seconds": ("gauge", "[STABLE] Start time of the container since unix epoch in seconds"),
    "container_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    ),
    "container_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the container in bytes"),
    "pod_cpu_usage_seconds_total": ("counter", "[STABLE] Cumulative cpu time consumed by the pod in core-seconds"),
    "pod_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the pod in bytes"),
    "resource_scrape_error": ("gauge", "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise"),
    "scrape_error": ("gauge", "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise"),
}

Sample = tuple[Mapping[str, str], float, int | None]
"""Labels, value, timestamp in milliseconds (None: no timestamp)."""


def escape_label(value: str) -> str:
    """Text format label value escaping: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, samples: Iterable[Sample]) -> list[str]:
    kind, text = _HELP[name]
    lines = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
    for labels, value, ts in samples:
        label_text = ",".join(f'{k}="{escape_label(v)}"' for k, v in sorted(labels.items()))
        series = f"{name}{{{label_text}}}" if label_text else name
        lines.append(f"{series} {floatToGoString(value)}" + (f" {ts}" if ts is not None else ""))
    return lines


def resource_metrics_text(summary: fp.StatsSummary | None, known: Mapping[str, PodMeta]) -> str:
    """``/metrics/resource`` for one device sample; ``None`` (no sample) gives only
    ``scrape_error 1``, which is what a kubelet serves when its stats fail."""
    if summary is None:
        error: list[Sample] = [({}, 1.0, None)]
        return "\n".join(_family("resource_scrape_error", error) + _family("scrape_error", error)) + "\n"
    ms = int(summary.time * 1000)
    n = summary.node
    families: dict[str, list[Sample]] = {name: [] for name in _HELP}
    families["node_cpu_usage_seconds_total"].append(({}, n.cpu_usage_ns / NANOS, ms))
    families["node_memory_working_set_bytes"].append(({}, float(n.memory_working_set_bytes), ms))
    for meta, usage in known_pods(summary, known):
        pod_labels = {"namespace": meta.namespace, "pod": meta.name}
        for c in usage.containers:
            labels = {**pod_labels, "container": c.name}
            start = meta.container_starts.get(c.name)
            if start is not None and start > 0:
                families["container_start_time_seconds"].append((labels, start, None))
            families["container_cpu_usage_seconds_total"].append((labels, c.cpu_usage_ns / NANOS, ms))
            families["container_memory_working_set_bytes"].append((labels, float(c.memory_working_set_bytes), ms))
        if usage.containers:
            cpu = sum(c.cpu_usage_ns for c in usage.containers) / NANOS
            memory = float(sum(c.memory_working_set_bytes for c in usage.containers))
            families["pod_cpu_usage_seconds_total"].append((pod_labels, cpu, ms))
            families["pod_memory_working_set_bytes"].append((pod_labels, memory, ms))
    families["resource_scrape_error"].append(({}, 0.0, None))
    families["scrape_error"].append(({}, 0.0, None))
    lines: list[str] = []
    for name, samples in families.items():
        if samples:
            lines += _family(name, samples)
    return "\n".join(lines) + "\n"
