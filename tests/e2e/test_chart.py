"""The Helm chart (charts/edgefleet) with the real helm, a real apiserver and the real bridge.

* offline: ``helm lint``; ``helm template`` with default and non-default values;
  the mosquitto files in the chart are the shipped ones; every flag the
  Deployment passes is one ``cloud_bridge`` parses; the rendered roles are
  exactly ``cloud_bridge/rbac.py`` and that list covers (and only covers) the
  Kubernetes API calls in ``cloud_bridge/``.
* against the apiserver: ``helm install`` creates the objects, ``helm upgrade``
  keeps generated secrets, ``helm uninstall`` removes them; the bridge's
  ServiceAccount may do each thing in rbac.py and no more (impersonated
  ``kubectl auth can-i``); and the real bridge, started with the installed
  Deployment's own arguments, files and a token of that ServiceAccount, behind
  a mosquitto with the chart's accounts and ACL, registers a real agent's node.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from cloud_bridge import rbac
from cloud_bridge.__main__ import parse
from tests.e2e.chart_support import (
    CHART,
    Rendered,
    api_permissions_used,
    container,
    expand_env,
    flag_values,
    helm,
    render,
    role_permissions,
    values_file,
)
from tests.support.brokers import Broker, free_port
from tests.support.kube import REPO, ControlPlane, write_kubeconfig

NS = "edge-system"
TLS_VALUES: dict[str, Any] = {
    "broker": {
        "tls": {"enabled": True, "dnsNames": ["mqtt.example.com"], "ipAddresses": ["192.0.2.10"]},
        "service": {"type": "NodePort", "nodePort": 30883},
        "auth": {"devices": {"pi-1": "pw-1", "pi-2": "pw-2"}, "existingSecret": "more-devices"},
        "persistence": {"enabled": True, "size": "2Gi"},
    },
    "bridge": {
        "replicas": 2,
        "autoRegister": True,
        "kubelet": {
            "service": {"clusterIP": "10.0.0.200"},
            "nodePorts": "10300-10310",
            "hostnameSuffix": ".edge.example.com",
        },
        "extraArgs": ["--log-level=DEBUG"],
    },
}
EXTERNAL_BROKER_VALUES: dict[str, Any] = {
    "broker": {"enabled": False},
    "bridge": {
        "broker": {
            "url": "mqtts://bridge@mqtt.example.com:8883",
            "passwordSecret": {"name": "my-broker", "key": "pw"},
            "caSecret": "my-broker-ca",
        },
        "kubelet": {
            "address": "192.0.2.7",
            "tls": {"existingSecret": "my-kubelet-cert"},
            "clientCA": {"pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
        },
        "hostNamespace": "edge-hosts",
    },
}


def kinds(rendered: Rendered) -> dict[str, int]:
    out: dict[str, int] = {}
    for obj in rendered.objects:
        out[obj["kind"]] = out.get(obj["kind"], 0) + 1
    return out


def bridge_args(rendered: Rendered, release: str, pod_ip: str = "10.1.2.3") -> list[str]:
    deployment = rendered.get("Deployment", f"{release}-edgefleet-bridge")
    bridge = container(deployment, "bridge")
    assert bridge["command"] == ["cloud-bridge"]
    return expand_env(bridge["args"], {"POD_IP": pod_ip, "POD_NAMESPACE": NS})


def cert_of(secret: dict[str, Any]) -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))


def sans(cert: Any) -> tuple[set[str], set[str]]:
    from cryptography import x509

    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {str(i) for i in ext.get_values_for_type(x509.IPAddress)}


# --- offline: lint and render --------------------------------------------------------------


def test_helm_lint(tmp_path: Path) -> None:
    for values in ({}, TLS_VALUES, EXTERNAL_BROKER_VALUES):
        args = ["lint", "--strict", str(CHART)]
        if values:
            args += ["--values", str(values_file(tmp_path, values))]
        out = helm(tmp_path, *args).stdout
        assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_render_defaults(tmp_path: Path) -> None:
    r = render(tmp_path, "ef", NS)
    assert kinds(r) == {
        "ServiceAccount": 1,
        "Secret": 2,  # broker accounts, kubelet serving cert
        "ConfigMap": 1,  # mosquitto config
        "ClusterRole": 1,
        "ClusterRoleBinding": 1,
        "Role": 3,
        "RoleBinding": 3,
        "Service": 3,  # broker in-cluster, broker for devices, kubelet API
        "Deployment": 2,
    }
    flags = flag_values(bridge_args(r, "ef"))
    assert flags["--broker"] == f"mqtt://edgefleet-bridge@ef-edgefleet-broker.{NS}.svc:1883"
    assert flags["--kubelet-address"] == "10.1.2.3"  # the pod IP (downward API)
    assert flags["--kubelet-port"] == "10250"
    assert flags["--host-namespace"] == NS
    assert "--leader-elect" not in flags and "--auto-register" not in flags

    devices = r.get("Service", "ef-edgefleet-broker-devices")
    assert devices["spec"]["type"] == "LoadBalancer"
    assert [(p["port"], p["targetPort"]) for p in devices["spec"]["ports"]] == [(1883, "mqtt")]
    inside = r.get("Service", "ef-edgefleet-broker")
    assert (inside["spec"]["type"], [p["port"] for p in inside["spec"]["ports"]]) == ("ClusterIP", [1883])
    conf = r.get("ConfigMap", "ef-edgefleet-broker")["data"]["mosquitto.conf"]
    assert "8883" not in conf and "certfile" not in conf

    accounts = r.get("Secret", "ef-edgefleet-broker-auth")["stringData"]
    password = accounts["bridge-password"]
    assert len(password) == 32 and accounts["passwords"] == f"edgefleet-bridge:{password}\n"

    kubelet_cert = cert_of(r.get("Secret", "ef-edgefleet-bridge-kubelet-tls"))
    assert f"ef-edgefleet-bridge.{NS}.svc" in sans(kubelet_cert)[0]

    bridge = r.get("Deployment", "ef-edgefleet-bridge")
    assert bridge["spec"]["replicas"] == 1 and bridge["spec"]["strategy"]["type"] == "Recreate"
    pod = bridge["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ef-edgefleet-bridge"
    main = container(bridge, "bridge")
    for probe in ("readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": "kubelet", "scheme": "HTTPS"}
    assert main["ports"] == [{"name": "kubelet", "containerPort": 10250, "protocol": "TCP"}]
    client_ca = next(v for v in pod["volumes"] if v["name"] == "client-ca")
    assert client_ca["configMap"]["name"] == "kube-root-ca.crt"

    broker = r.get("Deployment", "ef-edgefleet-broker")
    data = next(v for v in broker["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "emptyDir": {}}


def test_render_tls_and_more(tmp_path: Path) -> None:
    r = render(tmp_path, "ef", NS, TLS_VALUES)
    conf = r.get("ConfigMap", "ef-edgefleet-broker")["data"]["mosquitto.conf"]
    assert "listener 8883" in conf and "certfile /mosquitto/certs/tls.crt" in conf
    devices = r.get("Service", "ef-edgefleet-broker-devices")["spec"]
    assert devices["type"] == "NodePort"
    assert [(p["port"], p["targetPort"], p["nodePort"]) for p in devices["ports"]] == [(8883, "mqtts", 30883)]
    inside = r.get("Service", "ef-edgefleet-broker")["spec"]
    assert [p["port"] for p in inside["ports"]] == [1883, 8883]

    tls = r.get("Secret", "ef-edgefleet-broker-tls")
    assert tls["type"] == "kubernetes.io/tls" and set(tls["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    dns, ips = sans(cert_of(tls))
    assert {"mqtt.example.com", "ef-edgefleet-broker-devices"} <= dns and ips == {"192.0.2.10"}

    accounts = r.get("Secret", "ef-edgefleet-broker-auth")["stringData"]["passwords"].splitlines()
    assert accounts[1:] == ["pi-1:pw-1", "pi-2:pw-2"]
    broker = r.get("Deployment", "ef-edgefleet-broker")["spec"]["template"]["spec"]
    extra = next(v for v in broker["volumes"] if v["name"] == "extra-auth")
    assert extra["secret"]["secretName"] == "more-devices"
    data = next(v for v in broker["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == "ef-edgefleet-broker-data"
    assert r.get("PersistentVolumeClaim", "ef-edgefleet-broker-data")["spec"]["resources"]["requests"] == {
        "storage": "2Gi"
    }

    flags = bridge_args(r, "ef")
    parsed = flag_values(flags[:-1])
    assert parsed["--kubelet-address"] == "10.0.0.200"  # the fixed Service IP, not the pod's
    assert parsed["--kubelet-node-ports"] == "10300-10310"
    assert parsed["--leader-namespace"] == NS and "--leader-elect" in parsed and "--auto-register" in parsed
    assert flags[-1] == "--log-level=DEBUG"  # extraArgs come last
    assert r.get("Service", "ef-edgefleet-bridge")["spec"]["clusterIP"] == "10.0.0.200"
    assert parsed["--kubelet-hostname-suffix"] == ".edge.example.com"
    kubelet_dns, kubelet_ips = sans(cert_of(r.get("Secret", "ef-edgefleet-bridge-kubelet-tls")))
    assert "10.0.0.200" in kubelet_ips and "*.edge.example.com" in kubelet_dns  # the names the apiserver dials
    # ECDSA P-256 keys that match their certificates, as Python's ssl (bridge, agent) loads them;
    # the broker's certificate is signed by the CA devices are given.
    from cryptography.hazmat.primitives.asymmetric import ec

    for secret in (tls, r.get("Secret", "ef-edgefleet-bridge-kubelet-tls")):
        key = cert_of(secret).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        pem = tmp_path / "pair.pem"
        pem.write_bytes(base64.b64decode(secret["data"]["tls.crt"]) + base64.b64decode(secret["data"]["tls.key"]))
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(pem)  # raises if they do not match
    ca = tmp_path / "ca.pem"
    ca.write_bytes(base64.b64decode(tls["data"]["ca.crt"]))
    cert_of(tls).verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))
    bridge = r.get("Deployment", "ef-edgefleet-bridge")
    assert bridge["spec"]["replicas"] == 2 and "strategy" not in bridge["spec"]
    assert "livenessProbe" not in container(bridge, "bridge")  # a standby serves nothing


def test_render_external_broker(tmp_path: Path) -> None:
    r = render(tmp_path, "ef", NS, EXTERNAL_BROKER_VALUES)
    assert not [o for o in r.objects if o["metadata"]["name"].startswith("ef-edgefleet-broker")]
    assert ("Secret", "ef-edgefleet-bridge-kubelet-tls") not in r.names()  # the user's own
    flags = flag_values(bridge_args(r, "ef"))
    assert flags["--broker"] == "mqtts://bridge@mqtt.example.com:8883"
    assert flags["--kubelet-address"] == "192.0.2.7"
    assert flags["--host-namespace"] == "edge-hosts"
    pod = r.get("Deployment", "ef-edgefleet-bridge")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["broker-password"]["secret"] == {
        "secretName": "my-broker",
        "items": [{"key": "pw", "path": "password"}],
    }
    assert volumes["kubelet-tls"]["secret"]["secretName"] == "my-kubelet-cert"
    assert volumes["client-ca"]["configMap"]["name"] == "ef-edgefleet-bridge-client-ca"
    assert r.get("ConfigMap", "ef-edgefleet-bridge-client-ca")["data"]["ca.crt"].startswith("-----BEGIN CERT")
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["SSL_CERT_FILE"] == "/etc/edgefleet/broker-ca/ca.crt"
    host_role = r.get("Role", "ef-edgefleet-bridge-host-pods")
    assert host_role["metadata"]["namespace"] == "edge-hosts"

    missing = helm(tmp_path, "template", "ef", str(CHART), "--set", "broker.enabled=false", check=False)
    assert missing.returncode != 0 and "set bridge.broker.url" in missing.stderr


def test_values_schema_rejects_typos_and_bad_values(tmp_path: Path) -> None:
    for setting, complaint in (
        ("bridge.kubelet.prot=1", "additional properties 'prot' not allowed"),
        ("broker.service.type=Public", "value must be one of"),
        ("bridge.broker.url=http://broker:1883", "does not match pattern"),
        ("bridge.kubelet.hostnameSuffix=edge.example.com", "does not match pattern"),  # needs the leading dot
    ):
        proc = helm(tmp_path, "template", "ef", str(CHART), "--set", setting, check=False)
        assert proc.returncode != 0 and complaint in proc.stderr, (setting, proc.stderr)


# --- offline: the chart agrees with the code -----------------------------------------------------


def test_mosquitto_files_are_the_shipped_ones(tmp_path: Path) -> None:
    shipped = REPO / "broker-config" / "mosquitto"
    copies = {"edgefleet.conf": shipped / "conf.d" / "edgefleet.conf", "acl.conf": shipped / "acl.conf"}
    data = render(tmp_path, "ef", NS, TLS_VALUES).get("ConfigMap", "ef-edgefleet-broker")["data"]
    for name, source in copies.items():
        assert (CHART / "files" / "mosquitto" / name).read_text() == source.read_text(), (
            f"charts/edgefleet/files/mosquitto/{name} differs from {source.relative_to(REPO)}: "
            "run hack/sync-chart-files.sh"
        )
        assert data[name] == source.read_text()

    def directives(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    # With TLS the rendered mosquitto.conf says what the production one says.
    assert directives(data["mosquitto.conf"]) == directives((shipped / "mosquitto.conf").read_text())


@pytest.mark.parametrize("values", [{}, TLS_VALUES, EXTERNAL_BROKER_VALUES], ids=["default", "tls", "external"])
def test_deployment_flags_are_real_cli_flags(tmp_path: Path, values: dict[str, Any]) -> None:
    """The bridge's argparse accepts the rendered arguments, and each file they name is mounted."""
    r = render(tmp_path, "ef", NS, values)
    args = bridge_args(r, "ef")
    parsed = parse(args)  # argparse exits (SystemExit) on an unknown flag or a bad value
    assert parsed.kubelet_port == 10250 and parsed.tls_cert and parsed.client_ca
    deployment = r.get("Deployment", "ef-edgefleet-bridge")
    mounts = [m["mountPath"] for m in container(deployment, "bridge")["volumeMounts"]]
    for path in (parsed.tls_cert, parsed.tls_key, parsed.client_ca, parsed.broker_password_file):
        if path is not None:
            assert any(str(path).startswith(m + "/") for m in mounts), f"{path} is on no mounted volume"
    assert not re.search(r"\$\(", " ".join(args)), "an unexpanded $(VAR) reference"


