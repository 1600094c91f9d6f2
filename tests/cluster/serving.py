"""KServe and Knative for an ``InferenceService``, played on the real API server (test-only).

What the controllers write, with the upstream files they follow (kserve v0.20.0, knative/serving
v1.x), so that the upstream Deployment/ReplicaSet, endpoints and garbage-collector controllers,
the real scheduler and the harness kubelet do the rest:

**Serverless** (Knative). Each new ``storageUri`` is a revision ``<isvc>-predictor-0000N``
(:class:`tests.cluster.kserve.KServeModel` writes the status in KServe's order). Knative's
revision reconciler makes a Deployment ``<revision>-deployment`` and a Service for the revision
(``pkg/reconciler/revision/resources/deploy.go``, ``pkg/reconciler/serverlessservice``; here one
Service ``<revision>``, port 80 to the container's 8080, as no queue-proxy runs); the pod is
built as KServe builds it: the ServingRuntime's container with ``{{.Name}}`` in its args, the
predictor's resources and pod fields (``terminationGracePeriodSeconds``, ``lifecycle``), the
storage initializer init container (``pkg/webhook/admission/pod/
storage_initializer_injector.go``) with the S3 settings of the service account's
``serving.kserve.io/s3-*`` annotations (``pkg/credentials/s3/utils.go``). Without a
readinessProbe Knative probes the container's port over TCP (``pkg/reconciler/revision/
resources/queue.go``). A revision no route references is scaled to zero (min-scale applies only
to routable revisions). A revision whose container crashed, or whose init container failed,
fails (``RevisionFailed``).

Routing is the cluster-local gateway's (Istio ``knative-local-gateway`` in ``istio-system``):
Knative makes an ExternalName Service pointing there for the route ``<isvc>-predictor`` and one
per traffic tag, ``<tag>-<isvc>-predictor`` (``pkg/reconciler/route/resources/service.go``,
``MakeK8sPlaceholderService``; tag names by the default ``tag-template`` ``{{.Tag}}-{{.Name}}``),
and KServe one for ``<isvc>`` (its top-level ``status.address``). The gateway routes by Host:
``<name>.<ns>.svc.cluster.local`` (and the short forms) and the external ``<name>.<ns>.example.com``
to the traffic split or to a tag's revision (:class:`tests.cluster.proxy.HostRouter`). The
external domain does not resolve inside the cluster (no DNS record): callers in pods must use
the cluster-local names, as on a real cluster.

**RawDeployment.** KServe's raw reconcilers (``pkg/controller/v1beta1/inferenceservice/
reconcilers/{deployment,service,hpa}``) make the Deployment ``<isvc>-predictor``, a Service of the
same name (80 to 8080) and an HPA; the rolling update is the upstream Deployment controller's.
HPA metrics in Raw mode are ``cpu`` or ``memory`` only (kserve docs
``modelserving/autoscaling/raw_deployment_autoscaling.md``; the webhook refuses others): another
``scaleMetric`` marks the service not Ready with the reason the webhook gives.
"""

from __future__ import annotations

import copy
import logging
import random

from tests.cluster.controllers import owner_ref
from tests.cluster.kserve import KServeModel
from tests.cluster.network import PodNetwork
from tests.cluster.proxy import HostRouter, Target
from tests.cluster.services import GATEWAY_ANNOTATION, ServiceNetwork

logger = logging.getLogger(__name__)
KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
RUNTIMES_KSERVE = ("serving.kserve.io", "v1alpha1", "servingruntimes")
STORAGE_INITIALIZER = "kserve/storage-initializer:v0.21.0"
GATEWAY_NS, GATEWAY = "istio-system", "knative-local-gateway"
GATEWAY_HOST = f"{GATEWAY}.{GATEWAY_NS}.svc.cluster.local"
RAW_METRICS = ("cpu", "memory")


