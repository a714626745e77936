"""Topic layout: one topic per device and direction, so a broker ACL keyed
on the username (= device name) confines each device to its own topics.

    {prefix}/dev/{device}/up         device -> cloud packets
    {prefix}/dev/{device}/down       cloud -> device packets
    {prefix}/dev/{device}/status     retained presence, will on death
    {prefix}/cloud/{replica}/status  retained bridge presence, will on death
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "edgefleet/v1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_name(name: str, what: str = "device name") -> str:
    """Names become topic levels and Kubernetes node names: keep them plain."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid {what} {name!r}: use 1-128 characters of letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class TopicLayout:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.endswith("/"):
            raise ValueError(f"invalid topic prefix {self.prefix!r}")

    def up(self, device: str) -> str:
        return f"{self.prefix}/dev/{device}/up"

    def down(self, device: str) -> str:
        return f"{self.prefix}/dev/{device}/down"

    def device_status(self, device: str) -> str:
        return f"{self.prefix}/dev/{device}/status"

    def cloud_status(self, replica: str) -> str:
        return f"{self.prefix}/cloud/{replica}/status"

    @property
    def all_up(self) -> str:
        return f"{self.prefix}/dev/+/up"

    @property
    def all_device_status(self) -> str:
        return f"{self.prefix}/dev/+/status"

    @property
    def all_cloud_status(self) -> str:
        return f"{self.prefix}/cloud/+/status"

    def parse(self, topic: str) -> tuple[str, str, str] | None:
        """Split a topic into (scope, name, kind), e.g. ("dev", "pi-1", "up")."""
        if not topic.startswith(self.prefix + "/"):
            return None
        parts = topic[len(self.prefix) + 1 :].split("/")
        if len(parts) != 3 or parts[0] not in ("dev", "cloud"):
            return None
        return parts[0], parts[1], parts[2]
