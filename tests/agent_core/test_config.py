"""Configuration: file + environment, validated up front; bad config = one line, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "edge_agent" / "agent.example.toml"

MINIMAL = """
[device]
name = "pi-1"
data_dir = "{data}"
[broker]
urls = ["mqtt://127.0.0.1:1883"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text.replace("{data}", str(tmp_path / "data")))
    return path


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE, {})
    assert config.name == "pi-1" and config.runtime.kind == "docker"
    assert config.pods.backoff_initial_seconds == 10 and config.pods.backoff_max_seconds == 300
    assert not config.features.host_exec


def test_environment_overrides_the_file(tmp_path) -> None:
    env = {
        "EDGE_AGENT_DEVICE_NAME": "pi-9",
        "EDGE_AGENT_BROKER_URLS": "mqtt://a:1883, mqtt://b:1884",
        "EDGE_AGENT_FEATURES_HOST_EXEC": "true",
        "EDGE_AGENT_PODS_BACKOFF_INITIAL_SECONDS": "0.5",
        "EDGE_AGENT_RUNTIME_KIND": "process",
        "EDGE_AGENT_BROKER_PASSWORD": "s3cret",
        "EDGE_AGENT_CONFIG": "ignored here",
        "UNRELATED": "x",
    }
    config = load_config(write(tmp_path, MINIMAL), env)
    assert config.name == "pi-9"
    assert config.broker.urls == ("mqtt://a:1883", "mqtt://b:1884")
    assert config.features.host_exec and config.features.enabled == ("host_exec",)
    assert config.pods.backoff_initial_seconds == 0.5
    assert config.runtime.kind == "process"
    broker = config.broker.broker_config(1)
    assert (broker.host, broker.port, broker.password) == ("b", 1884, "s3cret")
    assert "s3cret" not in repr(config)


def test_environment_only(tmp_path) -> None:
    config = load_config(None, {"EDGE_AGENT_DEVICE_NAME": "d", "EDGE_AGENT_BROKER_URLS": "mqtts://x"})
    assert config.broker.broker_config().tls is not None


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[device]\nname='x'\n", {}, "[broker] urls is required"),
        (MINIMAL + "[runtime]\nkind='lxc'\n", {}, "kind must be one of docker, podman, process"),
        (MINIMAL.replace('"pi-1"', '"bad name!"'), {}, "invalid device name"),
        (MINIMAL + "[device2]\n", {}, "unknown section [device2]"),
        (MINIMAL.replace("[broker]", "[broker]\nurl = 'x'"), {}, "unknown key 'url' in [broker]"),
        (MINIMAL, {"EDGE_AGENT_BROKER_URL": "mqtt://x"}, "unknown environment variable EDGE_AGENT_BROKER_URL"),
        (MINIMAL, {"EDGE_AGENT_DEVICE_HEARTBEAT_SECONDS": "soon"}, "must be a float"),
        (MINIMAL, {"EDGE_AGENT_FEATURES_HOST_EXEC": "maybe"}, "must be a bool"),
        (MINIMAL.replace("mqtt://", "http://"), {}, "scheme must be mqtt:// or mqtts://"),
        (MINIMAL.replace("[broker]", "[broker]\nca_file = '/nonexistent/ca.pem'"), {}, "ca_file"),
        (MINIMAL + "[pods]\nbackoff_initial_seconds = 600\n", {}, "backoff_initial_seconds <= backoff_max"),
        ("[device\n", {}, "not valid TOML"),
        (MINIMAL.replace('name = "pi-1"', "name = 5"), {}, "[device] name must be a str"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, env, message) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", {})


def run_main(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **(env or {})},
        check=False,
    )


def test_main_exits_2_with_one_line_on_bad_config(tmp_path) -> None:
    done = run_main("--config", str(write(tmp_path, MINIMAL + "[runtime]\nkind='lxc'\n")))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("edge-agent: configuration error:")
    assert "Traceback" not in done.stderr
    done = run_main("--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_main_check_accepts_a_good_config(tmp_path) -> None:
    done = run_main("--config", str(write(tmp_path, MINIMAL)), "--check")
    assert done.returncode == 0, done.stderr
    assert "pi-1" in done.stdout