def test_rendered_roles_are_rbac_py(tmp_path: Path) -> None:
    for values, host_ns in (({}, NS), (EXTERNAL_BROKER_VALUES, "edge-hosts")):
        r = render(tmp_path, "ef", NS, values)
        expected = {
            (p.api_group, p.resource, p.verb, p.namespace, p.name) for p in rbac.permissions(NS, host_namespace=host_ns)
        }
        got = role_permissions(r.objects)
        assert got == expected, (
            f"only in the chart: {sorted(got - expected, key=str)}; only in rbac.py: {sorted(expected - got, key=str)}"
        )
        sa = {"kind": "ServiceAccount", "name": "ef-edgefleet-bridge", "namespace": NS}
        for binding in [*r.of_kind("ClusterRoleBinding"), *r.of_kind("RoleBinding")]:
            assert binding["subjects"] == [sa]
            role_kind = "ClusterRole" if binding["kind"] == "ClusterRoleBinding" else "Role"
            assert binding["roleRef"]["kind"] == role_kind
            r.get(role_kind, binding["roleRef"]["name"], binding["metadata"].get("namespace"))


def test_rbac_py_covers_exactly_the_api_calls_in_the_code() -> None:
    used = api_permissions_used()
    # The scanner sees the calls it must (so an empty result cannot pass).
    found = {(u.group, u.resource, u.verb) for u in used}
    assert {("", "nodes", "create"), ("", "pods", "watch"), ("", "pods/status", "patch")} <= found
    assert ("coordination.k8s.io", "leases", "update") in found
    missing = [u for u in used if not rbac.allows(u.group, u.resource, u.verb)]
    assert not missing, f"API calls without a rule in cloud_bridge/rbac.py (and the chart): {missing}"
    granted = {(p.api_group, p.resource, p.verb) for p in rbac.permissions(NS)}
    unused = granted - found
    assert not unused, f"rules in cloud_bridge/rbac.py that no code uses: {sorted(unused)}"


