"""TCP relays on Service addresses (test-only code).

:class:`Relay` is what kube-proxy's userspace mode did (kubernetes v1.20
``pkg/proxy/userspace/proxysocket.go``: a socket on the Service's cluster IP and port per
Service port; each new connection goes to the next ready endpoint, round robin, chosen when the
connection opens; no endpoint: the connection is refused). :class:`HostRouter` is a cluster-local
ingress gateway (Knative's ``knative-local-gateway``): it reads the request's ``Host`` header and
relays the connection to the backend the route table picks for that host (traffic split by
weight per connection), or answers 404 for a host it has no route for, as Istio does.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

Target = tuple[str, int]


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _splice(client: socket.socket, target: Target, first: bytes = b"") -> bool:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        return False
    upstream.settimeout(None)
    if first:
        upstream.sendall(first)
    for a, b in ((client, upstream), (upstream, client)):
        threading.Thread(target=_pipe, args=(a, b), daemon=True).start()
    return True


class _Listener:
    """Accepts on ``ip:port`` and hands each connection to ``handle`` on its own thread."""

    def __init__(self, ip: str, port: int, handle: Callable[[socket.socket], None]) -> None:
        self.handle = handle
        self.server = socket.create_server((ip, port))
        self.server.settimeout(0.5)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            threading.Thread(target=self.handle, args=(client,), daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        self.server.close()


class Relay(_Listener):
    """Connections to ``ip:port`` relayed to a target ``pick()`` returns (None: refused)."""

    def __init__(self, ip: str, port: int, pick: Callable[[], Target | None]) -> None:
        self.pick = pick
        super().__init__(ip, port, self._relay)

    def _relay(self, client: socket.socket) -> None:
        target = self.pick()
        if target is None or not _splice(client, target):
            client.close()


class HostRouter(_Listener):
    """An HTTP gateway: ``route(host)`` gives the backend for a request's Host header."""

    def __init__(self, ip: str, port: int, route: Callable[[str], Target | None]) -> None:
        self.route = route
        super().__init__(ip, port, self._route_request)

    def _route_request(self, client: socket.socket) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(65536)
                if not chunk:
                    client.close()
                    return
                head += chunk
        except OSError:
            client.close()
            return
        host = ""
        for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == "host":
                host = value.strip().split(":")[0].lower()
        target = self.route(host)
        if target is None or not _splice(client, target, head):
            body = f"no route for host {host!r}\n".encode()
            try:
                client.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip
            finally:
                client.close()
