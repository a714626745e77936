"""The shape every message and sub-record shares: ``to_dict``, ``read(Fields)``, ``from_dict``."""

from __future__ import annotations

from typing import Any, Self

from ._schema import Fields


class Record:
    """Frozen dataclasses that (de)serialise themselves to msgpack-ready maps."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def read(cls, f: Fields) -> Self:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Self:
        """Validate ``data``; unknown keys are ignored (see ``DesiredPod`` for the exception)."""
        f = Fields(data, path)
        out = cls.read(f)
        f.finish()
        return out
