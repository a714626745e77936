"""Agent configuration: a TOML file, then ``EDGE_AGENT_<SECTION>_<KEY>`` environment overrides.

Every key of the file has exactly one environment variable, named after its
section and key (``[broker] urls`` -> ``EDGE_AGENT_BROKER_URLS``; lists are
comma-separated, booleans ``true``/``false``/``1``/``0``). Containers and
systemd units can then configure a device without writing a file.

Everything is validated here, at start, so a mistake is one clear line
(``ConfigError``) and exit code 2 - not a traceback an hour later when the
broker first reconnects. Unknown keys and unknown ``EDGE_AGENT_*`` variables
are errors too: a typo must not silently fall back to a default.
See ``agent.example.toml`` for every key.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from seqstream.mqtt import BrokerConfig
from seqstream.topics import validate_name

ENV_PREFIX = "EDGE_AGENT_"
ENV_CONFIG = "EDGE_AGENT_CONFIG"
"""The config file path (read by ``__main__``, not a setting)."""
RUNTIMES = ("docker", "podman", "process")
DEFAULT_SOCKETS = {"docker": None, "podman": "unix:///run/podman/podman.sock"}


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for the operator."""


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    urls: tuple[str, ...]
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    protocol: str = "auto"
    qos: int = 0
    reconnect_max_seconds: float = 10.0
    failover_seconds: float = 60.0
    """With several URLs: move to the next one after this long without a connection."""

    def broker_config(self, index: int = 0) -> BrokerConfig:
        """The seqstream ``BrokerConfig`` for ``urls[index]`` (TLS context built here)."""
        url = self.urls[index % len(self.urls)]
        base = BrokerConfig.from_url(url)
        tls = base.tls
        if tls is not None and (self.ca_file or self.cert_file):
            tls = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file:
                tls.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        password = self.password
        if self.password_file is not None:
            password = self.password_file.read_text().strip()
        return replace(
            base,
            tls=tls,
            username=self.username or base.username,
            password=password or base.password,
            protocol=self.protocol,  # type: ignore[arg-type]
            qos=self.qos,
            reconnect_max=max(base.reconnect_min, self.reconnect_max_seconds),
        )


@dataclass(frozen=True, kw_only=True)
class RuntimeSettings:
    kind: str = "docker"
    socket: str | None = None
    """Engine API URL (``unix:///...``); None: the kind's default (``$DOCKER_HOST`` for docker)."""

    @property
    def resolved_socket(self) -> str | None:
        return self.socket or DEFAULT_SOCKETS.get(self.kind)


@dataclass(frozen=True, kw_only=True)
class FeatureSettings:
    host_exec: bool = False
    host_port_forward: bool = False

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(name for name in ("host_exec", "host_port_forward") if getattr(self, name))


@dataclass(frozen=True, kw_only=True)
class PodSettings:
    backoff_initial_seconds: float = 10.0
    """First restart delay of a crashed container; doubles per crash (kubelet: 10 s)."""
    backoff_max_seconds: float = 300.0
    """Restart delay cap (kubelet: 5 min)."""
    poll_seconds: float = 2.0
    """How often the runtime is checked for containers that exited."""
    default_grace_seconds: float = 30.0
    """Stop grace for containers of pods the agent no longer knows."""
    seccomp_default: bool = False
    """Containers whose pod names no seccomp profile get the runtime's default one
    (the kubelet's ``--seccomp-default``); off, they run unconfined, as on a kubelet."""


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """Cluster Services on the device (``edge_agent.services``); needs CAP_NET_ADMIN when enabled."""

    enabled: bool = False
    interface: str = "ef-svc0"
    """Dummy interface the agent creates to hold the granted ClusterIPs; removed when the agent stops."""
    hosts_file: Path = Path("/etc/hosts")
    """File whose managed block maps Service names to ClusterIPs."""
    cluster_domain: str = "cluster.local"


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    name: str
    data_dir: Path
    heartbeat_seconds: float = 10.0
    log_level: str = "info"
    broker: BrokerSettings
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    pods: PodSettings = field(default_factory=PodSettings)
    services: ServiceSettings = field(default_factory=ServiceSettings)