class ServingControllers:
    """KServe (both modes) and Knative's revisions, routes and local gateway."""

    def __init__(self, api_client, services: ServiceNetwork, network: PodNetwork) -> None:  # noqa: ANN001
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.services, self.network = services, network
        self.models: dict[tuple[str, str], KServeModel] = {}
        self.raw: dict[tuple[str, str], dict] = {}
        self.gateway: HostRouter | None = None
        self.routes: dict[str, list[tuple[str, str, int]]] = {}  # host -> [(ns, revision, %)]

    # ---- the gateway -------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": GATEWAY_NS}})
        except Exception:  # noqa: BLE001 - exists
            pass
        svc = self.core.create_namespaced_service(GATEWAY_NS, {
            "metadata": {"name": GATEWAY, "annotations": {GATEWAY_ANNOTATION: "true"}},
            "spec": {"ports": [{"name": "http2", "port": 80}]}})  # fmt: skip
        ip = svc.spec.cluster_ip
        self.network.add_address(ip)
        self.gateway = HostRouter(ip, 80, self._route)
        self.gateway_ip = ip

    def stop(self) -> None:
        if self.gateway:
            self.gateway.stop()

    def _route(self, host: str) -> Target | None:
        choices = self.routes.get(host)
        if not choices:
            return None
        (ns, revision, _), = random.choices(choices, weights=[max(c[2], 0) for c in choices]) \
            if sum(c[2] for c in choices) else [choices[0]]  # fmt: skip
        targets = self.services.ready_targets(ns, revision, "http")
        return random.choice(targets) if targets else None

    # ---- the loop ----------------------------------------------------------------------------
    def sync(self) -> None:
        items = self.custom.list_cluster_custom_object(*KSERVE[:2], KSERVE[2])["items"]
        live = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items}
        for key in set(self.models) - live:  # deleted: the garbage collector takes its objects
            self.models.pop(key)
        for key in set(self.raw) - live:
            self.raw.pop(key)
        routes: dict[str, list[tuple[str, str, int]]] = {}
        for obj in items:
            mode = (obj["metadata"].get("annotations") or {}).get(
                "serving.kserve.io/deploymentMode", "Serverless"
            )
            if mode == "RawDeployment":
                self._raw(obj)
            else:
                self._serverless(obj, routes)
        self.routes = routes

    def _write_status(self, obj: dict, status: dict) -> None:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        obj = {**obj, "status": status}
        try:
            self.custom.replace_namespaced_custom_object_status(
                *KSERVE[:2], ns, KSERVE[2], name, obj
            )
        except Exception:  # noqa: BLE001 - a newer spec came in: next round
            logger.debug("status of %s not written", name)

    # ---- Serverless --------------------------------------------------------------------------
    def _serverless(self, obj: dict, routes: dict) -> None:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        key = (ns, name)
        model = self.models.get(key)
        if model is None:
            model = self.models[key] = KServeModel(name, ns)
            for svc_name in (f"{name}-predictor", f"latest-{name}-predictor",
                             f"prev-{name}-predictor", name):  # fmt: skip
                self._ensure_service(obj, svc_name, {"type": "ExternalName",
                                                     "externalName": GATEWAY_HOST})  # fmt: skip
        before = len(model.revisions)
        model.observe(obj)
        if len(model.revisions) > before:
            revision, uri = model.revisions[-1]
            self._start_revision(obj, revision, uri)
        if model.phase == "starting":
            revision, uri = model.revisions[-1]
            state = self._revision_state(ns, revision)
            if state == "pending":
                self._add_routes(routes, model)
                return  # Knative keeps the configuration Unknown meanwhile
            if state == "failed":
                model.healthy[uri] = False
        self._write_status(obj, model.tick())
        self._add_routes(routes, model)
        self._scale_unrouted(ns, model)

    def _add_routes(self, routes: dict, model: KServeModel) -> None:
        traffic = model.status.get("components", {}).get("predictor", {}).get("traffic", [])
        ns, name = model.namespace, model.name
        split = [(ns, t["revisionName"], int(t.get("percent") or 0)) for t in traffic]

        def hosts(base: str) -> list[str]:
            return [f"{base}.{ns}.svc.cluster.local", f"{base}.{ns}.svc", f"{base}.{ns}", base,
                    f"{base}.{ns}.{model.domain}"]  # fmt: skip

        for host in hosts(f"{name}-predictor") + hosts(name):
            routes[host] = split
        for t in traffic:
            if t.get("tag"):
                for host in hosts(f"{t['tag']}-{name}-predictor"):
                    routes[host] = [(ns, t["revisionName"], 100)]

    def _scale_unrouted(self, ns: str, model: KServeModel) -> None:
        traffic = model.status.get("components", {}).get("predictor", {}).get("traffic", [])
        routed = {t["revisionName"] for t in traffic} | {model.revisions[-1][0]}
        for revision, _ in model.revisions:
            if revision not in routed and revision not in model.scaled_down:
                model.scaled_down.add(revision)
                try:
                    self.apps.patch_namespaced_deployment_scale(
                        f"{revision}-deployment", ns, {"spec": {"replicas": 0}}
                    )
                except Exception:  # noqa: BLE001 - gone with its service
                    pass

    def _revision_state(self, ns: str, revision: str) -> str:
        pods = self.core.list_namespaced_pod(
            ns, label_selector=f"serving.knative.dev/revision={revision}"
        ).items
        for pod in pods:
            for s in pod.status.init_container_statuses or []:
                if s.state and s.state.terminated and s.state.terminated.exit_code:
                    return "failed"
            for s in pod.status.container_statuses or []:
                if s.restart_count or (s.state and s.state.waiting and s.state.waiting.reason
                                       == "CreateContainerConfigError"):  # fmt: skip
                    return "failed"
        return "ready" if self.services.ready_targets(ns, revision, "http") else "pending"

    def _start_revision(self, isvc: dict, revision: str, uri: str) -> None:
        ns = isvc["metadata"]["namespace"]
        pod = self._predictor_pod(isvc, uri)
        labels = {"serving.knative.dev/revision": revision,
                  "serving.kserve.io/inferenceservice": isvc["metadata"]["name"],
                  "component": "predictor"}  # fmt: skip
        pod["metadata"]["labels"].update(labels)
        container = pod["spec"]["containers"][0]
        container.setdefault("readinessProbe", {"tcpSocket": {"port": 8080}})
        predictor = isvc["spec"]["predictor"]
        self.apps.create_namespaced_deployment(ns, {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"{revision}-deployment", "namespace": ns, "labels": labels,
                         "ownerReferences": [owner_ref(isvc)]},
            "spec": {"replicas": max(1, int(predictor.get("minReplicas", 1))),
                     "selector": {"matchLabels": {"serving.knative.dev/revision": revision}},
                     "template": pod},
        })  # fmt: skip
        self._ensure_service(isvc, revision, {
            "selector": {"serving.knative.dev/revision": revision},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]})  # fmt: skip

    def _ensure_service(self, owner: dict, name: str, spec: dict) -> None:
        ns = owner["metadata"]["namespace"]
        try:
            self.core.create_namespaced_service(ns, {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "ownerReferences": [owner_ref(owner)]},
                "spec": spec})  # fmt: skip
        except Exception as e:  # noqa: BLE001 - 409: already there
            if getattr(e, "status", None) != 409:
                raise

    def _predictor_pod(self, isvc: dict, uri: str) -> dict:
        ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        predictor = isvc["spec"]["predictor"]
        model = predictor["model"]
        runtime = self.custom.get_namespaced_custom_object(
            *RUNTIMES_KSERVE[:2], ns, RUNTIMES_KSERVE[2], model["runtime"]
        )
        container = copy.deepcopy(runtime["spec"]["containers"][0])
        container["args"] = [a.replace("{{.Name}}", name) for a in container.get("args", [])]
        for key in ("resources", "lifecycle", "env"):
            if key in model:
                container[key] = copy.deepcopy(model[key])
        mount = {"name": "kserve-provision-location", "mountPath": "/mnt/models"}
        container["volumeMounts"] = [
            *container.get("volumeMounts", []),
            {**mount, "readOnly": True},
        ]
        sa_name = predictor.get("serviceAccountName", "default")
        try:
            notes = dict(
                self.core.read_namespaced_service_account(sa_name, ns).metadata.annotations or {}
            )
        except Exception:  # noqa: BLE001 - no such account
            notes = {}
        init_env = []
        endpoint = notes.get("serving.kserve.io/s3-endpoint")
        if endpoint:  # BuildS3EnvVars: "0" means http
            scheme = "http" if notes.get("serving.kserve.io/s3-usehttps") == "0" else "https"
            init_env = [{"name": "S3_ENDPOINT", "value": endpoint},
                        {"name": "S3_USE_HTTPS", "value": "0" if scheme == "http" else "1"},
                        {"name": "AWS_ENDPOINT_URL", "value": f"{scheme}://{endpoint}"}]  # fmt: skip
        init = {
            "name": "storage-initializer", "image": STORAGE_INITIALIZER,
            "args": [uri, "/mnt/models"], "env": init_env, "volumeMounts": [mount],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": copy.deepcopy(container.get("securityContext", {})),
            "resources": {"requests": {"cpu": "100m", "memory": "100Mi"},
                          "limits": {"cpu": "1", "memory": "1Gi"}},
        }  # fmt: skip
        spec = {
            "serviceAccountName": sa_name,
            "securityContext": copy.deepcopy(predictor.get("securityContext", {})),
            "initContainers": [init], "containers": [container],
            "volumes": [*copy.deepcopy(runtime["spec"].get("volumes", [])),
                        {"name": "kserve-provision-location", "emptyDir": {}}],
        }  # fmt: skip
        for key in ("terminationGracePeriodSeconds", "tolerations", "nodeSelector"):
            if key in predictor:
                spec[key] = copy.deepcopy(predictor[key])
        return {
            "metadata": {"labels": {},
                         "annotations": {"internal.serving.kserve.io/storage-initializer-sourceuri": uri}},
            "spec": spec,
        }  # fmt: skip

    # ---- RawDeployment -----------------------------------------------------------------------
    def _raw(self, obj: dict) -> None:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        predictor = obj["spec"]["predictor"]
        uri = predictor["model"]["storageUri"]
        seen = self.raw.setdefault((ns, name), {})
        generation = obj["metadata"].get("generation")
        metric = predictor.get("scaleMetric", "cpu")
        if metric not in RAW_METRICS:
            self._write_status(obj, {"conditions": [{
                "type": "Ready", "status": "False", "reason": "InvalidSpec",
                "message": f"the autoscaler class 'hpa' (RawDeployment) does not support "
                           f"scaleMetric {metric!r}: use one of {list(RAW_METRICS)}"}]})  # fmt: skip
            return
        dep_name = f"{name}-predictor"
        if seen.get("generation") != generation:
            seen["generation"] = generation
            pod = self._predictor_pod(obj, uri)
            labels = {"app": dep_name, "serving.kserve.io/inferenceservice": name,
                      "component": "predictor"}  # fmt: skip
            pod["metadata"]["labels"].update(labels)
            body = {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": dep_name, "namespace": ns, "labels": labels,
                             "ownerReferences": [owner_ref(obj)]},
                "spec": {"replicas": max(1, int(predictor.get("minReplicas", 1))),
                         "selector": {"matchLabels": {"app": dep_name}}, "template": pod},
            }  # fmt: skip
            if "deployment" in seen:
                self.apps.replace_namespaced_deployment(dep_name, ns, {
                    **body, "metadata": {**body["metadata"], "resourceVersion":
                    self.apps.read_namespaced_deployment(dep_name, ns).metadata.resource_version}})  # fmt: skip
            else:
                self.apps.create_namespaced_deployment(ns, body)
                self._ensure_service(obj, dep_name, {"selector": {"app": dep_name}, "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080}]})  # fmt: skip
                target = int(predictor.get("scaleTarget", 80))
                # autoscaling/v2beta2 (the v1.20 server's; the client has no typed API for it)
                self.custom.create_namespaced_custom_object("autoscaling", "v2beta2", ns,
                                                            "horizontalpodautoscalers", {
                    "apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": dep_name, "namespace": ns,
                                 "ownerReferences": [owner_ref(obj)]},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": dep_name},
                             "minReplicas": max(1, int(predictor.get("minReplicas", 1))),
                             "maxReplicas": int(predictor.get("maxReplicas", 1) or 1),
                             "metrics": [{"type": "Resource", "resource": {
                                 "name": metric, "target": {"type": "Utilization",
                                                            "averageUtilization": target}}}]},
                })  # fmt: skip
            seen["deployment"] = True
        dep = self.apps.read_namespaced_deployment(dep_name, ns)
        available = any(c.type == "Available" and c.status == "True"
                        for c in (dep.status.conditions or []))  # fmt: skip
        ready = "True" if available else "False"
        self._write_status(obj, {
            "observedGeneration": generation, "deploymentMode": "RawDeployment",
            "url": f"http://{name}-{ns}.example.com",
            "address": {"url": f"http://{dep_name}.{ns}.svc.cluster.local"},
            "components": {"predictor": {
                "url": f"http://{name}-{ns}.example.com",
                "address": {"url": f"http://{dep_name}.{ns}.svc.cluster.local"}}},
            "conditions": [{"type": t, "status": ready, "lastTransitionTime": "2026-12-01T00:00:00Z"}
                           for t in ("PredictorReady", "Ready")],
        })  # fmt: skip
