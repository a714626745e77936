"""The pure parts of cluster-service access: grants and tables, endpoint selection, the hosts block,
and the wire records (hypothesis round trips and hostile input)."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fleetproto as fp
from cloud_bridge.service_catalog import build_catalog, parse_service
from edge_agent.hostsfile import BEGIN, END, hosts_lines, replace_block


def svc(ns: str, name: str, ip: str, *, expose: str | None = "true", devices: str | None = None, ports=None):
    meta: dict = {"namespace": ns, "name": name, "labels": {}}
    if expose is not None:
        meta["labels"]["edgefleet.io/expose"] = expose
    if devices is not None:
        meta["annotations"] = {"edgefleet.io/devices": devices}
    ports = ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}]
    return {"metadata": meta, "spec": {"clusterIP": ip, "ports": ports}}


def eps(ns: str, name: str, ready=(), not_ready=(), port=8080, port_name="http"):
    subset = {
        "addresses": [{"ip": ip} for ip in ready],
        "notReadyAddresses": [{"ip": ip} for ip in not_ready],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }
    return {"metadata": {"namespace": ns, "name": name}, "subsets": [subset]}


def test_grants_follow_label_and_annotation():
    catalog = build_catalog(
        [
            svc("a", "web", "10.0.0.10"),
            svc("a", "only-pi", "10.0.0.11", devices="pi-1, pi-2"),
            svc("a", "off", "10.0.0.12", expose="false"),
            svc("a", "unlabelled", "10.0.0.13", expose=None),
            svc("a", "headless", "None"),
            svc("a", "udp", "10.0.0.14", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]),
        ],
        [],
    )
    names = lambda device: [s.name for s in catalog.table_for(device).services]  # noqa: E731
    assert names("pi-1") == ["only-pi", "web"]
    assert names("pi-3") == ["web"]
    assert catalog.resolve("pi-3", "a", "only-pi", 80).refusal[0] == fp.AppError.FORBIDDEN
    assert catalog.resolve("pi-3", "a", "off", 80).refusal[0] == fp.AppError.FORBIDDEN
    assert catalog.resolve("pi-3", "a", "web", 81).refusal[0] == fp.AppError.FORBIDDEN
    assert catalog.resolve("pi-3", "zz", "web", 80).refusal[0] == fp.AppError.FORBIDDEN


def test_endpoints_pick_ready_addresses_by_port_name():
    catalog = build_catalog(
        [
            svc("a", "web", "10.0.0.10"),
            svc("a", "none", "10.0.0.11"),
            svc("a", "missing", "10.0.0.12"),
        ],
        [
            eps("a", "web", ready=["10.1.0.1", "10.1.0.2"], not_ready=["10.1.0.3"]),
            eps("a", "none", not_ready=["10.1.0.4"]),
            eps("other", "web", ready=["10.9.9.9"]),  # another namespace's Endpoints of the same name
        ],
        [
            {
                "metadata": {"namespace": "a", "name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
                "endpoints": [
                    {"addresses": ["10.1.0.2"], "conditions": {"ready": True}},
                    {"addresses": ["10.1.0.5"], "conditions": {"ready": False}},
                    {"addresses": ["10.1.0.6"]},
                ],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }
        ],
    )
    target = catalog.resolve("d", "a", "web", 80)
    assert target.refusal is None
    assert sorted(target.addresses) == [("10.1.0.1", 8080), ("10.1.0.2", 8080), ("10.1.0.6", 8080)]
    assert catalog.resolve("d", "a", "none", 80).refusal[0] == fp.AppError.UNAVAILABLE
    assert catalog.resolve("d", "a", "missing", 80).refusal[0] == fp.AppError.UNAVAILABLE


def test_malformed_objects_are_skipped_and_reported():
    bad_port = svc("a", "bad", "10.0.0.20", ports=[{"name": "x", "port": "eighty"}])
    catalog = build_catalog(
        [bad_port, {"metadata": None}, svc("a", "good", "10.0.0.21"), svc("b", "dup", "10.0.0.21")],
        [
            {
                "metadata": {"namespace": "a", "name": "good"},
                "subsets": [{"addresses": [{"ip": "10.1.0.1"}], "ports": [{}]}],
            }
        ],
    )
    assert [s.name for s in catalog.table_for("d").services] == ["good"]
    assert len(catalog.problems) >= 3, catalog.problems


def test_loopback_and_link_local_cluster_ips_are_not_offered():
    assert parse_service(svc("a", "lo", "127.0.0.5")) is None
    assert parse_service(svc("a", "ll", "169.254.1.1")) is None
    with pytest.raises(fp.SchemaError):
        fp.ServiceEntry(namespace="a", name="b", cluster_ip="127.0.0.1", ports=())


labels = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=20)
ips = st.integers(min_value=0x0A000001, max_value=0x0AFFFFFE).map(lambda n: str(ipaddress.IPv4Address(n)))
ports = st.lists(
    st.builds(fp.ServicePort, port=st.integers(1, 65535), name=labels | st.just("")),
    max_size=4,
    unique_by=lambda p: p.port,
)
entries = st.builds(fp.ServiceEntry, namespace=labels, name=labels, cluster_ip=ips, ports=ports.map(tuple))
tables = st.lists(entries, max_size=8, unique_by=(lambda e: e.key, lambda e: e.cluster_ip)).map(
    lambda es: fp.ServiceTable(services=tuple(es))
)


@given(tables)
def test_service_table_round_trips(table):
    assert fp.decode(fp.encode(table), sender="cloud") == table
    with pytest.raises(fp.MessageError):
        fp.decode(fp.encode(table), sender="device")  # only the cloud grants


@given(
    st.dictionaries(
        st.sampled_from(["services", "type", "x"]),
        st.recursive(
            st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=8
        ),
    )
)
def test_hostile_service_tables_are_schema_errors(data):
    data = {**data, "type": "ServiceTable"}
    try:
        out = fp.decode(data, sender="cloud")
    except fp.MessageError:
        return  # the only failure allowed: anything else would escape to the control stream
    assert isinstance(out, fp.ServiceTable)


@given(labels, labels, st.integers(1, 65535))
def test_service_open_round_trips(ns, name, port):
    request = fp.ServiceOpen(namespace=ns, service=name, port=port)
    assert fp.parse_open(request.to_metadata()) == request


@pytest.mark.parametrize("meta", [{"port": 0}, {"port": 70000}, {"service": ""}, {"namespace": 5}, {"port": True}])
def test_bad_service_open_is_refused(meta):
    base = {"kind": "service", "v": fp.PROTOCOL_VERSION, "namespace": "a", "service": "b", "port": 80}
    with pytest.raises(fp.SchemaError):
        fp.parse_open({**base, **meta})


user_lines = st.lists(
    st.text(string.printable.replace("\n", "").replace("\r", "").replace("\x0b", "").replace("\x0c", ""), max_size=40),
    max_size=6,
)


@given(user_lines, tables, tables)
def test_hosts_block_keeps_other_lines_and_replaces_itself(before, first, second):
    original = "".join(f"{line}\n" for line in before if line.strip() not in (BEGIN, END))
    once = replace_block(original, hosts_lines(first.services, "cluster.local"))
    twice = replace_block(once, hosts_lines(second.services, "cluster.local"))
    assert twice == replace_block(original, hosts_lines(second.services, "cluster.local"))
    assert replace_block(twice, []) == original
    assert twice.count(BEGIN) == (1 if second.services else 0)


def test_hosts_names_and_ambiguous_short_names():
    table = fp.ServiceTable(
        services=(
            fp.ServiceEntry(namespace="a", name="db", cluster_ip="10.0.0.1", ports=()),
            fp.ServiceEntry(namespace="b", name="db", cluster_ip="10.0.0.2", ports=()),
            fp.ServiceEntry(namespace="b", name="web", cluster_ip="10.0.0.3", ports=()),
        )
    )
    lines = hosts_lines(table.services, "example.org")
    assert lines == [
        "10.0.0.1\tdb.a.svc.example.org db.a.svc db.a",
        "10.0.0.2\tdb.b.svc.example.org db.b.svc db.b",
        "10.0.0.3\tweb.b.svc.example.org web.b.svc web.b web",
    ]
    # A block cut short by a crash (no END line) is dropped, not duplicated.
    assert replace_block(f"x\n{BEGIN}\n10.0.0.9\told\n", lines[:1]) == f"x\n{BEGIN}\n{lines[0]}\n{END}\n"


def test_edgedevice_lists_grant_services_to_their_device_only():
    catalog = build_catalog(
        [svc("a", "plain", "10.0.0.30", expose=None), svc("a", "web", "10.0.0.31", devices="pi-9")],
        [eps("a", "plain", ready=["10.1.0.1"])],
        listed={("a", "plain"), ("a", "web")},
    )
    listed = frozenset({("a", "plain"), ("a", "web")})
    assert [s.name for s in catalog.table_for("pi-1", listed).services] == ["plain", "web"]
    assert [s.name for s in catalog.table_for("pi-2").services] == []  # neither labelled for all nor listed
    assert catalog.resolve("pi-1", "a", "plain", 80, listed).addresses == (("10.1.0.1", 8080),)
    assert catalog.resolve("pi-2", "a", "plain", 80).refusal[0] == fp.AppError.FORBIDDEN


def test_services_config_section(tmp_path):
    from edge_agent.config import ConfigError, load_config

    base = {"EDGE_AGENT_DEVICE_NAME": "pi-1", "EDGE_AGENT_BROKER_URLS": "mqtt://b:1883"}
    config = load_config(None, base)
    assert config.services.enabled is False and config.services.interface == "ef-svc0"
    config = load_config(
        None, {**base, "EDGE_AGENT_SERVICES_ENABLED": "true", "EDGE_AGENT_SERVICES_HOSTS_FILE": str(tmp_path / "h")}
    )
    assert config.services.enabled and config.services.hosts_file == tmp_path / "h"
    for bad in ("", "a-very-long-interface-name", "a/b"):
        with pytest.raises(ConfigError, match="interface"):
            load_config(None, {**base, "EDGE_AGENT_SERVICES_INTERFACE": bad})
