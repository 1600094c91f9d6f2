"""The kubelet's log endpoint, so that ``kubectl logs`` (and the launcher's log stream) go
through the real kube-apiserver to the harness's pods (test-only code).

The API server serves ``pods/log`` by proxying to the pod's node at
``https://<node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/
<namespace>/<pod>/<container>`` (kubernetes v1.20, ``pkg/registry/core/pod/strategy.go``,
``LogLocation``); without ``--kubelet-certificate-authority`` it does not verify the kubelet's
certificate. ``follow=true`` keeps the response open until the container ends.
"""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NODE = "harness-node"


def self_signed(workdir: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = workdir / "kubelet.crt", workdir / "kubelet.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


class LogServer:
    """``/containerLogs/{ns}/{pod}/{container}[?follow=true]`` from the harness's log files.

    ``lookup(ns, pod)`` returns ``(log path, running)`` or None for an unknown pod.
    """

    def __init__(self, workdir: Path, lookup: Callable[[str, str], tuple[Path, Callable] | None]):
        self.lookup = lookup
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                query = urllib.parse.parse_qs(url.query)
                found = (
                    server.lookup(parts[1], parts[2])
                    if len(parts) == 4 and parts[0] == "containerLogs" else None
                )  # fmt: skip
                if found is None:
                    self.send_error(404, f"no such container: {url.path}")
                    return
                path, running = found
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                follow = query.get("follow", ["false"])[0] == "true"
                offset = 0
                while True:
                    data = path.read_bytes()[offset:] if path.exists() else b""
                    if data:
                        self.wfile.write(data)
                        self.wfile.flush()
                        offset += len(data)
                    if not follow or (not running() and not data):
                        return
                    time.sleep(0.2)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cert, key = self_signed(workdir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def register_node(core, port: int) -> None:
    """The Node object the pods are bound to, with the log server as its kubelet endpoint."""
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    core.patch_node_status(NODE, {"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "the test harness runs this node's pods as processes"}],
    }})  # fmt: skip