# ---------------------------------------------------------------- schema

# section -> key -> (type, default); "device" keys land on AgentConfig itself.
_REQUIRED = object()
_SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "device": {
        "name": ("str", _REQUIRED),
        "data_dir": ("path", Path("/var/lib/edge-agent")),
        "heartbeat_seconds": ("float", 10.0),
        "log_level": ("str", "info"),
    },
    "broker": {
        "urls": ("strs", _REQUIRED),
        "ca_file": ("path", None),
        "cert_file": ("path", None),
        "key_file": ("path", None),
        "username": ("str", None),
        "password": ("str", None),
        "password_file": ("path", None),
        "protocol": ("str", "auto"),
        "qos": ("int", 0),
        "reconnect_max_seconds": ("float", 10.0),
        "failover_seconds": ("float", 60.0),
    },
    "runtime": {"kind": ("str", "docker"), "socket": ("str", None)},
    "features": {"host_exec": ("bool", False), "host_port_forward": ("bool", False)},
    "pods": {
        "backoff_initial_seconds": ("float", 10.0),
        "backoff_max_seconds": ("float", 300.0),
        "poll_seconds": ("float", 2.0),
        "default_grace_seconds": ("float", 30.0),
        "seccomp_default": ("bool", False),
    },
    "services": {
        "enabled": ("bool", False),
        "interface": ("str", "ef-svc0"),
        "hosts_file": ("path", Path("/etc/hosts")),
        "cluster_domain": ("str", "cluster.local"),
    },
}


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def _coerce(kind: str, value: Any, where: str) -> Any:
    """A file value (typed by TOML) or an environment string, as ``kind``."""
    from_env = isinstance(value, str) and kind != "str"
    try:
        if kind == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
        if kind == "path":
            if not isinstance(value, str) or not value:
                raise TypeError
            return Path(value).expanduser()
        if kind == "strs":
            if isinstance(value, str):
                return tuple(part.strip() for part in value.split(",") if part.strip())
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TypeError
            return tuple(value)
        if kind == "bool":
            if from_env:
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise TypeError
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind == "int":
            if from_env:
                return int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            return value
        if kind == "float":
            if from_env:
                return float(value)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError
            return float(value)
    except (TypeError, ValueError):
        expected = {"strs": "a list of strings", "path": "a path"}.get(kind, f"a {kind}")
        raise ConfigError(f"{where} must be {expected}, got {value!r}") from None
    raise AssertionError(kind)


