"""A TCP client run on the device side (``ip netns exec``): resolves names through the system
resolver (so the device's /etc/hosts), connects, and prints one JSON line about what happened.

    client.py echo HOST PORT SIZE      send SIZE random bytes, half-close, expect them back
    client.py greet HOST PORT          read until EOF
    client.py connect HOST PORT        send one byte, say how the connection ended
    client.py hold HOST PORT SECONDS   one echo round trip, print {"ready": true}, then wait for the end
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time


def outcome(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return "eof"
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "timeout"


def connect(host: str, port: int) -> tuple[socket.socket | None, dict[str, object]]:
    started = time.monotonic()
    try:
        address = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as exc:
        return None, {"result": "unresolved", "error": str(exc)}
    try:
        sock = socket.create_connection((address, port), timeout=10)
    except ConnectionRefusedError:
        return None, {"result": "refused", "address": address}
    except ConnectionResetError:
        # Accepted and reset before this process ran again (the proxy refuses without waiting for data).
        return None, {"result": "reset", "address": address, "seconds": round(time.monotonic() - started, 3)}
    except OSError as exc:
        return None, {"result": "unreachable", "address": address, "error": str(exc)}
    return sock, {"address": address}


def main(argv: list[str]) -> dict[str, object]:
    mode, host, port = argv[0], argv[1], int(argv[2])
    started = time.monotonic()
    sock, info = connect(host, port)
    if sock is None:
        return info
    if mode == "echo":
        payload = os.urandom(int(argv[3]))

        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        digest = hashlib.sha256()
        received = 0
        sock.settimeout(30)
        try:
            while data := sock.recv(262144):
                digest.update(data)
                received += len(data)
        except OSError as exc:
            info["error"] = repr(exc)
        sender.join(30)
        info.update(
            result="ok" if digest.digest() == hashlib.sha256(payload).digest() else "mismatch", received=received
        )
    elif mode == "greet":
        sock.settimeout(30)
        parts = []
        while data := sock.recv(65536):
            parts.append(data)
        info.update(result="ok", data=b"".join(parts).decode(errors="replace"))
    elif mode == "connect":
        try:
            sock.sendall(b"x")
        except OSError as exc:
            info.update(result="send-failed", error=repr(exc))
        else:
            info["result"] = outcome(sock, 20)
    elif mode == "hold":
        sock.settimeout(10)
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        print(json.dumps({"ready": True}), flush=True)
        started = time.monotonic()
        info["result"] = outcome(sock, float(argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    info["seconds"] = round(time.monotonic() - started, 3)
    sock.close()
    return info


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
