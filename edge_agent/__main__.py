"""``python -m edge_agent --config agent.toml``: run the edge agent until SIGTERM/SIGINT.

Exit codes: 0 after a signal, 2 for a configuration error (one line on
stderr), 1 if the agent failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from ._memory import trim_periodically
from .config import ENV_CONFIG, ConfigError, load_config

DEFAULT_CONFIG = "/etc/edge-agent/agent.toml"


async def _run_until_signal(agent: object) -> None:
    from .agent import Agent

    assert isinstance(agent, Agent)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    trimmer = asyncio.create_task(trim_periodically(), name="malloc-trim")
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await agent.run()
    finally:
        trimmer.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=None, help=f"TOML config file (default ${ENV_CONFIG}, else {DEFAULT_CONFIG})"
    )
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    args = parser.parse_args(argv)
    path = args.config or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG
    if args.config is None and ENV_CONFIG not in os.environ and not Path(path).exists():
        path = None  # no file at all: configuration from the environment only
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"edge-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"edge-agent: configuration of {config.name} is valid")
        return 0
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("aiomqtt").setLevel(logging.WARNING)
    from .agent import Agent

    try:
        asyncio.run(_run_until_signal(Agent(config)))
    except Exception:
        logging.getLogger("edge_agent").exception("the agent failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
