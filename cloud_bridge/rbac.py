"""Every Kubernetes permission the bridge needs, in one place.

The Helm chart (``charts/edgefleet/templates/bridge-rbac.yaml``) renders
exactly these rules: a ClusterRole for the cluster-wide ones and a Role per
namespace for the rest (node Leases live in ``kube-node-lease`` only).
tests/e2e/test_chart.py checks, against a real apiserver, that the rendered
rules equal this list, that the bridge's ServiceAccount is allowed each of them
and nothing broader, and that every Kubernetes API call in ``cloud_bridge/``
is covered here. A new API call therefore needs a line here and one in the
chart, or that test fails.

Why the broad ones: a kubelet reads the ConfigMaps and Secrets of the pods it
runs; the bridge is the kubelet of every device, in every namespace, so it
reads them cluster-wide (the apiserver's Node authorizer, which narrows this
for real kubelets, does not know virtual nodes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .nodes import LEASE_NAMESPACE

EDGEFLEET_GROUP = "edgefleet.io"
OWN_NAMESPACE = "@own"
"""Stands for the namespace the bridge runs in (its Helm release's; ``POD_NAMESPACE``)."""
HOST_NAMESPACE = "@host"
"""Stands for the namespace of the host pods (``--host-namespace``; the chart's default: the bridge's own)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """``verbs`` on ``resource`` (``pods`` or a subresource like ``pods/status``) of ``api_group``."""

    api_group: str
    resource: str
    verbs: frozenset[str]
    namespace: str | None = None
    """None: everywhere (ClusterRole); a name: only there (Role + RoleBinding in that namespace);
    ``OWN_NAMESPACE``/``HOST_NAMESPACE``: the bridge's namespace / the host pods' namespace."""
    resource_names: frozenset[str] = frozenset()
    """Empty: any object; else only these (``resourceNames``)."""

    def permissions(
        self, own_namespace: str = OWN_NAMESPACE, host_namespace: str | None = None
    ) -> Iterator[Permission]:
        namespace = {OWN_NAMESPACE: own_namespace, HOST_NAMESPACE: host_namespace or own_namespace}.get(
            self.namespace or "", self.namespace
        )
        names: list[str | None] = [*sorted(self.resource_names)] or [None]
        for verb in sorted(self.verbs):
            for name in names:
                yield Permission(self.api_group, self.resource, verb, namespace, name)


@dataclass(frozen=True, slots=True)
class Permission:
    """One (group, resource, verb[, namespace]) - what ``kubectl auth can-i`` asks about."""

    api_group: str
    resource: str
    verb: str
    namespace: str | None = None
    name: str | None = None

    def can_i_args(self) -> list[str]:
        """Arguments for ``kubectl auth can-i``: ``VERB RESOURCE[.GROUP][/NAME] [--subresource S] [-n NS]``."""
        base, _, sub = self.resource.partition("/")
        target = f"{base}.{self.api_group}" if self.api_group else base
        if self.name:
            target += f"/{self.name}"
        args = [self.verb, target]
        if sub:
            args.append(f"--subresource={sub}")
        if self.namespace is not None:
            args += ["-n", self.namespace]
        return args


def _rule(group: str, resource: str, verbs: str, namespace: str | None = None, names: str = "") -> Rule:
    return Rule(group, resource, frozenset(verbs.split()), namespace, frozenset(names.split()))


RULES: tuple[Rule, ...] = (
    # nodes.py: one Node per device (deleted with its EdgeDevice); pods.py lists the device nodes.
    _rule("", "nodes", "create delete get list patch"),
    _rule("", "nodes/status", "patch"),
    # nodes.py: the node heartbeat Lease.
    _rule("coordination.k8s.io", "leases", "create delete get update", LEASE_NAMESPACE),
    # leader.py: the leader-election Lease of several bridge replicas, next to the bridge.
    _rule("coordination.k8s.io", "leases", "create get update", OWN_NAMESPACE),
    # pods.py: pods bound to device nodes (list + watch), deleted once the device stopped them;
    # devices.py reads one before writing its status; hostpods.py keeps the host-<device> pods.
    _rule("", "pods", "delete get list watch"),
    _rule("", "pods/status", "patch"),
    # hostpods.py creates host-<device> pods only in its own namespace (--host-namespace).
    _rule("", "pods", "create", HOST_NAMESPACE),
    # pods.py: a pod's ConfigMap/Secret volumes and env are resolved here for the device.
    _rule("", "configmaps", "get"),
    _rule("", "secrets", "get"),
    # services.py: exposed Services and their endpoints, for devices to reach.
    _rule("", "services", "list"),
    _rule("", "endpoints", "list"),
    _rule("discovery.k8s.io", "endpointslices", "list"),
    # events.py: Events about pods on devices.
    _rule("", "events", "create"),
    # registry.py: EdgeDevices admit devices (created for unknown ones with --auto-register).
    _rule(EDGEFLEET_GROUP, "edgedevices", "create get list watch"),
    _rule(EDGEFLEET_GROUP, "edgedevices/status", "patch"),
    # token_review.py: bearer tokens on the kubelet API (--authentication-token-webhook), as a kubelet checks them.
    _rule("authentication.k8s.io", "tokenreviews", "create"),
    _rule("authorization.k8s.io", "subjectaccessreviews", "create"),
    # registry.py: is the EdgeDevice CRD installed?
    _rule("apiextensions.k8s.io", "customresourcedefinitions", "get", names=f"edgedevices.{EDGEFLEET_GROUP}"),
)


def permissions(
    own_namespace: str = OWN_NAMESPACE, host_namespace: str | None = None, rules: tuple[Rule, ...] = RULES
) -> set[Permission]:
    return {p for rule in rules for p in rule.permissions(own_namespace, host_namespace)}


def allows(api_group: str, resource: str, verb: str, rules: tuple[Rule, ...] = RULES) -> bool:
    """True if some rule grants ``verb`` on ``resource`` of ``api_group`` (in some namespace, on some name)."""
    return any((r.api_group, r.resource) == (api_group, resource) and verb in r.verbs for r in rules)
