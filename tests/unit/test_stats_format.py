"""fleetproto StatsSummary -> kubelet /stats/summary JSON and /metrics/resource text (pure)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import fleetproto as fp
from cloud_bridge import stats_format as sf
from edge_agent.nodeinfo import parse_net_dev

T0 = 1_700_000_000.0


def node_usage(cpu_ns: int = 5_000_000_000) -> fp.NodeUsage:
    return fp.NodeUsage(
        cpu_usage_ns=cpu_ns,
        memory_working_set_bytes=300 << 20,
        memory_available_bytes=700 << 20,
        fs_capacity_bytes=10 << 30,
        fs_available_bytes=6 << 30,
        interfaces=(
            fp.InterfaceUsage(name="wlan0", rx_bytes=10, tx_bytes=20, rx_errors=1),
            fp.InterfaceUsage(name="eth0", rx_bytes=1000, tx_bytes=2000),
        ),
    )


def container(name: str, cpu_ns: int, ws: int, **kw: int) -> fp.ContainerUsage:
    return fp.ContainerUsage(name=name, cpu_usage_ns=cpu_ns, memory_working_set_bytes=ws, **kw)


def sample(time: float = T0, pods: tuple[fp.PodUsage, ...] = (), cpu_ns: int = 5_000_000_000) -> fp.StatsSummary:
    return fp.StatsSummary(time=time, node=node_usage(cpu_ns), pods=pods)


WEB = fp.PodUsage(
    uid="u-web",
    namespace="device-ns",  # what the device thinks; the bridge's PodMeta wins
    name="web",
    containers=(
        container("app", 2_000_000_000, 10 << 20, memory_usage_bytes=12 << 20, net_rx_bytes=100, net_tx_bytes=50),
        container("side", 500_000_000, 2 << 20, memory_usage_bytes=3 << 20, net_rx_bytes=100, net_tx_bytes=50, pids=3),
    ),
)
STRAY = fp.PodUsage(uid="u-stray", namespace="default", name="web", containers=(container("app", 1, 1),))
KNOWN = {
    "u-web": sf.PodMeta(
        uid="u-web", namespace="prod", name="web", start_time=T0 - 60, container_starts={"app": T0 - 50}
    )
}


def test_summary_document_node_and_known_pods_only() -> None:
    doc = sf.summary_document("pi-1", sample(pods=(WEB, STRAY)), KNOWN, node_start=T0 - 3600)
    json.dumps(doc)  # plain JSON
    node = doc["node"]
    assert node["nodeName"] == "pi-1"
    assert node["startTime"] == "2023-11-14T21:13:20Z"
    assert node["cpu"] == {"time": "2023-11-14T22:13:20Z", "usageCoreNanoSeconds": 5_000_000_000}  # no rate yet
    assert node["memory"]["workingSetBytes"] == 300 << 20 and node["memory"]["availableBytes"] == 700 << 20
    assert node["fs"]["usedBytes"] == 4 << 30 and node["fs"]["capacityBytes"] == 10 << 30
    assert node["runtime"]["imageFs"]["availableBytes"] == 6 << 30
    assert (node["network"]["name"], node["network"]["rxBytes"], node["network"]["txBytes"]) == ("eth0", 1000, 2000)
    assert [i["name"] for i in node["network"]["interfaces"]] == ["wlan0", "eth0"]
    assert node["network"]["interfaces"][0]["rxErrors"] == 1
    (pod,) = doc["pods"]  # the stray UID is not a pod the bridge knows
    assert pod["podRef"] == {"name": "web", "namespace": "prod", "uid": "u-web"}
    assert pod["startTime"] == sf.rfc3339(T0 - 60)
    app, side = pod["containers"]
    assert app["name"] == "app" and app["startTime"] == sf.rfc3339(T0 - 50)
    assert side["startTime"] == sf.rfc3339(T0 - 60)  # no container start known: the pod's
    assert app["cpu"]["usageCoreNanoSeconds"] == 2_000_000_000 and "usageNanoCores" not in app["cpu"]
    assert app["memory"] == {"time": sf.rfc3339(T0), "usageBytes": 12 << 20, "workingSetBytes": 10 << 20}
    assert pod["cpu"]["usageCoreNanoSeconds"] == 2_500_000_000
    assert pod["memory"]["workingSetBytes"] == 12 << 20 and pod["memory"]["usageBytes"] == 15 << 20
    assert pod["network"]["rxBytes"] == 100  # shared namespace: not doubled
    assert pod["process_stats"] == {"process_count": 3}


def test_summary_rates_from_previous_sample() -> None:
    before = sample(T0, (WEB,), cpu_ns=5_000_000_000)
    later_web = fp.PodUsage(
        uid="u-web",
        namespace="prod",
        name="web",
        containers=(container("app", 3_000_000_000, 10 << 20), container("side", 500_000_000, 1)),
    )
    doc = sf.summary_document("pi-1", sample(T0 + 2, (later_web,), 7_000_000_000), KNOWN, previous=before)
    assert doc["node"]["cpu"]["usageNanoCores"] == 1_000_000_000  # 2 s of CPU over 2 s: one core
    app, side = doc["pods"][0]["containers"]
    assert app["cpu"]["usageNanoCores"] == 500_000_000 and side["cpu"]["usageNanoCores"] == 0
    assert doc["pods"][0]["cpu"]["usageNanoCores"] == 500_000_000


def test_cpu_rate_refuses_resets_and_zero_time() -> None:
    assert sf.cpu_rate(10, T0, 5, T0 + 1) is None  # counter went back: restarted
    assert sf.cpu_rate(10, T0, 20, T0) is None
    assert sf.cpu_rate(0, T0, 250_000_000, T0 + 1) == 250_000_000


def families(text: str) -> dict[str, list[tuple[dict[str, str], float, float | None]]]:
    out: dict[str, list[tuple[dict[str, str], float, float | None]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value, s.timestamp))
    return out


def test_resource_metrics_text_matches_the_kubelet_series() -> None:
    text = sf.resource_metrics_text(sample(pods=(WEB, STRAY)), KNOWN)
    assert "# TYPE container_cpu_usage_seconds_total counter\n" in text  # full name, as the kubelet writes it
    got = families(text)
    assert got["node_cpu_usage_seconds_total"] == [({}, 5.0, T0)]
    assert got["node_memory_working_set_bytes"] == [({}, float(300 << 20), T0)]
    app = {"container": "app", "namespace": "prod", "pod": "web"}
    side = {"container": "side", "namespace": "prod", "pod": "web"}
    assert got["container_cpu_usage_seconds_total"] == [(app, 2.0, T0), (side, 0.5, T0)]
    assert got["container_memory_working_set_bytes"] == [(app, float(10 << 20), T0), (side, float(2 << 20), T0)]
    assert got["container_start_time_seconds"] == [(app, T0 - 50, None)]
    assert got["pod_cpu_usage_seconds_total"] == [({"namespace": "prod", "pod": "web"}, 2.5, T0)]
    assert got["pod_memory_working_set_bytes"] == [({"namespace": "prod", "pod": "web"}, float(12 << 20), T0)]
    assert got["scrape_error"] == [({}, 0.0, None)] and got["resource_scrape_error"] == [({}, 0.0, None)]
    assert " 1700000000000\n" in text  # millisecond timestamps


def test_resource_metrics_without_a_sample_is_a_scrape_error() -> None:
    got = families(sf.resource_metrics_text(None, {}))
    assert got == {"resource_scrape_error": [({}, 1.0, None)], "scrape_error": [({}, 1.0, None)]}


def test_pod_meta_from_api_object() -> None:
    obj = {
        "metadata": {"uid": "u1", "namespace": "ns", "name": "p"},
        "status": {
            "startTime": "2023-11-14T22:13:20Z",
            "containerStatuses": [
                {"name": "a", "state": {"running": {"startedAt": "2023-11-14T22:13:30Z"}}},
                {"name": "b", "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "c", "state": {"running": {"startedAt": "not a time"}}},
            ],
        },
    }
    meta = sf.pod_meta(obj)
    assert (meta.uid, meta.namespace, meta.name, meta.start_time) == ("u1", "ns", "p", T0)
    assert meta.container_starts == {"a": T0 + 10}
    assert sf.pod_meta({}).start_time is None


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
counters = st.integers(min_value=0, max_value=2**63 - 1)


@st.composite
def pods(draw: st.DrawFn) -> tuple[fp.PodUsage, sf.PodMeta]:
    uid = draw(st.uuids()).hex
    cnames = draw(st.lists(names, min_size=0, max_size=3, unique=True))
    cs = tuple(container(n, draw(counters), draw(counters), memory_usage_bytes=draw(counters)) for n in cnames)
    meta = sf.PodMeta(uid=uid, namespace=draw(names), name=draw(names))
    return fp.PodUsage(uid=uid, namespace="x", name="y", containers=cs), meta


@given(st.lists(pods(), max_size=4), st.floats(min_value=0, max_value=4e9), counters)
def test_any_sample_gives_parseable_text_and_json(items, time, node_cpu) -> None:
    usage = tuple(p for p, _m in items)
    known = {m.uid: m for _p, m in items}
    s = sample(time, usage, node_cpu)
    got = families(sf.resource_metrics_text(s, known))
    series = got.get("container_cpu_usage_seconds_total", [])
    # int / int as the code divides (exact to the last bit; / 1e9 rounds the int first)
    want = [
        ({"container": c.name, "namespace": m.namespace, "pod": m.name}, c.cpu_usage_ns / sf.NANOS)
        for p, m in items
        for c in p.containers
    ]
    assert [(labels, value) for labels, value, _ts in series] == want
    assert got["node_cpu_usage_seconds_total"][0][1] == node_cpu / sf.NANOS
    doc = json.loads(json.dumps(sf.summary_document("n", s, known)))
    assert [p["podRef"]["uid"] for p in doc["pods"]] == [m.uid for _p, m in items]
    for (p, _m), pod in zip(items, doc["pods"], strict=True):
        assert pod["memory"]["workingSetBytes"] == sum(c.memory_working_set_bytes for c in p.containers)


@given(names)
def test_label_escaping_round_trips(value: str) -> None:
    text = "\n".join(sf._family("scrape_error", [({"pod": value}, 1.0, None)])) + "\n"
    ((labels, _v, _t),) = families(text)["scrape_error"]
    assert labels == {"pod": value}


def test_node_without_eth0_inlines_its_first_interface_and_old_agents_have_none() -> None:
    only = fp.NodeUsage(
        cpu_usage_ns=1,
        memory_working_set_bytes=1,
        memory_available_bytes=1,
        fs_capacity_bytes=1,
        fs_available_bytes=1,
        interfaces=(fp.InterfaceUsage(name="end0", rx_bytes=5, tx_bytes=6),),
    )
    doc = sf.summary_document("n", fp.StatsSummary(time=T0, node=only), {})
    assert doc["node"]["network"]["name"] == "end0" and doc["node"]["network"]["txBytes"] == 6
    old = fp.StatsSummary.from_dict(
        {"time": T0, "node": {k: 1 for k in fp.NodeUsage.__dataclass_fields__ if k != "interfaces"}}
    )
    assert old.node.interfaces == ()
    assert "network" not in sf.summary_document("n", old, {})["node"]


def test_agent_parses_proc_net_dev() -> None:
    text = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls\n"
        "    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n"
        "  eth0: 1703739107 900 3 0 0 0 0 0 4368862 800 4 0 0 0 0 0\n"
        "  bad: 1 2 x\n"
    )
    lo, eth0 = parse_net_dev(text)
    assert lo.name == "lo" and eth0 == fp.InterfaceUsage(
        name="eth0", rx_bytes=1703739107, tx_bytes=4368862, rx_errors=3, tx_errors=4
    )
