"""The pods' own hosts files (``edge_agent.podhosts``): what they say, and that every change keeps the inode."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import fleetproto as fp
from edge_agent.hostsfile import BEGIN, END, update_hosts_file
from edge_agent.podhosts import ENGINE_LINES, PodHostsFiles, render
from edge_agent.podspec import pod_hostname, runtime_spec


def pod(uid: str = "u-1", name: str = "web-0", **kw) -> fp.DesiredPod:
    return fp.DesiredPod(
        uid=uid, namespace="default", name=name, containers=(fp.Container(name="main", image="img"),), **kw
    )


def test_render_is_what_docker_writes_plus_the_pod_line_and_the_block() -> None:
    text = render("web-0", "172.17.0.5", ["10.96.0.1\tapi.default.svc.cluster.local api"])
    lines = text.splitlines()
    assert lines[1:7] == list(ENGINE_LINES)
    assert lines[7] == "172.17.0.5\tweb-0"
    assert lines[8:] == [BEGIN, "10.96.0.1\tapi.default.svc.cluster.local api", END]
    assert "172.17.0.5" not in render("web-0", "", [])
    assert BEGIN not in render("web-0", "", [])


def test_hostname_follows_the_kubelet() -> None:
    assert pod_hostname(pod(name="web-0")) == "web-0"
    assert pod_hostname(pod(name="web-0", hostname="box")) == "box"
    long = "a" * 62 + "-b" + "c" * 10
    assert pod_hostname(pod(name=long)) == "a" * 62  # cut to 63, trailing '-' dropped
    first = runtime_spec(pod(), pod().containers[0], node="n", attempt=0)
    assert first.hostname == "web-0"
    joined = runtime_spec(pod(), pod().containers[0], node="n", attempt=0, network_of="abc")
    assert joined.hostname is None and joined.network_mode == "container:abc"
    assert runtime_spec(pod(host_network=True), pod().containers[0], node="n", attempt=0).hostname is None


def test_mounts_per_pod_and_for_host_network(tmp_path: Path) -> None:
    files = PodHostsFiles(tmp_path / "pods")
    mount = files.mount_for(pod())
    assert mount is not None and mount.target == "/etc/hosts" and not mount.read_only
    assert Path(mount.source) == files.path("u-1") and files.path("u-1").read_text() == render("web-0", "", [])
    assert files.mount_for(pod(host_network=True)) is None  # the engine's default
    device = tmp_path / "device-hosts"
    shared = PodHostsFiles(tmp_path / "pods2", host_network_file=device).mount_for(pod(host_network=True))
    assert shared is not None and shared.source == str(device) and shared.read_only


def test_address_and_services_rewrite_in_place(tmp_path: Path) -> None:
    files = PodHostsFiles(tmp_path / "pods")
    path = files.update(pod())
    inode = os.stat(path).st_ino
    files.update(pod(), "10.0.0.7")
    files.set_services(["10.96.0.1\tapi"])
    files.update(pod())  # no address known this pass: the last one stays
    assert path.read_text() == render("web-0", "10.0.0.7", ["10.96.0.1\tapi"])
    files.update(pod(), "10.0.0.8")
    files.set_services([])
    assert path.read_text() == render("web-0", "10.0.0.8", [])
    assert os.stat(path).st_ino == inode


def test_a_new_agent_adopts_old_files_and_prunes_gone_pods(tmp_path: Path) -> None:
    old = PodHostsFiles(tmp_path / "pods")
    old.update(pod("keep"), "10.0.0.7")
    old.update(pod("gone", name="old"), "10.0.0.9")
    kept = old.path("keep")
    inode = os.stat(kept).st_ino
    new = PodHostsFiles(tmp_path / "pods")
    assert new.set_services(["10.96.0.1\tapi"]) == 0
    new.update(pod("keep"))  # address unknown yet: the file is left as the old agent wrote it
    assert kept.read_text() == render("web-0", "10.0.0.7", ["10.96.0.1\tapi"])
    assert new.prune({"keep"}) == ["gone"]
    assert not (tmp_path / "pods" / "gone").exists() and os.stat(kept).st_ino == inode
    new.remove("keep")
    assert not kept.parent.exists()


addresses = st.sampled_from(["", "10.0.0.2", "10.0.0.3", "fd00::5"])
blocks = st.lists(st.sampled_from(["10.96.0.1\tapi", "10.96.0.2\tdb db.x", "10.96.0.3\tweb"]), max_size=3)
steps = st.lists(st.one_of(st.tuples(st.just("ip"), addresses), st.tuples(st.just("svc"), blocks)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_any_sequence_ends_in_the_rendered_file(tmp_path_factory, ops) -> None:
    """Whatever order addresses and tables arrive in, the file says the last of each, in the same inode;
    the device-file writer (``update_hosts_file``) agrees with it on the block."""
    files = PodHostsFiles(tmp_path_factory.mktemp("pods"))
    path = files.update(pod())
    inode = os.stat(path).st_ino
    ip, lines = "", []
    for kind, value in ops:
        if kind == "ip":
            files.update(pod(), value)
            ip = value or ip
        else:
            files.set_services(value)
            lines = value
    assert path.read_text() == render("web-0", ip, lines)
    assert os.stat(path).st_ino == inode
    assert not update_hosts_file(path, lines)  # the block is exactly what the device writer would put
