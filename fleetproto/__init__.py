"""fleetproto: the device <-> cloud application protocol, over seqstream streams.

Sans-io and pure: no sockets, no asyncio, no clock. Both the edge agent and
the cloud bridge import it; neither imports the other. PROTOCOL.md is the
specification; this package is its one implementation.

* ``kinds``    - stream kinds and their validated OPEN metadata
* ``framing``  - length-prefixed msgpack messages (control, stats streams)
* ``channels`` - channel frames for exec / attach / hostexec
* ``control``  - control messages and the registry (``encode``/``decode``)
* ``pods``, ``status``, ``node``, ``stats``, ``services`` - the records inside them
* ``codes``    - application RESET codes (HTTP statuses in hex)
"""

from .channels import (
    Channel,
    ChannelDecoder,
    ChannelFrame,
    ExitStatus,
    TerminalSize,
    encode_chunks,
    encode_frame,
    error_frame,
    exit_frame,
    resize_frame,
)
from .codes import AppError, from_http_status, http_status
from .control import (
    CloudMessage,
    ControlMessage,
    DeviceMessage,
    Error,
    PodDelete,
    PodDeleted,
    PodUpsert,
    Sync,
    decode,
    encode,
)
from .errors import (
    FleetProtoError,
    FramingError,
    MessageError,
    MessageTooLarge,
    SchemaError,
    UnknownMessageType,
)
from .framing import DEFAULT_MAX_MESSAGE, MessageDecoder, encode_message
from .kinds import (
    AttachOpen,
    ControlOpen,
    ExecOpen,
    HostExecOpen,
    LogsOpen,
    OpenRequest,
    PodRef,
    PortForwardOpen,
    ServiceOpen,
    StatsOpen,
    StreamKind,
    parse_open,
)
from .node import FEATURE_HOST_EXEC, FEATURE_HOST_PORT_FORWARD, NodeAddress, NodeHello, NodeInfo, RuntimeInfo
from .pods import (
    Container,
    ContainerPort,
    DesiredPod,
    EnvVar,
    PodFile,
    Protocol,
    PullPolicy,
    Resources,
    RestartPolicy,
    Seccomp,
    VolumeMount,
    pod_identity,
)
from .services import ServiceEntry, ServicePort, ServiceTable
from .stats import ContainerUsage, InterfaceUsage, NodeUsage, PodUsage, StatsSummary
from .status import (
    Condition,
    ConditionStatus,
    ContainerState,
    ContainerStatus,
    NodeResources,
    NodeStatus,
    PodPhase,
    PodStatusReport,
    StateKind,
)
from .version import PROTOCOL_VERSION


def frame(message: object) -> bytes:
    """A control/stats message as bytes on the wire: ``encode_message(encode(message))``."""
    return encode_message(encode(message))  # type: ignore[arg-type]


__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "FEATURE_HOST_EXEC",
    "FEATURE_HOST_PORT_FORWARD",
    "PROTOCOL_VERSION",
    "AppError",
    "AttachOpen",
    "Channel",
    "ChannelDecoder",
    "ChannelFrame",
    "CloudMessage",
    "Condition",
    "ConditionStatus",
    "Container",
    "ContainerPort",
    "ContainerState",
    "ContainerStatus",
    "ContainerUsage",
    "ControlMessage",
    "ControlOpen",
    "DesiredPod",
    "DeviceMessage",
    "EnvVar",
    "Error",
    "ExecOpen",
    "ExitStatus",
    "FleetProtoError",
    "FramingError",
    "HostExecOpen",
    "InterfaceUsage",
    "LogsOpen",
    "MessageDecoder",
    "MessageError",
    "MessageTooLarge",
    "NodeAddress",
    "NodeHello",
    "NodeInfo",
    "NodeResources",
    "NodeStatus",
    "NodeUsage",
    "OpenRequest",
    "PodDelete",
    "PodDeleted",
    "PodFile",
    "PodPhase",
    "PodRef",
    "PodStatusReport",
    "PodUpsert",
    "PodUsage",
    "PortForwardOpen",
    "Protocol",
    "PullPolicy",
    "Resources",
    "RestartPolicy",
    "RuntimeInfo",
    "SchemaError",
    "Seccomp",
    "ServiceEntry",
    "ServiceOpen",
    "ServicePort",
    "ServiceTable",
    "StateKind",
    "StatsOpen",
    "StatsSummary",
    "StreamKind",
    "Sync",
    "TerminalSize",
    "UnknownMessageType",
    "VolumeMount",
    "decode",
    "encode",
    "encode_chunks",
    "encode_frame",
    "encode_message",
    "error_frame",
    "exit_frame",
    "frame",
    "from_http_status",
    "http_status",
    "parse_open",
    "pod_identity",
    "resize_frame",
]
