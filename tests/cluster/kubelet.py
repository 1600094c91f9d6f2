"""The node: the kubelet's part, played for the pods the real scheduler binds here (test-only).

Follows the kubelet of kubernetes v1.20 (``pkg/kubelet``) in what the tests can observe:

- **the Node** registers with capacity and a Ready condition, and keeps its Lease in
  ``kube-node-lease`` renewed (``pkg/kubelet/nodelease``), so the real node-lifecycle controller
  keeps it Ready;
- **pods bound to it** (``spec.nodeName``, written by the real kube-scheduler) start: network
  namespace and address, init containers in order, then the container
  (:mod:`tests.cluster.pods`); the whole status is written as the kubelet writes it (phase,
  podIP, conditions, container statuses with restart counts and last states);
- **restartPolicy**: Always / OnFailure restart the container in place after a crash-loop
  back-off (10 s doubling to 300 s; the first restart at once), Never ends the pod;
- **readiness**: a ``readinessProbe`` (httpGet or tcpSocket) decides the Ready condition, which
  the real endpoints controller turns into Endpoints; without one, a running container is ready;
- **deletion** (``deletionTimestamp`` set by a graceful delete): not ready at once, the
  ``preStop`` exec hook, SIGTERM, SIGKILL at the end of ``terminationGracePeriodSeconds``
  (default 30), then the final delete with grace 0 (``pkg/kubelet/kuberuntime/
  kuberuntime_container.go`` ``killContainer``);
- **logs**: the API server serves ``pods/log`` by proxying to this node's endpoint below.

The log endpoint: the API server serves ``pods/log`` by proxying to the pod's node at

``https://<node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/
<namespace>/<pod>/<container>`` (kubernetes v1.20, ``pkg/registry/core/pod/strategy.go``,
``LogLocation``); without ``--kubelet-certificate-authority`` it does not verify the kubelet's
certificate. ``follow=true`` keeps the response open until the container ends.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import signal
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.cluster.network import PodNetwork
from tests.cluster.pods import PodConfigError, PodEnv, PodRun

logger = logging.getLogger(__name__)

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

    ``lookup(ns, pod, container)`` returns ``(log path, running)`` or None for an unknown pod.
    """

    def __init__(self, workdir: Path,
                 lookup: Callable[[str, str, str], tuple[Path, Callable] | None]):  # fmt: skip
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
                    server.lookup(parts[1], parts[2], parts[3])
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


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Kubelet:
    """The harness node's kubelet: runs every pod bound to :data:`NODE`."""

    def __init__(self, api_client, workdir: Path, network: PodNetwork, dns_ip: str,  # noqa: ANN001
                 extra_env: dict[str, str] | None = None, image_check: str = "") -> None:  # fmt: skip
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.coord = client.CoordinationV1Api(api_client)
        self.workdir, self.network, self.dns_ip = workdir, network, dns_ip
        self.extra_env, self.image_check = extra_env or {}, image_check
        self.pods: dict[str, PodRun] = {}  # uid -> run
        self.state: dict[str, dict] = {}  # uid -> kubelet bookkeeping
        self.logs = LogServer(workdir, self._log_lookup)
        self._stop = threading.Event()
        # bwrap's --die-with-parent follows the *thread* that started it (PR_SET_PDEATHSIG):
        # containers are started from this long-lived thread, never from a short-lived one
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubelet-spawn")
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _start(self, run: PodRun) -> None:
        self._spawner.submit(run.start).result()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> Kubelet:
        self.logs.start()
        self._register()
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        for uid, run in list(self.pods.items()):
            run.cleanup()
            self.network.detach(uid)
        self._spawner.shutdown()
        self.logs.stop()

    def by_name(self, name: str, namespace: str | None = None) -> PodRun | None:
        for run in list(self.pods.values()):
            if run.name == name and (namespace is None or run.namespace == namespace):
                return run
        return None

    def kill(self, name: str) -> None:
        """What a node failure or the OOM killer does to a pod's container: SIGKILL."""
        run = self.by_name(name)
        if run is not None:
            run.kill()

    def _log_lookup(self, ns: str, name: str, container: str):  # noqa: ANN202
        run = self.by_name(name, ns)
        if run is None:
            return None
        path = run.workdir / f"{container}.log"
        return path, run.running

    def _register(self) -> None:
        """The Node object, its kubelet endpoint and its Lease (as the kubelet registers)."""
        self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux",
                                     "kubernetes.io/arch": "amd64"}}})  # fmt: skip
        # a large node: the scheduler's fit decides on requests (GPUs are set by the tests)
        capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        self.core.patch_node_status(NODE, {"status": {
            "capacity": capacity, "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.logs.port}},
            "conditions": self._node_conditions(),
        }})  # fmt: skip
        self._heartbeat()

    @staticmethod
    def _node_conditions() -> list[dict]:
        now = _now()
        return [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "the test harness runs this node's pods as processes",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}]  # fmt: skip

    def _heartbeat(self) -> None:
        body = {"metadata": {"name": NODE, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40,
                         "renewTime": _micro_now()}}  # fmt: skip
        try:
            self.coord.replace_namespaced_lease(NODE, "kube-node-lease", {
                **body, "metadata": {**body["metadata"], "resourceVersion":
                self.coord.read_namespaced_lease(NODE, "kube-node-lease").metadata.resource_version}})  # fmt: skip
        except Exception as e:  # noqa: BLE001 - first beat: create it
            if getattr(e, "status", None) != 404:
                raise
            self.coord.create_namespaced_lease("kube-node-lease", body)
        self.core.patch_node_status(NODE, {"status": {"conditions": self._node_conditions()}})

    # ---- the sync loop ---------------------------------------------------------------------
    def _loop(self) -> None:
        beat = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - beat > 10:
                    self._heartbeat()
                    beat = time.monotonic()
                self._sync()
            except Exception:  # noqa: BLE001 - a test harness: log and go on
                logger.exception("harness kubelet error")
            time.sleep(0.2)

    def _sync(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}").items
        seen = set()
        for pod in pods:
            uid = pod.metadata.uid
            seen.add(uid)
            state = self.state.get(uid)
            if state is None:
                obj = self.core.api_client.sanitize_for_serialization(pod)
                self.state[uid] = {"phase": "Pending", "ready": False, "busy": True}
                threading.Thread(target=self._admit, args=(obj,), daemon=True).start()
                continue
            if state["busy"]:
                continue
            run = self.pods.get(uid)
            if pod.metadata.deletion_timestamp is not None:
                state["busy"] = True
                grace = pod.metadata.deletion_grace_period_seconds
                threading.Thread(target=self._terminate, args=(uid, pod, grace),
                                 daemon=True).start()  # fmt: skip
            elif run is not None and state["phase"] == "Running":
                self._check(uid, run, state)
        for uid in set(self.state) - seen:  # deleted (force, or grace 0): stop what is left
            run = self.pods.pop(uid, None)
            if run is not None and not self.state[uid]["busy"]:
                run.cleanup()
                self.network.detach(uid)
            if not self.state[uid]["busy"]:
                del self.state[uid]

    def _pod_env(self, pod: dict) -> PodEnv:
        ns = pod["metadata"]["namespace"]
        sa_name = pod["spec"].get("serviceAccountName") or "default"
        configmaps = {cm.metadata.name: dict(cm.data or {})
                      for cm in self.core.list_namespaced_config_map(ns).items}  # fmt: skip
        import base64

        secrets, sa_token = {}, None
        for secret in self.core.list_namespaced_secret(ns).items:
            data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
            secrets[secret.metadata.name] = data
            notes = secret.metadata.annotations or {}
            if (secret.type == "kubernetes.io/service-account-token"
                    and notes.get("kubernetes.io/service-account.name") == sa_name):  # fmt: skip
                sa_token = {"token": data.get("token", b""), "ca.crt": data.get("ca.crt", b""),
                            "namespace": ns.encode()}  # fmt: skip
        try:
            sa = self.core.read_namespaced_service_account(sa_name, ns)
            sa_obj = {"metadata": {"annotations": dict(sa.metadata.annotations or {})},
                      "automountServiceAccountToken": sa.automount_service_account_token}  # fmt: skip
        except Exception:  # noqa: BLE001 - no such account: no IRSA, no token
            sa_obj = {}
        api = self.core.read_namespaced_service("kubernetes", "default")
        return PodEnv(configmaps, secrets, sa_obj, sa_token,
                      (api.spec.cluster_ip, api.spec.ports[0].port), self.dns_ip,
                      self.extra_env, self.image_check)  # fmt: skip

    def _admit(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        state = self.state[uid]
        name = pod["metadata"]["name"]
        workdir = self.workdir / f"{pod['metadata']['namespace']}-{name}"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            netns, ip = self.network.attach(uid)
            run = PodRun(pod, ip, netns, workdir, self._pod_env(pod))
            self.pods[uid] = run
            run.environment()  # config errors before anything runs
            if pod["spec"].get("initContainers"):
                self._status(run, "Pending", init="running")
                failed = run.run_init_containers()
                if failed:
                    self._status(run, "Pending" if pod["spec"].get("restartPolicy", "Always")
                                 != "Never" else "Failed", init=failed)  # fmt: skip
                    state.update(phase="InitFailed", busy=False)
                    return
            self._start(run)
            state.update(phase="Running", started=time.monotonic(), busy=False)
            self._status(run, "Running", running=True)
        except PodConfigError as e:
            run = self.pods.get(uid) or PodRun(pod, "", "", workdir, PodEnv())
            self._status(run, "Pending", waiting=("CreateContainerConfigError", str(e)))
            state.update(phase="ConfigError", busy=False)
        except Exception:  # noqa: BLE001 - keep the kubelet alive
            logger.exception("pod %s could not start", name)
            state.update(phase="Error", busy=False)

    def _probe(self, run: PodRun) -> bool:
        probe = run.container.get("readinessProbe")
        if not probe:
            return True
        ports = {p.get("name"): p["containerPort"] for p in run.container.get("ports", [])}
        spec = probe.get("httpGet") or probe.get("tcpSocket") or {}
        port = spec.get("port")
        port = ports.get(port, port) if isinstance(port, str) else port
        if "tcpSocket" in probe:
            try:
                with socket.create_connection((run.ip, int(port)), timeout=1):
                    return True
            except OSError:
                return False
        import urllib.request

        try:
            url = f"http://{run.ip}:{port}{spec.get('path', '/')}"
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 (the pod)
                return 200 <= r.status < 400
        except OSError:
            return False

    def _check(self, uid: str, run: PodRun, state: dict) -> None:
        code = run.proc.poll() if run.proc else None
        if code is None:
            now = time.monotonic()
            if now - state.get("probed", 0) >= 0.5:
                state["probed"] = now
                ready = self._probe(run)
                if ready != state["ready"]:
                    state["ready"] = ready
                    self._status(run, "Running", running=True)
            return
        policy = run.pod["spec"].get("restartPolicy", "Always")
        reason = "Completed" if code == 0 else ("OOMKilled" if code == 137 else "Error")
        state["ready"] = False
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            if "backoff_until" not in state:
                delay = 0 if run.restarts == 0 else min(300, 10 * 2 ** (run.restarts - 1))
                state["backoff_until"] = time.monotonic() + delay
                run.last_state = {"terminated": {"exitCode": code, "reason": reason,
                                                 "finishedAt": _now()}}  # fmt: skip
                self._status(run, "Running", waiting=("CrashLoopBackOff", f"exit code {code}"))
            if time.monotonic() >= state["backoff_until"]:
                del state["backoff_until"]
                run.restarts += 1
                self._start(run)
                self._status(run, "Running", running=True)
            return
        state["phase"] = "Succeeded" if code == 0 else "Failed"
        self._status(run, state["phase"], terminated=(code, reason))

    def _terminate(self, uid: str, pod, grace: int | None) -> None:  # noqa: ANN001
        run = self.pods.get(uid)
        try:
            if run is not None and run.running():
                self.state[uid]["ready"] = False
                self._status(run, "Running", running=True)  # not ready: out of Endpoints
                spec = run.pod["spec"]
                grace = spec.get("terminationGracePeriodSeconds", 30) if grace is None else grace
                deadline = time.monotonic() + grace
                hook = ((run.container.get("lifecycle") or {}).get("preStop") or {}).get("exec")
                if hook and grace > 0:
                    run.exec_hook(hook["command"], timeout=max(1.0, deadline - time.monotonic()))
                run.signal(signal.SIGTERM)
                while run.running() and time.monotonic() < deadline:
                    time.sleep(0.1)
                run.kill()
            try:  # the kubelet's final delete: the object goes
                from kubernetes import client

                self.core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace,
                    body=client.V1DeleteOptions(grace_period_seconds=0,
                                                preconditions={"uid": uid}))  # fmt: skip
            except Exception:  # noqa: BLE001 - already gone
                pass
        finally:
            if run is not None:
                run.cleanup()
            self.pods.pop(uid, None)
            self.network.detach(uid)
            self.state.pop(uid, None)

    # ---- status ------------------------------------------------------------------------------
    def _status(self, run: PodRun, phase: str, running: bool = False,
                terminated: tuple | None = None, waiting: tuple | None = None,
                init: str | tuple | None = None) -> None:  # fmt: skip
        uid = run.pod["metadata"]["uid"]
        ready = bool(self.state.get(uid, {}).get("ready")) and running
        c = run.container
        state: dict = {}
        if running:
            state = {"running": {"startedAt": _now()}}
        elif terminated:
            state = {"terminated": {"exitCode": terminated[0], "reason": terminated[1],
                                    "finishedAt": _now()}}  # fmt: skip
        elif waiting:
            state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        else:
            state = {"waiting": {"reason": "PodInitializing"}}
        status = {"name": c["name"], "image": c["image"], "imageID": "", "ready": ready,
                  "restartCount": run.restarts, "state": state, "started": running}  # fmt: skip
        if run.last_state:
            status["lastState"] = run.last_state
        inits = []
        for ic in run.pod["spec"].get("initContainers") or []:
            done = init is None
            failed = isinstance(init, tuple) and init[0] == ic["name"]
            ist = ({"terminated": {"exitCode": init[1], "reason": "Error"}} if failed else
                   {"terminated": {"exitCode": 0, "reason": "Completed"}} if done else
                   {"running": {}})  # fmt: skip
            inits.append({"name": ic["name"], "image": ic["image"], "imageID": "",
                          "ready": done, "restartCount": 0, "state": ist})  # fmt: skip
        now = _now()
        cond = lambda t, ok: {"type": t, "status": "True" if ok else "False",  # noqa: E731
                              "lastTransitionTime": now}  # fmt: skip
        body = {
            "phase": phase, "hostIP": "127.0.0.1", "startTime": now,
            "conditions": [cond("Initialized", init is None), cond("Ready", ready),
                           cond("ContainersReady", ready), cond("PodScheduled", True)],
            "containerStatuses": [status],
        }  # fmt: skip
        if run.ip:
            body.update(podIP=run.ip, podIPs=[{"ip": run.ip}])
        if inits:
            body["initContainerStatuses"] = inits
        if waiting and waiting[0] == "CreateContainerConfigError":
            body.pop("podIP", None)
        try:  # the whole status, as the kubelet writes it (no merge with the previous one)
            pod = self.core.read_namespaced_pod(run.name, run.namespace)
            if pod.metadata.uid != uid:
                return
            obj = self.core.api_client.sanitize_for_serialization(pod)
            obj["status"] = copy.deepcopy(body)
            self.core.replace_namespaced_pod_status(run.name, run.namespace, obj)
        except Exception:  # noqa: BLE001 - the pod may be gone
            logger.debug("pod status of %s not written", run.name)