def _merge(file_data: Mapping[str, Any], env: Mapping[str, str], source: str) -> dict[str, dict[str, Any]]:
    values: dict[str, dict[str, Any]] = {section: {} for section in _SCHEMA}
    for section, table in file_data.items():
        if section not in _SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {', '.join(_SCHEMA)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in table.items():
            if key not in _SCHEMA[section]:
                raise ConfigError(f"{source}: unknown key {key!r} in [{section}]")
            values[section][key] = _coerce(_SCHEMA[section][key][0], value, f"{source}: [{section}] {key}")
    known_env = {env_name(s, k): (s, k) for s, keys in _SCHEMA.items() for k in keys}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG:
            continue
        if name not in known_env:
            raise ConfigError(
                f"unknown environment variable {name} (settings are EDGE_AGENT_<SECTION>_<KEY>,"
                f" e.g. {env_name('device', 'name')})"
            )
        section, key = known_env[name]
        values[section][key] = _coerce(_SCHEMA[section][key][0], value, name)
    for section, keys in _SCHEMA.items():
        for key, (_, default) in keys.items():
            if key not in values[section]:
                if default is _REQUIRED:
                    raise ConfigError(f"[{section}] {key} is required (or set {env_name(section, key)})")
                values[section][key] = default
    return values


def _check_file(path: Path | None, what: str) -> None:
    if path is not None and not os.access(path, os.R_OK):
        raise ConfigError(f"{what} {path} does not exist or is not readable")


def _validate(config: AgentConfig) -> AgentConfig:
    try:
        validate_name(config.name)
    except ValueError as exc:
        raise ConfigError(f"[device] name: {exc}") from None
    if config.heartbeat_seconds <= 0:
        raise ConfigError("[device] heartbeat_seconds must be positive")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"[device] log_level must be debug, info, warning or error, not {config.log_level!r}")
    broker = config.broker
    if not broker.urls:
        raise ConfigError("[broker] urls must list at least one broker URL")
    for url in broker.urls:
        try:
            parsed = BrokerConfig.from_url(url)
        except ValueError as exc:
            raise ConfigError(f"[broker] urls: {exc}") from None
        if (broker.ca_file or broker.cert_file) and parsed.tls is None:
            raise ConfigError(f"[broker] ca_file/cert_file are set but {url} is not mqtts://")
    if broker.protocol not in ("auto", "5", "3.1.1"):
        raise ConfigError(f"[broker] protocol must be auto, 5 or 3.1.1, not {broker.protocol!r}")
    if broker.qos not in (0, 1):
        raise ConfigError(f"[broker] qos must be 0 or 1, not {broker.qos}")
    if broker.key_file and not broker.cert_file:
        raise ConfigError("[broker] key_file needs cert_file")
    if broker.password and broker.password_file:
        raise ConfigError("[broker] set password or password_file, not both")
    for what in ("ca_file", "cert_file", "key_file", "password_file"):
        _check_file(getattr(broker, what), f"[broker] {what}")
    if broker.reconnect_max_seconds <= 0 or broker.failover_seconds <= 0:
        raise ConfigError("[broker] reconnect_max_seconds and failover_seconds must be positive")
    if config.runtime.kind not in RUNTIMES:
        raise ConfigError(f"[runtime] kind must be one of {', '.join(RUNTIMES)}, not {config.runtime.kind!r}")
    if config.runtime.kind == "process" and config.runtime.socket:
        raise ConfigError("[runtime] socket makes no sense with kind = 'process'")
    pods = config.pods
    if not 0 < pods.backoff_initial_seconds <= pods.backoff_max_seconds:
        raise ConfigError("[pods] need 0 < backoff_initial_seconds <= backoff_max_seconds")
    if pods.poll_seconds <= 0 or pods.default_grace_seconds < 0:
        raise ConfigError("[pods] poll_seconds must be positive and default_grace_seconds not negative")
    services = config.services
    if (
        not 0 < len(services.interface) <= 15
        or "/" in services.interface
        or services.interface.strip() != services.interface
    ):
        raise ConfigError(
            f"[services] interface must be a network interface name of 1-15 characters, not {services.interface!r}"
        )
    if not services.cluster_domain or services.cluster_domain.startswith(".") or " " in services.cluster_domain:
        raise ConfigError(f"[services] cluster_domain {services.cluster_domain!r} is not a DNS domain")
    return config


def load_config(path: Path | str | None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read ``path`` (None: environment only), apply ``env`` overrides, validate."""
    env = os.environ if env is None else env
    file_data: dict[str, Any] = {}
    source = str(path) if path is not None else "environment"
    if path is not None:
        try:
            with open(path, "rb") as handle:
                file_data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values = _merge(file_data, env, source)
    device = values["device"]
    config = AgentConfig(
        name=device["name"],
        data_dir=device["data_dir"],
        heartbeat_seconds=device["heartbeat_seconds"],
        log_level=device["log_level"],
        broker=BrokerSettings(**values["broker"]),
        runtime=RuntimeSettings(**values["runtime"]),
        features=FeatureSettings(**values["features"]),
        pods=PodSettings(**values["pods"]),
        services=ServiceSettings(**values["services"]),
    )
    return _validate(config)
