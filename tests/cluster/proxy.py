"""A Service's port: connections to ``ip:port`` relayed to ``ip:target_port`` (test-only code).

What kube-proxy (or Knative's activator and queue-proxy) does for a Service whose ``port`` 80
fronts a container's ``targetPort`` 8080, so that in-cluster URLs without a port work.
"""

from __future__ import annotations

import socket
import threading


class PortForward:
    def __init__(self, ip: str, port: int, target_port: int, target_ip: str | None = None):
        self.target = (target_ip or ip, target_port)
        self.server = socket.create_server((ip, port), reuse_port=False)
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
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
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

    def stop(self) -> None:
        self.stopped.set()
        self.server.close()
