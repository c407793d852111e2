"""How edgeprune talks to boards: one interface, one class per way of reaching a board.

``TRANSPORTS`` maps the profile's ``reach.transport`` name to its class; the
classes are imported only when used (paramiko only for SSH).

Example::

    from edgeprune.boards.reach import resolve_target
    from edgeprune.transport import open_transport

    with open_transport(resolve_target("lab-pi")) as board:
        board.ensure_workdir()
        board.upload("model.onnx", "model.onnx")
        print(board.run(["uname", "-m"], timeout=10).stdout)
"""

from __future__ import annotations

import importlib

from edgeprune.errors import TransportError
from edgeprune.transport.base import CONNECT_TIMEOUT_S, MAX_OUTPUT, RunResult, Transport

# name -> "module:Class"
TRANSPORTS: dict[str, str] = {
    "local": "edgeprune.transport.local:LocalTransport",
    "ssh": "edgeprune.transport.ssh:SSHTransport",
    "adb": "edgeprune.transport.adb:AdbTransport",
}


def transport_class(kind: str) -> type[Transport]:
    try:
        module, cls = TRANSPORTS[kind].split(":")
    except KeyError:
        raise TransportError(
            f"unknown transport '{kind}' (known: {', '.join(TRANSPORTS)})"
        ) from None
    return getattr(importlib.import_module(module), cls)


def open_transport(
    reach, *, accept_new_host_key: bool = False, connect_timeout: float | None = None
) -> Transport:
    """A transport for ``reach`` (not yet connected: use it as a context manager).

    ``connect_timeout``: seconds to reach the board (default :data:`CONNECT_TIMEOUT_S`).
    """
    return transport_class(reach.transport)(
        reach, accept_new_host_key=accept_new_host_key, connect_timeout=connect_timeout
    )


__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_OUTPUT",
    "TRANSPORTS",
    "RunResult",
    "Transport",
    "open_transport",
    "transport_class",
]
