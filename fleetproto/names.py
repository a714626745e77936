"""Name rules for what ends up in container names, labels and file paths on the device.

Kubernetes already enforces these for real objects; the device checks again
because a name becomes part of a Docker container name and a label, and a file
key becomes a path inside a container: a hostile or buggy peer must not be
able to smuggle ``../`` or a ``/`` through.
"""

from __future__ import annotations

import posixpath
import re

from .errors import SchemaError

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_UID = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_.]{0,127}")
_ENV = re.compile(r"[^=\x00]{1,1024}")


def dns_label(value: str, path: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise SchemaError(path, f"{value!r} is not a DNS label (lower-case letters, digits, '-', at most 63)")
    return value


def dns_subdomain(value: str, path: str) -> str:
    if not _DNS_SUBDOMAIN.fullmatch(value):
        raise SchemaError(path, f"{value!r} is not a DNS subdomain name")
    return value


def uid(value: str, path: str) -> str:
    if not _UID.fullmatch(value):
        raise SchemaError(path, f"{value!r} is not a valid uid")
    return value


def env_name(value: str, path: str) -> str:
    if not _ENV.fullmatch(value):
        raise SchemaError(path, f"{value!r} is not a valid environment variable name")
    return value


def relative_path(value: str, path: str) -> str:
    """A path below a directory: relative, no ``..``, no empty or ``.`` parts."""
    parts = value.split("/")
    if not value or value.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\x00" in value:
        raise SchemaError(path, f"{value!r} must be a relative path without '.', '..' or empty parts")
    return value


def absolute_path(value: str, path: str) -> str:
    if not value.startswith("/") or "\x00" in value or ".." in value.split("/"):
        raise SchemaError(path, f"{value!r} must be an absolute path without '..'")
    return posixpath.normpath(value)
