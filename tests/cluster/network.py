"""The pod network: one network namespace and address per pod, made with iproute2 (test-only).

What a CNI bridge plugin (containernetworking/plugins ``plugins/main/bridge``) does on a node: a
Linux bridge with the gateway address, and per pod a network namespace joined to it by a veth
pair, the pod's address on its ``eth0`` and a default route through the gateway. Each test
session takes a free ``10.B.0.0/16``: Service cluster IPs in ``10.B.0.0/24`` (the API server's
``--service-cluster-ip-range``), the gateway ``10.B.1.1``, pods from ``10.B.1.2``. The host keeps
no route anywhere else for these addresses, and IP forwarding stays off: traffic goes only
between the pods, the host's proxies on the bridge, and nothing outside.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import subprocess
import threading
from pathlib import Path

NETNS_DIR = Path("/run/netns")


class NetworkError(Exception):
    """The pod network could not be made (no iproute2, no privilege)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise NetworkError("iproute2 (`ip`) is not installed") from e
    if check and proc.returncode:
        raise NetworkError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _used_blocks() -> set[int]:
    used = set()
    for link in json.loads(_ip("-j", "addr").stdout or "[]"):
        for addr in link.get("addr_info", []):
            parts = addr.get("local", "").split(".")
            if len(parts) == 4 and parts[0] == "10":
                used.add(int(parts[1]))
        if link.get("ifname", "").startswith("rcbr"):
            used.add(int(link["ifname"][4:] or 0))
    return used


class PodNetwork:
    """A bridge for one test session and the namespaces of its pods."""

    def __init__(self) -> None:
        self.block = 0
        self.bridge = ""
        self._hosts = itertools.count(2)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.namespaces: dict[str, tuple[str, str]] = {}  # key -> (netns name, ip)

    # ---- the session's bridge ---------------------------------------------------------------
    def up(self) -> PodNetwork:
        for block in range(100, 250):
            if block in _used_blocks():
                continue
            # creating the link is the reservation: a concurrent session gets "File exists"
            if _ip("link", "add", f"rcbr{block}", "type", "bridge", check=False).returncode:
                continue
            self.block, self.bridge = block, f"rcbr{block}"
            # namespaces a killed session left behind: their bridge is gone, so are they
            for stale in NETNS_DIR.glob(f"rc{block}-*") if NETNS_DIR.exists() else []:
                _ip("netns", "del", stale.name, check=False)
            for link in json.loads(_ip("-j", "link").stdout or "[]"):
                if link.get("ifname", "").startswith(f"rcv{block}x"):
                    _ip("link", "del", link["ifname"], check=False)
            _ip("addr", "add", f"{self.gateway}/16", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            return self
        raise NetworkError("no free 10.B.0.0/16 block for the pod network")

    def down(self) -> None:
        for key in list(self.namespaces):
            self.detach(key)
        if self.bridge:
            _ip("link", "del", self.bridge, check=False)

    @property
    def gateway(self) -> str:
        return f"10.{self.block}.1.1"

    @property
    def service_cidr(self) -> str:
        return f"10.{self.block}.0.0/24"

    # ---- pods -------------------------------------------------------------------------------
    def attach(self, key: str) -> tuple[str, str]:
        """A new namespace for pod ``key``: (path of the netns, the pod's address)."""
        with self._lock:
            n, host = next(self._ids), next(self._hosts)
        ip = str(ipaddress.ip_address(f"10.{self.block}.1.0") + host)
        netns, veth = f"rc{self.block}-{n}", f"rcv{self.block}x{n}"
        self.namespaces[key] = (netns, ip)
        try:
            _ip("netns", "add", netns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", netns, "addr", "add", f"{ip}/16", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        except NetworkError:
            self.detach(key)
            raise
        return str(NETNS_DIR / netns), ip

    def detach(self, key: str) -> None:
        found = self.namespaces.pop(key, None)
        if found:
            _ip("netns", "del", found[0], check=False)  # its veth pair goes with it

    # ---- Service addresses (the kube-proxy stand-in listens on them) -------------------------
    def add_address(self, ip: str) -> None:
        proc = _ip("addr", "add", f"{ip}/32", "dev", self.bridge, check=False)
        if proc.returncode and "File exists" not in proc.stderr:
            raise NetworkError(f"ip addr add {ip}: {proc.stderr.strip()}")

    def remove_address(self, ip: str) -> None:
        _ip("addr", "del", f"{ip}/32", "dev", self.bridge, check=False)
