"""Epoch and desired-pod store: persisted, monotonic, atomic, corruption-tolerant."""

from __future__ import annotations

import contextlib
import os

import fleetproto as fp
from edge_agent import epoch
from edge_agent.store import DesiredState, PodStore


def test_epoch_uses_the_clock_when_it_is_ahead(tmp_path) -> None:
    assert epoch.next_epoch(tmp_path, now_us=1_000) == 1_000
    assert epoch.next_epoch(tmp_path, now_us=5_000) == 5_000
    assert epoch.read_epoch(tmp_path) == 5_000


def test_epoch_counts_up_when_the_clock_is_behind(tmp_path) -> None:
    """A device without an RTC boots at 1970: the epoch must still grow."""
    assert epoch.next_epoch(tmp_path, now_us=1_700_000_000_000_000) == 1_700_000_000_000_000
    assert epoch.next_epoch(tmp_path, now_us=12) == 1_700_000_000_000_001
    assert epoch.next_epoch(tmp_path, now_us=0) == 1_700_000_000_000_002


def test_epoch_with_garbage_file_restarts_from_the_clock(tmp_path) -> None:
    (tmp_path / epoch.EPOCH_FILE).write_text("not a number")
    assert epoch.next_epoch(tmp_path, now_us=77) == 77
    assert epoch.next_epoch(tmp_path) > 1_600_000_000_000_000  # real clock, microseconds


def pod(uid: str = "u-1", **kw) -> fp.DesiredPod:
    return fp.DesiredPod(
        uid=uid,
        namespace="default",
        name=f"p-{uid}",
        containers=(fp.Container(name="main", image="busybox"),),
        files={"cfg/app.conf": fp.PodFile(b"\x00secret", 0o600)},
        **kw,
    )


def test_store_round_trip_keeps_unknown_fields(tmp_path) -> None:
    store = PodStore(tmp_path)
    assert store.load() == DesiredState()
    p = pod().with_unknown(("pod.securityContext",))
    store.save(DesiredState(generation=7, pods={p.uid: p, "u-2": pod("u-2")}))
    loaded = PodStore(tmp_path).load()
    assert loaded.generation == 7 and loaded.authoritative
    assert loaded.pods == {"u-1": p, "u-2": pod("u-2")}
    assert loaded.pods["u-1"].unknown_fields == ("pod.securityContext",)
    assert loaded.pods["u-1"].files["cfg/app.conf"] == fp.PodFile(b"\x00secret", 0o600)
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600", "secrets inside: owner only"


def test_store_write_is_atomic(tmp_path, monkeypatch) -> None:
    """A crash while writing leaves the old file intact and no temp files behind."""
    store = PodStore(tmp_path)
    store.save(DesiredState(generation=1, pods={"u-1": pod()}))

    def boom(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", boom)
    with contextlib.suppress(OSError):
        store.save(DesiredState(generation=2, pods={}))
    monkeypatch.undo()
    assert PodStore(tmp_path).load().generation == 1
    assert [p.name for p in tmp_path.iterdir()] == [store.path.name]


def test_corrupt_store_is_moved_aside_and_not_authoritative(tmp_path) -> None:
    store = PodStore(tmp_path)
    store.path.write_bytes(b"\x93garbage")
    state = store.load()
    assert state.pods == {} and not state.authoritative
    assert any(p.name.startswith(f"{store.path.name}.corrupt-") for p in tmp_path.iterdir())
    assert not store.path.exists()