def test_dockerfile_runs_the_bridge_command() -> None:
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["cloud-bridge"] == "cloud_bridge.__main__:main"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["cloud-bridge"]' in dockerfile and "pip install ." in dockerfile
    for package in ("seqstream", "fleetproto", "cloud_bridge"):
        assert f"COPY {package}/ {package}/" in dockerfile
    user = re.search(r"^USER (\d+)", dockerfile, re.M)
    assert user and user[1] == str(
        yaml.safe_load((CHART / "values.yaml").read_text())["bridge"]["podSecurityContext"]["runAsUser"]
    )


# --- against the apiserver ------------------------------------------------------------------------


@dataclass
class Release:
    name: str
    namespace: str
    cp: ControlPlane

    @property
    def bridge(self) -> str:
        return f"{self.name}-edgefleet-bridge"

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.bridge}"

    def get(self, *args: str) -> Any:
        return self.cp.kubectl_json("get", *args)

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        ns = ["-n", namespace] if namespace else []
        return self.cp.kubectl("get", kind, name, *ns, check=False).returncode == 0


def install(cp: ControlPlane, tmp_path: Path, values: dict[str, Any]) -> Release:
    release = Release(f"ef{secrets.token_hex(3)}", f"chart-{secrets.token_hex(3)}", cp)
    cp.kubectl("create", "namespace", release.namespace)
    # What kube-controller-manager publishes in every namespace (none runs here).
    if cp.ca_cert_path is not None and not release.exists("configmap", "kube-root-ca.crt", release.namespace):
        cp.kubectl(
            "create", "configmap", "kube-root-ca.crt", "-n", release.namespace, f"--from-file=ca.crt={cp.ca_cert_path}"
        )
    out = cp.helm(
        "install", release.name, str(CHART), "-n", release.namespace,
        "--values", str(values_file(tmp_path, values)),
    ).stdout  # fmt: skip
    assert "STATUS: deployed" in out and "kubectl get nodes -l edgefleet.io/device" in out
    return release


