"""Services on the pod network: kube-proxy (userspace mode) and cluster DNS data (test-only).

Reads the Services and Endpoints the real API server holds (the Endpoints written by the real
endpoints controller of kube-controller-manager from the pods' readiness), and for each
ClusterIP Service port listens on ``<clusterIP>:<port>`` (:class:`tests.cluster.proxy.Relay`),
relaying each new connection to a ready endpoint. The same snapshot answers the cluster DNS
(:mod:`tests.cluster.dns`). A Service annotated ``harness/gateway`` is served by a gateway of
the harness itself (Knative's local gateway), not by the relay.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass, field

from tests.cluster.network import PodNetwork
from tests.cluster.proxy import Relay, Target

logger = logging.getLogger(__name__)
DOMAIN = "cluster.local"
GATEWAY_ANNOTATION = "harness/gateway"


@dataclass
class _Snapshot:
    services: dict[tuple[str, str], object] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], object] = field(default_factory=dict)


class ServiceNetwork:
    """Relays for Service ports and the data behind cluster DNS."""

    def __init__(self, core, network: PodNetwork) -> None:  # noqa: ANN001 (CoreV1Api)
        self.core, self.network = core, network
        self.snap = _Snapshot()
        self.relays: dict[tuple[str, int], Relay] = {}
        self._rr = itertools.count()
        self._lock = threading.Lock()

    # ---- sync ------------------------------------------------------------------------------
    def sync(self) -> None:
        services = self.core.list_service_for_all_namespaces().items
        endpoints = self.core.list_endpoints_for_all_namespaces().items
        snap = _Snapshot(
            {(s.metadata.namespace, s.metadata.name): s for s in services},
            {(e.metadata.namespace, e.metadata.name): e for e in endpoints},
        )
        with self._lock:
            self.snap = snap
        wanted: dict[tuple[str, int], tuple[str, str, object]] = {}
        for (ns, name), svc in snap.services.items():
            ip = svc.spec.cluster_ip
            if (not ip or ip == "None" or svc.spec.type == "ExternalName"
                    or GATEWAY_ANNOTATION in (svc.metadata.annotations or {})):  # fmt: skip
                continue
            for port in svc.spec.ports or []:
                if (port.protocol or "TCP") == "TCP":
                    wanted[(ip, port.port)] = (ns, name, port)
        for key in set(self.relays) - set(wanted):
            self.relays.pop(key).stop()
        for key, (ns, name, port) in wanted.items():
            if key not in self.relays:
                self.network.add_address(key[0])
                self.relays[key] = Relay(*key, self._picker(ns, name, port.name))

    def _picker(self, ns: str, name: str, port_name: str | None):  # noqa: ANN202
        def pick() -> Target | None:
            targets = self.ready_targets(ns, name, port_name)
            return targets[next(self._rr) % len(targets)] if targets else None

        return pick

    def ready_targets(self, ns: str, name: str, port_name: str | None) -> list[Target]:
        """The ready endpoints of a Service port, as the proxy sees them now (fresh read)."""
        try:
            ep = self.core.read_namespaced_endpoints(name, ns)
        except Exception:  # noqa: BLE001 - no Endpoints object: no endpoint
            return []
        out = []
        for subset in ep.subsets or []:
            ports = [p.port for p in subset.ports or [] if (p.name or None) == (port_name or None)]
            for addr in subset.addresses or []:
                out += [(addr.ip, p) for p in ports]
        return out

    def stop(self) -> None:
        for relay in self.relays.values():
            relay.stop()
        self.relays.clear()

    # ---- DNS -------------------------------------------------------------------------------
    def lookup(self, name: str) -> tuple[list[str], str | None] | None:
        suffix = f".svc.{DOMAIN}"
        if not name.endswith(suffix):
            return None
        parts = name[: -len(suffix)].split(".")
        with self._lock:
            snap = self.snap
        if len(parts) == 2:
            svc = snap.services.get((parts[1], parts[0]))
            if svc is None:
                return None
            if svc.spec.type == "ExternalName":
                target = svc.spec.external_name
                return (self.lookup(target) or ([], None))[0], target
            if svc.spec.cluster_ip and svc.spec.cluster_ip != "None":
                return [svc.spec.cluster_ip], None
            return self._endpoint_ips(snap, parts[1], parts[0], svc, None), None
        if len(parts) == 3:  # <hostname>.<headless service>.<ns>
            svc = snap.services.get((parts[2], parts[1]))
            if svc is None:
                return None
            ips = self._endpoint_ips(snap, parts[2], parts[1], svc, parts[0])
            return (ips, None) if ips else None
        return None

    @staticmethod
    def _endpoint_ips(snap: _Snapshot, ns: str, name: str, svc, hostname: str | None) -> list[str]:  # noqa: ANN001
        ep = snap.endpoints.get((ns, name))
        ips = []
        for subset in (ep.subsets if ep else None) or []:
            addrs = list(subset.addresses or [])
            if svc.spec.publish_not_ready_addresses:
                addrs += list(subset.not_ready_addresses or [])
            ips += [a.ip for a in addrs if hostname is None or a.hostname == hostname]
        return ips
