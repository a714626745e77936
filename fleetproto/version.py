"""The fleet protocol version (PROTOCOL.md); carried in NodeHello and stream metadata."""

PROTOCOL_VERSION = 1
"""Bumped only for incompatible changes; new optional fields and message types do not bump it."""
