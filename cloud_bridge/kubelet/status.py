"""metav1.Status documents, as a kubelet writes them.

* HTTP error bodies: a full Status (``kind``/``apiVersion`` set) so that
  client-go's upgrade path decodes it into a StatusError with our message.
* The exec/attach error stream (remotecommand v4/v5): the Status without type
  meta, exactly as kubelet's ``v4WriteStatusFunc`` marshals it, e.g.
  ``{"metadata":{},"status":"Success"}``. Protocols v1-v3 carry only the
  error text and nothing on success.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ProviderError

NON_ZERO_EXIT_CODE_REASON = "NonZeroExitCode"
EXIT_CODE_CAUSE_TYPE = "ExitCode"

_REASON_BY_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "Timeout",
    413: "RequestEntityTooLarge",
    414: "BadRequest",
    431: "BadRequest",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_code(code: int) -> dict[str, Any]:
    """What the kubelet writes when the command exited with ``code``."""
    if code == 0:
        return success()
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": NON_ZERO_EXIT_CODE_REASON,
        "details": {"causes": [{"reason": EXIT_CODE_CAUSE_TYPE, "message": str(code)}]},
    }


def failure(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASON_BY_CODE.get(code, "InternalError"),
        "code": code,
    }


def from_error(exc: BaseException) -> dict[str, Any]:
    """A Status for what went wrong in a provider (kubelet: NewInternalError)."""
    if isinstance(exc, ProviderError):
        return failure(exc.status, exc.message, exc.reason)
    text = f"error executing command in container: {exc or type(exc).__name__}"
    doc = failure(500, f"Internal error occurred: {text}", "InternalError")
    doc["details"] = {"causes": [{"message": text}]}
    return doc


def http_body(code: int, message: str, reason: str | None = None) -> bytes:
    """A complete Status for an HTTP error response."""
    doc = {"kind": "Status", "apiVersion": "v1", **failure(code, message, reason)}
    return json.dumps(doc).encode() + b"\n"


def encode(status: dict[str, Any], *, as_json: bool) -> bytes:
    """Bytes for the error stream/channel: the Status (v4+) or, for older
    protocols, the error text and nothing on success (may be empty)."""
    if as_json:
        return json.dumps(status, separators=(",", ":")).encode()
    if status.get("status") == "Success":
        return b""
    return str(status.get("message", "error")).encode()
