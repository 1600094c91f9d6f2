"""The InferenceService for a cluster: build it, roll it out with a canary, promote or roll back.

The predictor runs our ServingRuntime (``python -m components.serve``) and reads the model
from its S3 prefix through the IRSA service account; a new version first takes
``canary_percent`` of the traffic, must become Ready and answer a smoke request, then gets
100% (and the MLflow ``champion`` alias), or is rolled back and the step fails with why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from components.common.errors import PlatformError

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
RUNTIME = "review-classifier"
MODEL_FORMAT = "review-classifier"


@dataclass(frozen=True)
class ServiceSpec:
    """Everything that varies between deployments of the classifier."""

    name: str
    storage_uri: str
    namespace: str = "review-classifier"
    runtime: str = RUNTIME
    service_account: str = "review-classifier-serving"
    gpus: int = 1
    cpu: str = "4"
    memory: str = "16Gi"
    min_replicas: int = 1
    max_replicas: int = 4
    scale_metric: str = "concurrency"
    scale_target: int = 32
    canary_percent: int | None = None
    model_version: str = ""


def build_inference_service(spec: ServiceSpec) -> dict:
    """The v1beta1 InferenceService object for ``spec``."""
    if not spec.storage_uri.startswith(("s3://", "pvc://", "gs://", "https://")):
        raise PlatformError(f"storageUri {spec.storage_uri!r} is not one KServe can read")
    resources = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus:
        resources["nvidia.com/gpu"] = str(spec.gpus)
    predictor: dict[str, Any] = {
        "serviceAccountName": spec.service_account,
        # Pod Security "restricted": KServe's storage initializer and queue-proxy inherit it.
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
        "scaleMetric": spec.scale_metric,
        "scaleTarget": spec.scale_target,
        "model": {
            "modelFormat": {"name": MODEL_FORMAT},
            "runtime": spec.runtime,
            "protocolVersion": "v2",
            "storageUri": spec.storage_uri,
            "resources": {"requests": dict(resources), "limits": dict(resources)},
        },
    }
    if spec.gpus:
        predictor["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        predictor["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
    if spec.canary_percent is not None:
        if not 0 <= spec.canary_percent <= 100:
            raise PlatformError(f"canary_percent {spec.canary_percent} is not in 0..100")
        predictor["canaryTrafficPercent"] = spec.canary_percent
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {
                "app.kubernetes.io/name": "review-classifier",
                "app.kubernetes.io/component": "serving",
            },
            "annotations": {
                "review-classifier/model-version": spec.model_version,
                "serving.kserve.io/enable-prometheus-scraping": "true",
            },
        },  # fmt: skip
        "spec": {"predictor": predictor},
    }


def _ready(obj: dict) -> tuple[bool, str]:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True", cond.get("message") or cond.get("reason") or ""
    return False, "no Ready condition yet"


def _failed(obj: dict) -> str | None:
    """A terminal failure the controller reported (e.g. the canary revision failed)."""
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("status") == "False" and cond.get("reason") in (
            "RevisionFailed", "PredictorConfigurationFailed", "InferenceServiceFailed",
        ):  # fmt: skip
            return f"{cond.get('type')}: {cond.get('reason')}: {cond.get('message', '')}"
    return None


@dataclass
class RolloutResult:
    action: str  # "created", "promoted"
    url: str


class Rollout:
    """Create or canary-patch an InferenceService and follow it to Ready, then promote."""

    def __init__(self, api: Any, poll_s: float = 5.0, timeout_s: float = 900.0) -> None:
        self.api = api
        self.poll_s = poll_s
        self.timeout_s = timeout_s

    def _get(self, ns: str, name: str) -> dict | None:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except Exception as e:  # noqa: BLE001 - the kubernetes client raises ApiException
            if getattr(e, "status", None) == 404:
                return None
            raise

    def _patch(self, ns: str, name: str, body: dict) -> None:
        self.api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body)

    def wait_ready(self, ns: str, name: str) -> dict:
        deadline = time.monotonic() + self.timeout_s
        message = ""
        while time.monotonic() < deadline:
            obj = self._get(ns, name) or {}
            failure = _failed(obj)
            if failure:
                raise PlatformError(f"InferenceService {ns}/{name} failed: {failure}")
            ready, message = _ready(obj)
            if ready:
                return obj
            time.sleep(self.poll_s)
        raise PlatformError(
            f"InferenceService {ns}/{name} not Ready in {self.timeout_s:.0f}s: {message}"
        )

    def run(
        self, spec: ServiceSpec, smoke: Callable[[str], Any],
        on_promote: Callable[[], None] | None = None,
    ) -> RolloutResult:  # fmt: skip
        """Deploy ``spec``; canary first when a version is already serving."""
        ns, name = spec.namespace, spec.name
        current = self._get(ns, name)
        if current is None:
            body = build_inference_service(spec)
            self.api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
            action = "created"
        else:
            canary = spec.canary_percent if spec.canary_percent is not None else 10
            previous_uri = current["spec"]["predictor"]["model"]["storageUri"]
            patch = build_inference_service(
                ServiceSpec(**{**spec.__dict__, "canary_percent": canary})
            )
            self._patch(ns, name, {"metadata": {"annotations": patch["metadata"]["annotations"]},
                                   "spec": patch["spec"]})  # fmt: skip
            action = "promoted"
            try:
                obj = self.wait_ready(ns, name)
                smoke(_url(obj))
            except PlatformError as e:
                self.rollback(ns, name, previous_uri)
                raise PlatformError(f"canary rolled back: {e}") from e
        obj = self.wait_ready(ns, name)
        url = _url(obj)
        smoke(url)
        if action == "promoted":
            self._patch(ns, name, {"spec": {"predictor": {"canaryTrafficPercent": 100}}})
        if on_promote:
            on_promote()
        return RolloutResult(action, url)

    def rollback(self, ns: str, name: str, previous_uri: str) -> None:
        """Send all traffic back to the previous model."""
        logger.warning("rolling back %s/%s to %s", ns, name, previous_uri)
        self._patch(ns, name, {"spec": {"predictor": {
            "canaryTrafficPercent": 100, "model": {"storageUri": previous_uri}}}})  # fmt: skip


def _url(obj: dict) -> str:
    return obj.get("status", {}).get("url", "")
