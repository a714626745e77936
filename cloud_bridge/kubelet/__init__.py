"""The kubelet API front end of the cloud bridge (virtual-kubelet style).

One TLS port serves the kubelet API for every virtual node (optionally one
more port per node, for node-scoped endpoints; see ``server.py``); a ``Provider``
(see ``provider.py``) does the work on the device side. Streaming requests
(exec, attach, port-forward) are served over SPDY/3.1, which kube-apiserver
speaks to kubelets, and exec/attach also over WebSocket channel protocols.
"""

from .errors import BadRequest, NotFound, ProviderError, Unavailable
from .provider import (
    ByteConn,
    InputStream,
    LogOptions,
    OutputStream,
    Provider,
    StreamIO,
    TerminalSize,
)
from .server import KubeletServer, ServerConfig, make_ssl_context

__all__ = [
    "BadRequest",
    "ByteConn",
    "InputStream",
    "KubeletServer",
    "LogOptions",
    "NotFound",
    "OutputStream",
    "Provider",
    "ProviderError",
    "ServerConfig",
    "StreamIO",
    "TerminalSize",
    "Unavailable",
    "make_ssl_context",
]
