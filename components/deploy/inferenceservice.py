"""The InferenceService for a cluster: build it, roll it out, promote or roll back.

The predictor runs our ServingRuntime (``python -m components.serve``) and reads the model
from its S3 prefix through the IRSA service account (KServe's storage initializer puts it at
``/mnt/models``). Two deployment modes, one parameter choosing:

**Serverless** (Knative). A new version is a new revision that first takes ``canary_percent``
of the traffic. The rollout follows KServe's and Knative's own status (kserve v0.20.0,
``pkg/apis/serving/v1beta1/inference_service_status.go`` ``PropagateStatus``):

- right after the patch the status is the *old* one, Ready=True included (KServe copies the
  Knative service status it read before its update), so readiness alone proves nothing: the
  rollout waits for a *new* ``latestCreatedRevision``, then for ``latestReadyRevision`` to
  equal it and Ready=True (Knative marks the configuration Unknown when it creates a revision,
  ``configuration_lifecycle.go`` ``SetLatestCreatedRevisionName``). ``status.observedGeneration``
  is the Knative service's generation, not the InferenceService's, so it is not compared;
- a condition False with a reason (``RevisionFailed``, ...) fails the rollout at once, naming
  the revision and the reason;
- the canary is tested on its own URL: tag routing (annotation
  ``serving.kserve.io/enable-tag-routing``) gives the latest revision the ``latest`` tag in
  ``status.components.predictor.traffic`` (``ksvc_reconciler.go``); the held-out reviews of the
  evaluation go there and must be answered as the evaluation did;
- promotion removes ``canaryTrafficPercent`` (100% to the new revision, docs
  ``rollout-strategies/canary.md``) and waits for ``latestRolledoutRevision`` to be it; only
  then does the MLflow ``champion`` alias move;
- rollback is KServe's: ``canaryTrafficPercent: 0`` pins all traffic to the last rolled-out
  revision (``prev``), no new revision; the alias stays on the previous champion.

**RawDeployment** (plain Deployments, no Knative). KServe ignores ``canaryTrafficPercent``
there (only the Knative reconciler reads it), and the InferenceService stays Ready during a
rolling update (``PropagateRawStatus``), so the rollout follows the Deployment
``<name>-predictor`` itself as ``kubectl rollout status`` does, then tests the service URL
(every pod is new by then); rollback patches the previous storageUri and model-version
annotation back (a new rollout).

**Where the checks go**: ``ServiceSpec.address`` (``components/deploy/addresses.py``):
cluster-local addresses by default, the status URLs (``external``) or an ingress gateway with
the external Host header (``gateway``).

**What was tested**: a ConfigMap ``<name>-rollout`` records the storageUri that passed its check
and was promoted, and the one rejected (``components/deploy/record.py``). A re-run whose spec is
unchanged but not recorded as promoted (after a rollback, or a failed first create) tests that
model again before promoting it: never 100% and ``champion`` untested.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from components.common.errors import ConfigurationError, PlatformError
from components.common.settings import DEFAULT_NAMESPACE
from components.deploy.addresses import DEFAULT_TAG_TEMPLATE, Endpoint, endpoint, validate_address
from components.deploy.record import (
    PROMOTED_REVISION,
    PROMOTED_URI,
    PROMOTED_VARIANT,
    PROMOTED_VERSION,
    REJECTED_REASON,
    REJECTED_URI,
    REJECTED_VERSION,
    RolloutRecord,
)

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
RUNTIME = "review-classifier"
MODEL_FORMAT = "review-classifier"
MODES = ("Serverless", "RawDeployment")
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
VERSION_ANNOTATION = "review-classifier/model-version"
VARIANT_ANNOTATION = "review-classifier/variant"  # the serving variant the gate chose (or pinned)
# read by the predictor (components/serve/__main__.py): which variant, which registered version
VARIANT_ENV, VERSION_ENV = "REVIEW_CLASSIFIER_VARIANT", "REVIEW_CLASSIFIER_MODEL_VERSION"
# Conditions that end a rollout at once when False (a revision that cannot start).
FAILURE_REASONS = ("RevisionFailed", "RevisionMissing", "PredictorConfigurationFailed",
                   "InferenceServiceFailed", "ProgressDeadlineExceeded")  # fmt: skip
LOG_MODES = ("all", "request", "response")
# kserve pkg/apis/serving/v1beta1/component.go: ScaleMetric enum cpu;memory;concurrency;rps.
# concurrency and rps are Knative (KPA) metrics; RawDeployment scales with an HPA, which takes
# cpu (target: utilization %, 1-100) or memory (inference_service_validation.go,
# validateScalingHPACompExtension).
SCALE_METRICS = ("cpu", "memory", "concurrency", "rps")
HPA_METRICS = ("cpu", "memory")
DEFAULT_METRIC = {"Serverless": "concurrency", "RawDeployment": "cpu"}
# per pod: in-flight requests, requests/s, CPU utilization %, memory MiB
DEFAULT_TARGET = {"concurrency": 32, "rps": 64, "cpu": 80, "memory": 12288}
# The predictor's drain (components/serve: on SIGTERM it stops accepting, finishes what it has,
# closes keep-alive connections, exits within this many seconds): an env of the model container.
DRAIN_ENV = "REVIEW_CLASSIFIER_DRAIN_SECONDS"


@dataclass(frozen=True)
class ServiceSpec:
    """Everything that varies between deployments of the classifier."""

    name: str
    storage_uri: str
    namespace: str = DEFAULT_NAMESPACE
    runtime: str = RUNTIME
    service_account: str = "review-classifier-serving"
    gpus: int = 1
    cpu: str = "4"
    memory: str = "16Gi"
    min_replicas: int = 1
    max_replicas: int = 4
    # None: the mode's default metric (concurrency on Knative, cpu on an HPA) and its target
    scale_metric: str | None = None
    scale_target: int | None = None
    canary_percent: int | None = None
    model_version: str = ""
    variant: str = ""  # components/serve/variants.py name; "" lets the predictor decide
    mode: str = "Serverless"
    # KServe's payload logger (CloudEvents to this URL), for the monitoring sink
    logger_url: str = ""
    logger_mode: str = "all"
    extra_annotations: dict[str, str] = field(default_factory=dict)
    # where the rollout's checks go (components/deploy/addresses.py)
    address: str = "cluster-local"
    gateway_url: str = ""
    tag_template: str = DEFAULT_TAG_TEMPLATE
    # graceful shutdown: the predictor drains for at most drain_seconds after SIGTERM; in
    # RawDeployment a preStop hook first waits prestop_seconds for the pod to leave the
    # Service's endpoints (Knative's queue-proxy does this in Serverless)
    drain_seconds: int = 20
    prestop_seconds: int = 10

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigurationError(f"deployment mode {self.mode!r} is not one of: {MODES}")
        if self.logger_mode not in LOG_MODES:
            raise ConfigurationError(f"logger mode {self.logger_mode!r} is not one of {LOG_MODES}")
        validate_address(self.address, self.gateway_url, self.tag_template)
        metric, target = self.scaling
        if metric not in SCALE_METRICS:
            raise ConfigurationError(f"scale metric {metric!r} is not one of: {SCALE_METRICS}")
        if self.mode == "RawDeployment" and metric not in HPA_METRICS:
            raise ConfigurationError(
                f"scale metric {metric!r} is a Knative metric; RawDeployment scales with an "
                f"HPA on one of: {HPA_METRICS}"
            )
        if metric == "cpu" and not 1 <= target <= 100:
            raise ConfigurationError(f"scale target {target} for cpu is not a utilization 1-100")
        if self.drain_seconds < 1 or self.prestop_seconds < 0:
            raise ConfigurationError(
                f"drain_seconds {self.drain_seconds} must be >= 1 and prestop_seconds "
                f"{self.prestop_seconds} >= 0"
            )

    @property
    def scaling(self) -> tuple[str, int]:
        """(scaleMetric, scaleTarget): the given ones, else the mode's default."""
        metric = self.scale_metric or DEFAULT_METRIC[self.mode]
        target = self.scale_target if self.scale_target is not None else DEFAULT_TARGET.get(metric)
        return metric, target or 0

    @property
    def termination_grace_seconds(self) -> int:
        """Longer than the preStop wait plus the drain, with room for the process to exit."""
        return self.prestop_seconds + self.drain_seconds + 5


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
        "scaleMetric": spec.scaling[0],
        "scaleTarget": spec.scaling[1],
        "model": {
            "modelFormat": {"name": MODEL_FORMAT},
            "runtime": spec.runtime,
            "protocolVersion": "v2",
            "storageUri": spec.storage_uri,
            "resources": {"requests": dict(resources), "limits": dict(resources)},
            "env": [{"name": DRAIN_ENV, "value": str(spec.drain_seconds)}],
        },
    }
    for env, value in ((VARIANT_ENV, spec.variant), (VERSION_ENV, spec.model_version)):
        if value:
            predictor["model"]["env"].append({"name": env, "value": value})
    if spec.mode == "RawDeployment":
        # Knative's queue-proxy drains a Serverless pod; a plain Deployment's pod gets SIGTERM
        # while kube-proxy and the ingress may still send it requests. Wait for the endpoint
        # removal first (exec, with the image's own python: no shell in the image is assumed),
        # then the server drains; the grace period covers both (k8s docs, "Termination of Pods").
        predictor["terminationGracePeriodSeconds"] = spec.termination_grace_seconds
        predictor["model"]["lifecycle"] = {"preStop": {"exec": {"command": [
            "python", "-c", f"import time; time.sleep({spec.prestop_seconds})"]}}}  # fmt: skip
    if spec.gpus:
        predictor["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        predictor["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
    if spec.canary_percent is not None:
        if not 0 <= spec.canary_percent <= 100:
            raise PlatformError(f"canary_percent {spec.canary_percent} is not in 0..100")
        if spec.mode == "Serverless":  # RawDeployment ignores it (Knative reconciler only)
            predictor["canaryTrafficPercent"] = spec.canary_percent
    if spec.logger_url:  # the webhook rejects a logger without a mode
        predictor["logger"] = {"mode": spec.logger_mode, "url": spec.logger_url}
    annotations = {
        VERSION_ANNOTATION: spec.model_version,
        "serving.kserve.io/enable-prometheus-scraping": "true",
        MODE_ANNOTATION: spec.mode,
        **spec.extra_annotations,
    }
    if spec.variant:
        annotations[VARIANT_ANNOTATION] = spec.variant
    if spec.mode == "Serverless":
        annotations[TAG_ROUTING] = "true"
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
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


# ---- reading KServe's status ------------------------------------------------------------------
def conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def _annotations(obj: dict | None) -> dict:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _serves(obj: dict, spec: ServiceSpec) -> bool:
    """Whether the InferenceService already names this model and serving variant."""
    return (obj["spec"]["predictor"]["model"].get("storageUri") == spec.storage_uri
            and _annotations(obj).get(VARIANT_ANNOTATION, "") == (spec.variant or ""))  # fmt: skip


def predictor_status(obj: dict) -> dict:
    return ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}


