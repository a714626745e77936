"""Bearer-token clients (metrics-server, Prometheus): what a request asks, as the kubelet names it.

The apiserver presents a client certificate; other clients of a kubelet send
a ServiceAccount token, which the kubelet checks with a TokenReview and then
authorizes with a SubjectAccessReview on ``nodes/<subresource>`` of its node
(``pkg/kubelet/server/auth.go``): ``/stats/*`` -> ``stats``, ``/metrics/*``
-> ``metrics``, ``/logs/*`` -> ``log``, anything else -> ``proxy``; the verb
follows the HTTP method. ``request_attributes`` is that mapping (pure); a
``TokenAuthorizer`` (``cloud_bridge/token_review.py`` asks the apiserver) does
the checking. Certificate clients are not authorized further: the client CA
is trusted as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_SUBRESOURCES = (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"), ("/checkpoint", "checkpoint"))


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    verb: str
    subresource: str
    node: str
    """The virtual node asked about; "" when the request does not say (then access to all nodes is needed)."""
    path: str


def _is_subpath(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def request_attributes(method: str, path: str, node: str | None) -> RequestAttributes:
    subresource = next((sub for prefix, sub in _SUBRESOURCES if _is_subpath(path, prefix)), "proxy")
    return RequestAttributes(_VERBS.get(method, ""), subresource, node or "", path)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, None if there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class TokenAuthorizer(Protocol):
    async def authorize(self, token: str, attributes: RequestAttributes) -> str:
        """The user name if ``token`` may do this; raise ``Unauthorized`` (bad token) or ``Forbidden``."""
        ...
