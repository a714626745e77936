"""Leader election: the pure expiry rule, and two candidates on the real apiserver."""

from __future__ import annotations

import asyncio
import uuid

import kubernetes
from hypothesis import given
from hypothesis import strategies as st

from cloud_bridge.leader import LeaderElection, LeaseObserver, LeaseRecord
from tests.support.kube import ControlPlane


def record(holder: str, renew: str = "t0", duration: float = 10.0) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration=duration, renew_time=renew, transitions=0)


def test_observer_waits_a_full_duration_after_the_last_change() -> None:
    obs = LeaseObserver("me")
    assert obs.may_acquire(0.0)  # nothing seen: free
    obs.observe(record("other"), now=100.0)
    assert not obs.may_acquire(105.0)
    obs.observe(record("other", renew="t1"), now=108.0)  # renewed: the clock restarts
    assert not obs.may_acquire(115.0)
    assert obs.may_acquire(118.5)
    obs.observe(record(""), now=119.0)  # released: free at once
    assert obs.may_acquire(119.0)
    obs.observe(record("me"), now=120.0)
    assert obs.held_by_us() and obs.may_acquire(120.0)


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 30)), max_size=30), st.floats(1, 20))
def test_a_renewing_holder_is_never_taken_over(steps: list[tuple[bool, float]], duration: float) -> None:
    """Whatever the gaps, if the holder renewed within the duration we may not take it."""
    obs = LeaseObserver("me")
    now, renewals, last_change = 0.0, 0, 0.0
    obs.observe(record("other", "r0", duration), now)
    for renewed, gap in steps:
        now += gap
        if renewed:
            renewals += 1
            last_change = now
        obs.observe(record("other", f"r{renewals}", duration), now)
        assert obs.may_acquire(now) == (now - last_change > duration)


def test_standby_takes_over_when_the_leader_releases_or_dies(control_plane: ControlPlane) -> None:
    api = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig_path))
    name = f"bridge-{uuid.uuid4().hex[:6]}"

    def candidate(identity: str) -> LeaderElection:
        return LeaderElection(
            api,
            namespace="default",
            name=name,
            identity=identity,
            lease_seconds=3,
            renew_seconds=0.5,
            retry_seconds=0.2,
        )

    async def scenario() -> list[str]:
        order: list[str] = []
        a, b, c = candidate("a"), candidate("b"), candidate("c")
        await a.acquire()
        order.append("a")
        b_task = asyncio.create_task(b.acquire())
        await asyncio.sleep(4)  # longer than the lease: a keeps renewing, so b must still wait
        assert not b_task.done()
        await a.release()  # clean hand-over: b leads within a retry interval
        await asyncio.wait_for(b_task, 3)
        order.append("b")
        c_task = asyncio.create_task(c.acquire())
        assert b._renewer is not None
        b._renewer.cancel()  # b "dies" without releasing: c waits out the lease, then leads
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(c_task, 10)
        waited = asyncio.get_running_loop().time() - started
        assert waited >= 2.5, waited
        order.append("c")
        await asyncio.sleep(1.5)
        assert not c.lost.is_set()
        await c.release()
        return order

    assert asyncio.run(scenario()) == ["a", "b", "c"]


def test_leader_notices_it_was_replaced(control_plane: ControlPlane) -> None:
    api = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig_path))
    coord = kubernetes.client.CoordinationV1Api(api)
    name = f"bridge-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        leader = LeaderElection(api, namespace="default", name=name, identity="a", lease_seconds=3, renew_seconds=0.3)
        await leader.acquire()
        lease = await asyncio.to_thread(coord.read_namespaced_lease, name, "default")
        lease.spec.holder_identity = "intruder"
        await asyncio.to_thread(coord.replace_namespaced_lease, name, "default", lease)
        await asyncio.wait_for(leader.lost.wait(), 5)
        await leader.release()  # not ours any more: must leave the intruder's record alone
        after = await asyncio.to_thread(coord.read_namespaced_lease, name, "default")
        assert after.spec.holder_identity == "intruder"

    asyncio.run(scenario())
