"""edge_agent: runs on the device; drives a container runtime for the pods bound to it.

``python -m edge_agent --config agent.toml`` starts it (``__main__``); the
parts are ``config``, ``epoch``, ``store``, ``nodeinfo``, ``reconciler`` (pods ->
containers), ``agent`` (the seqstream side) and ``streams`` (exec, attach,
logs, port-forward, hostexec, stats). The message schema is ``fleetproto``.
"""

__version__ = "0.1.0"
