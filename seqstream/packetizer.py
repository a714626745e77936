"""Packs encoded frames into packets no larger than the transport allows."""

from __future__ import annotations

from collections.abc import Callable

from .frames import HEADER_SIZE


class PacketBuilder:
    """Collects frames; a frame that does not fit starts the next packet.

    ``header`` makes the 30-byte header when a packet is closed (its
    timestamps are taken then). ``pn`` numbers packets locally, so segment records
    can name the packet that carries them.
    """

    __slots__ = ("_eliciting", "_header", "_limit", "_only_acks", "_parts", "_size", "eliciting_sent", "packets", "pn")

    def __init__(self, *, max_packet: int, first_pn: int, header: Callable[[], bytes]) -> None:
        self._header = header
        self._limit = max_packet
        self._parts: list[bytes | memoryview] = []
        self._size = HEADER_SIZE
        self._eliciting = False
        self._only_acks = True
        self.pn = first_pn
        self.packets: list[bytes] = []
        self.eliciting_sent = False

    @property
    def space(self) -> int:
        """Bytes still free in the current packet."""
        return self._limit - self._size

    @property
    def full_space(self) -> int:
        return self._limit - HEADER_SIZE

    @property
    def only_acks(self) -> bool:
        return self._only_acks and not self.packets

    @property
    def empty(self) -> bool:
        return not self._parts and not self.packets

    def ensure(self, size: int) -> None:
        """Start a new packet unless ``size`` more bytes fit in this one."""
        if self._parts and size > self.space:
            self.close_packet()

    def add(self, encoded: bytes, *, eliciting: bool, ack: bool = False) -> None:
        self.ensure(len(encoded))
        self._parts.append(encoded)
        self._size += len(encoded)
        self._eliciting |= eliciting
        self._only_acks &= ack

    def add_parts(self, parts: tuple[bytes | memoryview, ...]) -> None:
        """Add one eliciting frame given as pieces (a DATA prefix and its payload)."""
        size = sum(len(p) for p in parts)
        self.ensure(size)
        self._parts.extend(parts)
        self._size += size
        self._eliciting = True
        self._only_acks = False

    def close_packet(self) -> None:
        if not self._parts:
            return
        self.packets.append(b"".join([self._header(), *self._parts]))
        self.eliciting_sent |= self._eliciting
        self._parts = []
        self._size = HEADER_SIZE
        self._eliciting = False
        self.pn += 1

    def finish(self) -> list[bytes]:
        self.close_packet()
        return self.packets
