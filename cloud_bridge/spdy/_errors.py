"""Exceptions for OUR misuse of the core. Peer faults never raise: they
become StreamReset / ConnectionFailed events."""

from __future__ import annotations


class SpdyError(Exception):
    """Base class of every error this package raises."""


class LocalProtocolError(SpdyError):
    """The caller asked for something SPDY forbids in the current state."""


class StreamClosedError(LocalProtocolError):
    """The stream exists no more or no longer accepts what was asked (it may
    have been reset by the peer a moment ago: adapters should expect this)."""
