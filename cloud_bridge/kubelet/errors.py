"""Typed errors a provider raises; the HTTP layer maps them like a kubelet does.

Raised before the provider first touches its ``StreamIO`` (or for logs, before
``logs()`` returns its iterator), an error becomes a plain HTTP response whose
body is a ``metav1.Status`` (client-go decodes it into a StatusError). Raised
later, it travels as a v4 Status on the exec/attach error stream, or as text
on a port-forward error stream.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base class: ``status`` is the HTTP code, ``reason`` the metav1 StatusReason."""

    status: int = 500
    reason: str = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ProviderError):
    """No such pod, container or device behind this bridge."""

    status = 404
    reason = "NotFound"


class BadRequest(ProviderError):
    """The request cannot be served as asked (e.g. container not running)."""

    status = 400
    reason = "BadRequest"


class Unavailable(ProviderError):
    """The device is offline or unreachable right now; retrying may help."""

    status = 503
    reason = "ServiceUnavailable"


class Unauthorized(ProviderError):
    """No valid credentials (neither a client certificate nor an accepted bearer token)."""

    status = 401
    reason = "Unauthorized"


class Forbidden(ProviderError):
    """Authenticated, but not allowed this request (kubelet: SubjectAccessReview denied)."""

    status = 403
    reason = "Forbidden"