@pytest.fixture
def release(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Release]:
    rel = install(control_plane, tmp_path, {"broker": {"auth": {"devices": {}}}})
    yield rel
    control_plane.helm("uninstall", rel.name, "-n", rel.namespace, check=False)
    control_plane.kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)


def can_i(rel: Release, *args: str) -> bool:
    proc = rel.cp.kubectl("auth", "can-i", *args, f"--as={rel.service_account}", check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc
    return answer == "yes"


def test_install_upgrade_uninstall(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    rel = install(cp, tmp_path, TLS_VALUES)
    ns, b = rel.namespace, rel.bridge
    try:
        # The CRD came from crds/.
        assert rel.get("crd", "edgedevices.edgefleet.io")["spec"]["scope"] == "Cluster"
        deployment = rel.get("deployment", b, "-n", ns)
        pod = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["replicas"] == 2 and pod["serviceAccountName"] == b
        assert "--leader-elect" in pod["containers"][0]["args"]
        assert rel.get("deployment", f"{rel.name}-edgefleet-broker", "-n", ns)["spec"]["strategy"]["type"] == "Recreate"
        service = rel.get("service", b, "-n", ns)
        assert service["spec"]["clusterIP"] == "10.0.0.200" and service["spec"]["ports"][0]["port"] == 10250
        devices = rel.get("service", f"{rel.name}-edgefleet-broker-devices", "-n", ns)["spec"]
        assert devices["type"] == "NodePort" and devices["ports"][0]["nodePort"] == 30883
        assert rel.get("pvc", f"{rel.name}-edgefleet-broker-data", "-n", ns)["spec"]["resources"]["requests"] == {
            "storage": "2Gi"
        }
        assert rel.get("clusterrole", b)["rules"]
        assert rel.get("role", f"{b}-node-leases", "-n", "kube-node-lease")["rules"][0]["resources"] == ["leases"]
        assert rel.get("rolebinding", f"{b}-host-pods", "-n", ns)["subjects"][0]["name"] == b
        secret_names = ("broker-auth", "broker-tls")
        before = {s: rel.get("secret", f"{rel.name}-edgefleet-{s}", "-n", ns)["data"] for s in secret_names}
        before["kubelet"] = rel.get("secret", f"{b}-kubelet-tls", "-n", ns)["data"]

        # An upgrade keeps the generated password and certificates (helm lookup).
        cp.helm("upgrade", rel.name, str(CHART), "-n", ns, "--values", str(values_file(tmp_path, TLS_VALUES)))
        after = {s: rel.get("secret", f"{rel.name}-edgefleet-{s}", "-n", ns)["data"] for s in secret_names}
        after["kubelet"] = rel.get("secret", f"{b}-kubelet-tls", "-n", ns)["data"]
        assert after == before
        assert rel.get("deployment", b, "-n", ns)["metadata"]["generation"] >= 1
    finally:
        out = cp.helm("uninstall", rel.name, "-n", ns).stdout
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    assert "uninstalled" in out
    for kind, name, namespace in (
        ("deployment", b, ns),
        ("deployment", f"{rel.name}-edgefleet-broker", ns),
        ("service", b, ns),
        ("secret", f"{b}-kubelet-tls", ns),
        ("configmap", f"{rel.name}-edgefleet-broker", ns),
        ("serviceaccount", b, ns),
        ("clusterrole", b, None),
        ("clusterrolebinding", b, None),
        ("role", f"{b}-node-leases", "kube-node-lease"),
        ("rolebinding", f"{b}-leader", ns),
    ):
        assert not rel.exists(kind, name, namespace), f"{kind}/{name} outlived helm uninstall"
    assert rel.exists("crd", "edgedevices.edgefleet.io")  # helm never deletes CRDs
    assert json.loads(cp.helm("list", "-n", ns, "-o", "json").stdout) == []


@pytest.mark.parametrize("values", [{}, TLS_VALUES, EXTERNAL_BROKER_VALUES], ids=["default", "tls", "external"])
def test_apiserver_accepts_every_rendering(control_plane: ControlPlane, tmp_path: Path, values: dict[str, Any]) -> None:
    """Server-side dry run: every object of every value set passes the apiserver's validation."""
    token = secrets.token_hex(3)
    ns, hosts = f"dry-{token}", f"dry-hosts-{token}"
    if values.get("bridge", {}).get("hostNamespace"):
        values = {**values, "bridge": {**values["bridge"], "hostNamespace": hosts}}
    created = [ns, hosts]
    for name in created:
        control_plane.kubectl("create", "namespace", name)
    try:
        r = render(tmp_path, "ef", ns, values)
        manifest = "\n---\n".join(json.dumps(o) for o in r.objects)
        out = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest).stdout
        assert out.count("(server dry run)") == len(r.objects), out
    finally:
        for name in created:
            control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_service_account_may_do_what_the_bridge_does_and_no_more(release: Release) -> None:
    wanted = sorted(rbac.permissions(release.namespace), key=str)
    deadline = time.monotonic() + 15  # the RBAC authorizer's informer catches up with the new bindings
    while not can_i(release, *wanted[0].can_i_args()) and time.monotonic() < deadline:
        time.sleep(0.2)
    denied = [p for p in wanted if not can_i(release, *p.can_i_args())]
    assert not denied, f"{release.service_account} may not: {denied}"
    ns = release.namespace
    for args in (
        ["update", "nodes"],
        ["create", "pods", "-n", "default"],  # host pods only in the host namespace
        ["list", "secrets", "-n", ns],
        ["delete", "edgedevices.edgefleet.io"],
        ["create", "leases.coordination.k8s.io", "-n", "default"],
        ["get", "customresourcedefinitions.apiextensions.k8s.io/other.example.com"],
        ["create", "pods", "--subresource=exec", "-n", ns],
        ["create", "clusterroles.rbac.authorization.k8s.io"],
    ):
        assert not can_i(release, *args), f"{release.service_account} may {args}"


# --- the real bridge, as the chart configures it ---------------------------------------------------


def service_account_kubeconfig(rel: Release, path: Path) -> Path:
    """A kubeconfig with a token of the bridge's ServiceAccount (TokenRequest API)."""
    token = rel.cp.kubectl("create", "token", rel.bridge, "-n", rel.namespace, "--duration=1h").stdout.strip()
    cluster = rel.cp.kubectl_json("config", "view", "--raw", "--minify", "--flatten")["clusters"][0]["cluster"]
    return write_kubeconfig(path, cluster=cluster, user_name=rel.bridge, user={"token": token})


def materialize(rel: Release, pod: dict[str, Any], mount: dict[str, Any], root: Path) -> Path:
    """Write a Secret/ConfigMap volume's files under ``root`` as the kubelet would mount them."""
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    target = root / mount["mountPath"].lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    if "secret" in volume:
        obj = rel.get("secret", volume["secret"]["secretName"], "-n", rel.namespace)
        files = {k: base64.b64decode(v) for k, v in obj["data"].items()}
        items = volume["secret"].get("items")
    elif "configMap" in volume:
        obj = rel.get("configmap", volume["configMap"]["name"], "-n", rel.namespace)
        files = {k: v.encode() for k, v in obj["data"].items()}
        items = volume["configMap"].get("items")
    else:
        return target
    for key, path in ((i["key"], i["path"]) for i in items) if items else ((k, k) for k in files):
        (target / path).write_bytes(files[key])
    return target


def rewrite(args: list[str], root: Path, replace: dict[str, str]) -> list[str]:
    out = []
    for arg in args:
        name, _, value = arg.partition("=")
        if name in replace:
            value = replace[name]
        elif value.startswith("/"):
            value = str(root / value.lstrip("/"))
        out.append(f"{name}={value}" if value or "=" in arg else name)
    return out


def test_real_bridge_with_the_charts_config_and_identity(release: Release, tmp_path: Path) -> None:
    """The installed Deployment's args, files and ServiceAccount run the real bridge; a device joins."""
    rel, cp = release, release.cp
    device, device_password = f"dev-{secrets.token_hex(3)}", secrets.token_hex(8)
    root = tmp_path / "pods"

    # The broker as the chart runs it: its init script builds the accounts (mosquitto_passwd -U)
    # and the ACL from the installed Secret/ConfigMap; plus one device account of the user's own.
    cp.kubectl(
        "create", "secret", "generic", "extra", "-n", rel.namespace,
        f"--from-literal=passwords={device}:{device_password}",
    )  # fmt: skip
    broker_deploy = rel.get("deployment", f"{rel.name}-edgefleet-broker", "-n", rel.namespace)
    broker_pod = broker_deploy["spec"]["template"]["spec"]
    init = container(broker_deploy, "config")
    for mount in init["volumeMounts"]:
        materialize(rel, broker_pod, mount, root / "broker")
    (root / "broker" / "src" / "extra").mkdir(parents=True)
    (root / "broker" / "src" / "extra" / "passwords").write_text(f"{device}:{device_password}")
    script = (
        init["command"][2]
        .replace("/src/", f"{root}/broker/src/")
        .replace("/mosquitto/config", f"{root}/broker/mosquitto/config")
    )
    subprocess.run(["sh", "-ec", script], check=True, timeout=60)
    config_dir = root / "broker" / "mosquitto" / "config"
    hashed = (config_dir / "passwords").read_text()
    assert device_password not in hashed and f"{device}:$" in hashed and "edgefleet-bridge:$" in hashed
    broker_conf = f"password_file {config_dir / 'passwords'}\nacl_file {config_dir / 'acl.conf'}\n"

    with Broker("mosquitto", anonymous=False, extra_config=broker_conf) as broker:
        # The bridge: the Deployment's own arguments; its files as the kubelet would mount them.
        deployment = rel.get("deployment", rel.bridge, "-n", rel.namespace)
        pod = deployment["spec"]["template"]["spec"]
        bridge = pod["containers"][0]
        for mount in bridge["volumeMounts"]:
            materialize(rel, pod, mount, root / "bridge")
        env = {"POD_IP": "127.0.0.1", "POD_NAMESPACE": rel.namespace}
        chart_broker = flag_values(bridge["args"])["--broker"]
        port = free_port()
        args = rewrite(
            expand_env(bridge["args"], env),
            root / "bridge",
            {
                "--broker": re.sub(r"@[^/]+$", f"@{broker.host}:{broker.port}", chart_broker),
                "--kubelet-bind": "127.0.0.1",
                "--kubelet-port": str(port),
            },
        )
        args.append(f"--kubeconfig={service_account_kubeconfig(rel, tmp_path / 'bridge.kubeconfig')}")
        # The device is admitted the way a user admits one: an EdgeDevice.
        edge_device = {"apiVersion": "edgefleet.io/v1alpha1", "kind": "EdgeDevice", "metadata": {"name": device}}
        cp.kubectl("apply", "-f", "-", input=json.dumps(edge_device))
        log = tmp_path / "bridge.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cloud_bridge", *args],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO), "POD_NAMESPACE": rel.namespace},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        agent = None
        try:
            agent = start_agent(tmp_path, device, device_password, broker)

            def node_ready() -> bool:
                got = cp.kubectl("get", "node", device, "-o", "json", check=False)
                if got.returncode != 0:
                    return False
                conditions = json.loads(got.stdout)["status"].get("conditions", [])
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

            deadline = time.monotonic() + 60
            while not node_ready():
                assert proc.poll() is None, f"the bridge exited {proc.returncode}:\n{log.read_text()[-3000:]}"
                assert agent.poll() is None, f"the agent exited:\n{(tmp_path / 'agent.log').read_text()[-3000:]}"
                assert time.monotonic() < deadline, (
                    f"node {device} not Ready; bridge log:\n{log.read_text()[-3000:]}\n"
                    f"agent log:\n{(tmp_path / 'agent.log').read_text()[-2000:]}"
                )
                time.sleep(0.3)
            node = rel.get("node", device)
            assert node["status"]["addresses"][0]["address"] == "127.0.0.1"  # --kubelet-address=$(POD_IP)
            assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == port
            lease = rel.get("lease", device, "-n", "kube-node-lease")
            assert lease["spec"]["holderIdentity"] == device
            assert "forbidden" not in log.read_text().lower(), log.read_text()[-3000:]
        finally:
            if agent is not None:
                stop(agent)
            stop(proc)
            cp.kubectl("delete", "edgedevice", device, "--wait=false", check=False)
            cp.kubectl("delete", "node", device, "--wait=false", check=False)
        assert proc.returncode == 0, log.read_text()[-3000:]


def start_agent(tmp_path: Path, device: str, password: str, broker: Broker) -> subprocess.Popen[bytes]:
    """A real edge agent (process runtime: no engine needed) logging in with its own account."""
    (tmp_path / "agent-data").mkdir()
    (tmp_path / "agent-password").write_text(password)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nname = "{device}"\ndata_dir = "{tmp_path / "agent-data"}"\nheartbeat_seconds = 0.5\n'
        f'[broker]\nurls = ["mqtt://{broker.host}:{broker.port}"]\nusername = "{device}"\n'
        f'password_file = "{tmp_path / "agent-password"}"\nreconnect_max_seconds = 0.5\n'
        '[runtime]\nkind = "process"\n'
    )
    with (tmp_path / "agent.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "--config", str(config)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