def ready(obj: dict) -> bool:
    return conditions(obj).get("Ready", {}).get("status") == "True"


def failure(obj: dict) -> str | None:
    """``<type>: <reason>: <message>`` of a condition that says the rollout cannot succeed."""
    for cond in conditions(obj).values():
        if cond.get("status") == "False" and cond.get("reason") in FAILURE_REASONS:
            return f"{cond.get('type')}: {cond.get('reason')}: {cond.get('message', '')}"
    return None


def traffic_percent(obj: dict, revision: str) -> int:
    return sum(int(t.get("percent") or 0) for t in predictor_status(obj).get("traffic") or []
               if t.get("revisionName") == revision)  # fmt: skip


@dataclass
class RolloutResult:
    action: str  # "created", "promoted", "retested", "unchanged"
    url: str
    revision: str = ""


Check = Callable[..., Any]  # check(url) or, through a gateway, check(url, host=<Host header>)


class Rollout:
    """Create or update an InferenceService, test what is new, then promote or roll back.

    ``check(url)`` tests a base URL (the held-out reviews) and raises PlatformError to refuse;
    with ``address="gateway"`` it is called as ``check(url, host=...)``, the Host header to send.
    ``apps`` (an AppsV1Api) is needed for RawDeployment, whose Deployment the rollout follows;
    ``core`` (a CoreV1Api) keeps the rollout record (``components/deploy/record.py``).
    """

    def __init__(self, api: Any, poll_s: float = 2.0, timeout_s: float = 900.0,
                 apps: Any = None, core: Any = None) -> None:  # fmt: skip
        self.api, self.apps = api, apps
        self.record = RolloutRecord(core)
        self.poll_s = poll_s
        self.timeout_s = timeout_s

    def _get(self, ns: str, name: str) -> dict | None:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except Exception as e:  # noqa: BLE001 - the kubernetes client raises ApiException
            if getattr(e, "status", None) == 404:
                return None
            raise

    def _patch(self, ns: str, name: str, body: dict) -> dict:
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body)

    def _wait(self, ns: str, name: str, what: str, done: Callable[[dict], bool],
              failed: Callable[[dict], str | None] = failure) -> dict:  # fmt: skip
        """Poll until ``done(obj)``; raise at once when ``failed(obj)`` names a failure."""
        deadline = time.monotonic() + self.timeout_s
        obj: dict = {}
        while time.monotonic() < deadline:
            obj = self._get(ns, name) or {}
            reason = failed(obj)
            if reason:
                raise PlatformError(reason)
            if done(obj):
                return obj
            time.sleep(self.poll_s)
        ready_cond = conditions(obj).get("Ready", {})
        raise PlatformError(
            f"{what} not reached in {self.timeout_s:.0f}s (Ready={ready_cond.get('status')} "
            f"{ready_cond.get('reason') or ''} {ready_cond.get('message') or ''})".rstrip()
        )

    def run(self, spec: ServiceSpec, check: Check,
            on_promote: Callable[[], None] | None = None) -> RolloutResult:  # fmt: skip
        """Deploy ``spec``: create it, or roll the new version out (canary first)."""
        current = self._get(spec.namespace, spec.name)
        if spec.mode == "RawDeployment":
            return self._raw(spec, current, check, on_promote)
        return self._serverless(spec, current, check, on_promote)

    # ---- the record of what passed -----------------------------------------------------------
    def _promoted(self, spec: ServiceSpec, obj: dict, revision: str) -> None:
        self.record.write(spec.namespace, spec.name, obj, {
            PROMOTED_URI: spec.storage_uri, PROMOTED_VERSION: spec.model_version,
            PROMOTED_REVISION: revision, PROMOTED_VARIANT: spec.variant or None,
            REJECTED_URI: None, REJECTED_VERSION: None, REJECTED_REASON: None})  # fmt: skip

    def _rejected(self, spec: ServiceSpec, obj: dict | None, reason: str) -> None:
        self.record.write(spec.namespace, spec.name, obj, {
            REJECTED_URI: spec.storage_uri, REJECTED_VERSION: spec.model_version,
            REJECTED_REASON: reason[:1000]})  # fmt: skip

    # ---- Serverless (Knative revisions) ---------------------------------------------------
    def _serverless(self, spec, current, check, on_promote) -> RolloutResult:  # noqa: ANN001
        ns, name = spec.namespace, spec.name
        if current is None:
            body = build_inference_service(ServiceSpec(**{**spec.__dict__, "canary_percent": None}))
            self.api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
            try:
                obj = self._wait_new_revision(ns, name, before=None)
                revision = predictor_status(obj)["latestReadyRevision"]
                self._check(check, self._endpoint(spec, obj, "latest", revision), revision)
            except PlatformError as e:  # nothing to roll back to: record it, fail
                self._rejected(spec, self._get(ns, name), str(e))
                raise
            self._promoted(spec, obj, revision)
            if on_promote:
                on_promote()
            return RolloutResult("created", obj["status"].get("url", ""), revision)
        before = predictor_status(current).get("latestCreatedRevision")
        canary = spec.canary_percent if spec.canary_percent is not None else 10
        # the same model and variant (a new variant of the same version is a new spec: pinning
        # one, or a GPU target, rolls out through the canary like a new version)
        if _serves(current, spec):
            if self.record.promoted(ns, name, spec.storage_uri, spec.variant):
                return self._promote(spec, current, on_promote, "unchanged")
            return self._retest(spec, current, check, on_promote, canary)
        body = build_inference_service(ServiceSpec(**{**spec.__dict__, "canary_percent": canary}))
        self._patch(ns, name, {"metadata": {"annotations": body["metadata"]["annotations"]},
                               "spec": body["spec"]})  # fmt: skip
        logger.info("InferenceService %s/%s: new version %s at %d%% (canary), was %s", ns, name,
                    spec.model_version or spec.storage_uri, canary, before)  # fmt: skip
        return self._canary(spec, current, check, on_promote, "promoted", "canary rolled back",
                            lambda: self._wait_new_revision(ns, name, before))  # fmt: skip

    def _canary(self, spec, current, check, on_promote, action, refused,  # noqa: ANN001
                wait: Callable[[], dict]) -> RolloutResult:  # fmt: skip
        """Wait for the revision under test, check its ``latest`` tag; promote or roll back."""
        try:
            obj = wait()
            revision = predictor_status(obj)["latestReadyRevision"]
            self._check(check, self._endpoint(spec, obj, "latest", revision), revision)
        except PlatformError as e:
            self.rollback(spec.namespace, spec.name)
            self._rejected(spec, current, str(e))
            raise PlatformError(f"{refused}: {e}") from e
        return self._promote(spec, obj, on_promote, action)

    def _retest(self, spec, current, check, on_promote, canary) -> RolloutResult:  # noqa: ANN001
        """The spec already names this model but nothing records it as promoted: test it again.

        The latest revision (the model's, rejected or never tested) goes back to the canary
        percent (KServe splits only when a rolled-out revision exists: after a failed first
        create it has all the traffic already), its ``latest`` tag is tested, then promotion or
        rollback as for a new version. No new revision: only canaryTrafficPercent changes.
        """
        ns, name = spec.namespace, spec.name
        logger.warning("InferenceService %s/%s serves %s, which is not recorded as promoted "
                       "(rolled back or never tested): testing it again at %d%%", ns, name,
                       spec.storage_uri, canary)  # fmt: skip
        self._patch(ns, name, {"spec": {"predictor": {"canaryTrafficPercent": canary}}})

        def done(obj: dict) -> bool:
            p = predictor_status(obj)
            latest = p.get("latestCreatedRevision")
            rolled = p.get("latestRolledoutRevision")
            want = canary if rolled and rolled != latest else 100
            return bool(latest and p.get("latestReadyRevision") == latest and ready(obj)
                        and traffic_percent(obj, latest) == want)  # fmt: skip

        what = f"InferenceService {ns}/{name}: the latest revision at {canary}% again"
        refused = "re-test failed, rolled back"
        return self._canary(spec, current, check, on_promote, "retested", refused,
                            lambda: self._wait(ns, name, what, done))  # fmt: skip

    def _endpoint(self, spec: ServiceSpec, obj: dict, tag: str | None = None,
                  revision: str | None = None) -> Endpoint:  # fmt: skip
        return endpoint(obj, spec.namespace, spec.name, spec.address, tag, revision,
                        spec.gateway_url, spec.tag_template)  # fmt: skip

    def _wait_new_revision(self, ns: str, name: str, before: str | None) -> dict:
        """A revision newer than ``before`` exists, is the latest ready one, Ready=True."""

        def done(obj: dict) -> bool:
            p = predictor_status(obj)
            created = p.get("latestCreatedRevision")
            return bool(created and created != before and p.get("latestReadyRevision") == created
                        and ready(obj))  # fmt: skip

        def failed(obj: dict) -> str | None:
            reason = failure(obj)
            created = predictor_status(obj).get("latestCreatedRevision")
            if reason and created != before:
                return f"revision {created} failed: {reason}"
            return None

        return self._wait(ns, name, f"InferenceService {ns}/{name}: a new ready revision",
                          done, failed)  # fmt: skip

    def _check(self, check: Check, where: Endpoint, revision: str) -> None:
        try:
            result = check(where.url) if where.host is None else check(where.url, host=where.host)
        except PlatformError as e:
            via = f" (Host: {where.host})" if where.host else ""
            raise PlatformError(f"revision {revision} at {where.url}{via}: {e}") from e
        logger.info("revision %s answered the held-out reviews at %s: %s", revision, where.url,
                    result)  # fmt: skip

    def _promote(self, spec, obj, on_promote, action) -> RolloutResult:  # noqa: ANN001
        ns, name = spec.namespace, spec.name
        revision = predictor_status(obj).get("latestReadyRevision", "")
        # KServe's promotion: no canaryTrafficPercent, the latest ready revision gets 100%.
        self._patch(ns, name, {"spec": {"predictor": {"canaryTrafficPercent": None}}})
        obj = self._wait(
            ns, name, f"InferenceService {ns}/{name}: revision {revision} at 100%",
            lambda o: traffic_percent(o, revision) == 100
            and predictor_status(o).get("latestRolledoutRevision") == revision and ready(o),
        )  # fmt: skip
        if action != "unchanged":
            self._promoted(spec, obj, revision)
        if on_promote:
            on_promote()
        return RolloutResult(action, obj["status"].get("url", ""), revision)

    def rollback(self, ns: str, name: str) -> None:
        """KServe's rollback: all traffic to the last rolled-out revision, no new revision."""
        logger.warning("rolling back %s/%s: canaryTrafficPercent 0 (traffic to the last "
                       "rolled-out revision)", ns, name)  # fmt: skip
        self._patch(ns, name, {"spec": {"predictor": {"canaryTrafficPercent": 0}}})

    # ---- RawDeployment (a Deployment's rolling update) ------------------------------------
    def _raw(self, spec, current, check, on_promote) -> RolloutResult:  # noqa: ANN001
        if self.apps is None:
            raise ConfigurationError("a RawDeployment rollout needs the AppsV1Api")
        ns, name = spec.namespace, spec.name
        body = build_inference_service(spec)
        previous = current["spec"]["predictor"]["model"]["storageUri"] if current else None
        previous_version = _annotations(current).get(VERSION_ANNOTATION, "")
        # Every run tests what serves (the Deployment rolls only when the template changed): an
        # unchanged model after a failed create is tested like a new one, never promoted as is.
        unchanged = current is not None and _serves(current, spec)
        if current is None:
            self.api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        else:
            self._patch(ns, name, {"metadata": {"annotations": body["metadata"]["annotations"]},
                                   "spec": body["spec"]})  # fmt: skip
        try:
            self._wait_deployment(ns, f"{name}-predictor", spec.storage_uri)
            obj = self._wait(ns, name, f"InferenceService {ns}/{name} Ready", ready)
            self._check(check, self._endpoint(spec, obj), f"{name}-predictor")
        except PlatformError as e:
            self._rejected(spec, current or self._get(ns, name), str(e))
            if previous is None or unchanged:
                raise
            logger.warning("rolling back %s/%s to %s (version %s)", ns, name, previous,
                           previous_version or "unknown")  # fmt: skip
            # the previous model with its version and variant (annotations and the predictor's
            # env, which name what answers), as one change (one rollout)
            model = current["spec"]["predictor"]["model"]
            self._patch(ns, name, {
                "metadata": {"annotations": {
                    VERSION_ANNOTATION: previous_version,
                    VARIANT_ANNOTATION: _annotations(current).get(VARIANT_ANNOTATION)}},
                "spec": {"predictor": {"model": {"storageUri": previous,
                                                 "env": model.get("env") or []}}}})  # fmt: skip
            raise PlatformError(f"rolled back to {previous}: {e}") from e
        self._promoted(spec, obj, f"{name}-predictor")
        if on_promote:
            on_promote()
        action = "created" if current is None else ("retested" if unchanged else "promoted")
        return RolloutResult(action, obj["status"].get("url", ""), f"{name}-predictor")

    def _wait_deployment(self, ns: str, name: str, storage_uri: str) -> None:
        """``kubectl rollout status``: the Deployment serving ``storage_uri`` is rolled out."""
        deadline = time.monotonic() + self.timeout_s
        detail = "not created yet"
        while time.monotonic() < deadline:
            try:
                dep = self.apps.read_namespaced_deployment(name, ns)
            except Exception as e:  # noqa: BLE001 - 404 until KServe creates it
                if getattr(e, "status", None) != 404:
                    raise
                dep = None
            if dep is not None:
                done, detail = _deployment_rolled_out(dep, storage_uri)
                if done:
                    return
                if detail.startswith("failed"):
                    raise PlatformError(f"Deployment {ns}/{name} {detail}")
            time.sleep(self.poll_s)
        raise PlatformError(f"Deployment {ns}/{name} not rolled out in {self.timeout_s:.0f}s: "
                            f"{detail}")  # fmt: skip


