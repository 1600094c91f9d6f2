"""Cluster DNS: the names CoreDNS's ``kubernetes`` plugin answers, and nothing else (test-only).

Records, as the Kubernetes DNS specification (kubernetes/dns ``docs/specification.md``) gives
them, from the Services and Endpoints the real API server holds:

- ``<svc>.<ns>.svc.cluster.local`` A: the cluster IP; for a headless Service, the addresses of
  its endpoints (not-ready ones too with ``publishNotReadyAddresses``);
- ``<hostname>.<svc>.<ns>.svc.cluster.local`` A: the endpoint whose ``hostname`` it is (a pod
  with ``hostname`` and ``subdomain`` behind a headless Service);
- ``<svc>.<ns>.svc.cluster.local`` CNAME ``externalName`` for an ExternalName Service.

Every other name is NXDOMAIN: an external host (``*.example.com``) does not resolve inside the
cluster, as on a cluster without an upstream for it. Wire format: RFC 1035 (queries over UDP).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

A, CNAME, PTR, AAAA = 1, 5, 12, 28
Lookup = Callable[[str], tuple[list[str], str | None] | None]


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def parse_query(data: bytes) -> tuple[int, int, str, int, bytes]:
    """(id, flags, name, qtype, raw question) of a DNS query."""
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount != 1:
        raise ValueError("one question per query")
    labels, i = [], 12
    while data[i]:
        n = data[i]
        labels.append(data[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype = struct.unpack("!H", data[i + 1 : i + 3])[0]
    return qid, flags, ".".join(labels).lower(), qtype, data[12 : i + 5]


def answer(query: bytes, lookup: Lookup, ttl: int = 5) -> bytes:
    qid, flags, name, qtype, question = parse_query(query)
    found = lookup(name)
    records: list[bytes] = []
    rcode = 3  # NXDOMAIN
    if found is not None:
        rcode = 0
        ips, cname = found
        owner = encode_name(name)
        if cname:
            target = encode_name(cname)
            records.append(owner + struct.pack("!HHIH", CNAME, 1, ttl, len(target)) + target)
            owner = target
        if qtype == A or (cname and qtype != AAAA):
            for ip in ips:
                records.append(owner + struct.pack("!HHIH", A, 1, ttl, 4) + socket.inet_aton(ip))
    header = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, len(records), 0, 0)
    return header + question + b"".join(records)


class ClusterDNS:
    """A UDP DNS server on ``ip:53`` answering from ``lookup(name)``.

    ``lookup`` returns ``(addresses, cname)`` for a cluster name, None for any other name.
    """

    def __init__(self, ip: str, lookup: Lookup, port: int = 53) -> None:
        self.lookup = lookup
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.settimeout(0.5)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> ClusterDNS:
        self.thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(answer(data, self.lookup), peer)
            except (ValueError, IndexError, struct.error, OSError):
                continue  # a malformed query gets no answer, as from a real server

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        self.thread.join(timeout=2)
