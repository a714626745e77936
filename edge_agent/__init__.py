"""edge_agent: runs on the device; drives a container runtime for the pods bound to it."""