def _deployment_rolled_out(dep: Any, storage_uri: str) -> tuple[bool, str]:
    """(done, why not) by the rules of ``kubectl rollout status``.

    Those of kubectl's ``DeploymentStatusViewer``, plus: the pod template serves ``storage_uri``.
    """
    spec, status = dep.spec, dep.status
    uris = [a for c in (spec.template.spec.init_containers or []) for a in (c.args or [])]
    annotations = spec.template.metadata.annotations or {}
    source = annotations.get("internal.serving.kserve.io/storage-initializer-sourceuri")
    if storage_uri not in uris and source != storage_uri:
        return False, "still the previous model's template"
    for cond in status.conditions or []:
        if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
            return False, f"failed: {cond.reason}: {cond.message}"
    if (status.observed_generation or 0) < (dep.metadata.generation or 0):
        return False, "waiting for the rollout to be observed"
    want = spec.replicas if spec.replicas is not None else 1
    if (status.updated_replicas or 0) < want:
        return False, f"{status.updated_replicas or 0} of {want} new replicas updated"
    if (status.replicas or 0) > (status.updated_replicas or 0):
        old = (status.replicas or 0) - (status.updated_replicas or 0)
        return False, f"{old} old replicas pending termination"
    if (status.available_replicas or 0) < (status.updated_replicas or 0):
        available = status.available_replicas or 0
        return False, f"{available} of {status.updated_replicas} updated replicas available"
    return True, ""
