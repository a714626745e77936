"""Field-by-field reading of decoded msgpack maps, with paths in every error.

Decoded input is untrusted: any value may have any type. ``Fields`` wraps one
map, hands out typed values (or raises ``SchemaError`` naming the path), and
remembers which keys were read so the rest can be reported as unknown fields.
Nested readers share one ``unknown`` list, so a whole message reports every
key it ignored, each with its full path.

Rules: ``bool`` is never accepted as an int (Python's ``True == 1`` would let
``"cpus": true`` through); floats accept ints; strings are bounded.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import SchemaError

T = TypeVar("T")

MAX_STR = 64 * 1024
"""Longest text field (names, images, messages); file data is bytes, not text."""
MAX_ITEMS = 10_000
"""Longest list or map inside a message."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check_str(value: Any, path: str, *, empty: bool = True, max_len: int = MAX_STR) -> str:
    if not isinstance(value, str):
        raise SchemaError(path, f"must be a string, not {type(value).__name__}")
    if not empty and not value:
        raise SchemaError(path, "must not be empty")
    if len(value) > max_len:
        raise SchemaError(path, f"longer than {max_len} characters")
    return value


def check_int(value: Any, path: str, *, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(path, f"must be an integer, not {type(value).__name__}")
    if lo is not None and value < lo:
        raise SchemaError(path, f"must be at least {lo}, not {value}")
    if hi is not None and value > hi:
        raise SchemaError(path, f"must be at most {hi}, not {value}")
    return value


def check_float(value: Any, path: str, *, lo: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(path, f"must be a number, not {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise SchemaError(path, "must be a finite number")
    if lo is not None and out < lo:
        raise SchemaError(path, f"must be at least {lo}, not {out}")
    return out


def check_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SchemaError(path, f"must be true or false, not {type(value).__name__}")
    return value


def check_bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, bytes):
        raise SchemaError(path, f"must be binary, not {type(value).__name__}")
    return value


def check_str_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise SchemaError(path, f"must be a list, not {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise SchemaError(path, f"more than {MAX_ITEMS} items")
    return tuple(check_str(item, join(path, i)) for i, item in enumerate(value))


class Fields:
    """Typed access to one decoded map; ``finish()`` records the keys never read."""

    def __init__(self, data: Any, path: builtins.str = "", unknown: builtins.list[builtins.str] | None = None) -> None:
        if not isinstance(data, Mapping):
            raise SchemaError(path or "message", f"must be a map, not {type(data).__name__}")
        if len(data) > MAX_ITEMS:
            raise SchemaError(path or "message", f"more than {MAX_ITEMS} keys")
        self.data = data
        self.path = path
        self.unknown: builtins.list[builtins.str] = unknown if unknown is not None else []
        self._seen: set[Any] = set()

    def _get(self, key: builtins.str, default: Any) -> Any:
        self._seen.add(key)
        value = self.data.get(key, MISSING)
        if value is MISSING or value is None:
            if default is MISSING:
                raise SchemaError(join(self.path, key), "is required")
            return default
        return value

    def seen(self, *keys: builtins.str) -> None:
        """Mark keys as known without reading them (e.g. the envelope's ``type``)."""
        self._seen.update(keys)

    def str(
        self, key: builtins.str, default: Any = MISSING, *, empty: builtins.bool = True, max_len: builtins.int = MAX_STR
    ) -> Any:
        value = self._get(key, default)
        return value if value is default else check_str(value, join(self.path, key), empty=empty, max_len=max_len)

    def int(
        self,
        key: builtins.str,
        default: Any = MISSING,
        *,
        lo: builtins.int | None = None,
        hi: builtins.int | None = None,
    ) -> Any:
        value = self._get(key, default)
        return value if value is default else check_int(value, join(self.path, key), lo=lo, hi=hi)

    def float(self, key: builtins.str, default: Any = MISSING, *, lo: builtins.float | None = None) -> Any:
        value = self._get(key, default)
        return value if value is default else check_float(value, join(self.path, key), lo=lo)

    def bool(self, key: builtins.str, default: Any = MISSING) -> Any:
        value = self._get(key, default)
        return value if value is default else check_bool(value, join(self.path, key))

    def bytes(self, key: builtins.str, default: Any = MISSING) -> Any:
        value = self._get(key, default)
        return value if value is default else check_bytes(value, join(self.path, key))

    def str_list(self, key: builtins.str, default: Any = ()) -> tuple[builtins.str, ...]:
        value = self._get(key, default)
        return value if value is default else check_str_list(value, join(self.path, key))

    def list(self, key: builtins.str, item: Callable[[Fields], T], default: Any = ()) -> tuple[T, ...]:
        """A list of maps, each read by ``item`` from its own ``Fields``."""
        value = self._get(key, default)
        if value is default:
            return value
        path = join(self.path, key)
        if not isinstance(value, list | tuple):
            raise SchemaError(path, f"must be a list, not {type(value).__name__}")
        if len(value) > MAX_ITEMS:
            raise SchemaError(path, f"more than {MAX_ITEMS} items")
        return tuple(self._read(entry, join(path, i), item) for i, entry in enumerate(value))

    def map(
        self, key: builtins.str, item: Callable[[Any, builtins.str], T], default: Any = MISSING
    ) -> dict[builtins.str, T]:
        """A map with string keys; each value checked by ``item(value, path)``."""
        value = self._get(key, {} if default is MISSING else default)
        path = join(self.path, key)
        if not isinstance(value, Mapping):
            raise SchemaError(path, f"must be a map, not {type(value).__name__}")
        if len(value) > MAX_ITEMS:
            raise SchemaError(path, f"more than {MAX_ITEMS} keys")
        out: dict[builtins.str, T] = {}
        for name, entry in value.items():
            check_str(name, f"{path} key")
            out[name] = item(entry, join(path, name))
        return out

    def obj(self, key: builtins.str, item: Callable[[Fields], T], default: Any = MISSING) -> Any:
        """A nested map read by ``item``."""
        value = self._get(key, default)
        if value is default:
            return value
        return self._read(value, join(self.path, key), item)

    def _read(self, value: Any, path: builtins.str, item: Callable[[Fields], T]) -> T:
        fields = Fields(value, path, self.unknown)
        out = item(fields)
        fields.finish()
        return out

    def finish(self) -> builtins.list[builtins.str]:
        """Record (and return) the paths of keys that were present but never read."""
        for key in self.data:
            if key not in self._seen:
                self.unknown.append(join(self.path, key if isinstance(key, str) else repr(key)))
        return self.unknown


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    """Encoders omit unset optional fields; decoders treat missing and nil alike."""
    return {key: value for key, value in data.items() if value is not None}
