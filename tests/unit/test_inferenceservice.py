import jsonschema
import pytest

from components.common.errors import ConfigurationError, PlatformError
from components.deploy.inferenceservice import Rollout, ServiceSpec, build_inference_service
from tests.cluster.kserve import KServeModel
from tests.conftest import crd_schema

URI = "s3://mlflow-artifacts/1/models/m-abc/artifacts/artifacts/model"
NS = "review-classifier"
LATEST_LOCAL = f"http://latest-rc-predictor.{NS}.svc.cluster.local"  # Knative's tag Service
LATEST_EXTERNAL = f"http://latest-rc-predictor.{NS}.example.com"


def test_inference_service_validates_against_the_kserve_crd(crds_dir):
    spec = ServiceSpec(name="review-classifier", storage_uri=URI, gpus=1, min_replicas=2,
                       max_replicas=6, scale_target=16, canary_percent=10, model_version="3",
                       variant="torch-bf16")  # fmt: skip
    isvc = build_inference_service(spec)
    jsonschema.validate(
        isvc, crd_schema(crds_dir, "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    )
    p = isvc["spec"]["predictor"]
    assert p["model"]["storageUri"] == URI and p["model"]["runtime"] == "review-classifier"
    assert p["canaryTrafficPercent"] == 10
    assert (p["minReplicas"], p["maxReplicas"], p["scaleTarget"]) == (2, 6, 16)
    assert p["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert p["model"]["resources"]["requests"] == p["model"]["resources"]["limits"]
    assert p["serviceAccountName"] == "review-classifier-serving"
    assert isvc["metadata"]["annotations"]["review-classifier/model-version"] == "3"
    # the variant the gate chose, named on the object and given to the predictor
    assert isvc["metadata"]["annotations"]["review-classifier/variant"] == "torch-bf16"
    env = {e["name"]: e["value"] for e in p["model"]["env"]}
    assert env["REVIEW_CLASSIFIER_VARIANT"] == "torch-bf16"
    assert env["REVIEW_CLASSIFIER_MODEL_VERSION"] == "3"


def test_models_uris_are_rejected():
    with pytest.raises(PlatformError, match="storageUri"):
        build_inference_service(ServiceSpec(name="x", storage_uri="models:/review-classifier/1"))


class FakeKServe:
    """CustomObjectsApi stand-in whose status comes from the model of KServe's reconcile loop
    (tests/cluster/kserve.py): one reconcile per read, stale Ready first after a patch."""

    def __init__(self, healthy=None):
        self.model = KServeModel("rc", "review-classifier", healthy=healthy or {})
        self.obj, self.patches = None, []

    def get_namespaced_custom_object(self, *args):
        if self.obj is None:
            raise type("ApiException", (Exception,), {"status": 404})()
        self.model.observe(self.obj)
        return {**self.obj, "status": self.model.tick()}

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        self.obj = {**body, "metadata": {**body["metadata"], "generation": 1}}

    def patch_namespaced_custom_object(self, group, version, ns, plural, name, body):
        self.patches.append(body)
        merged = json_merge(self.obj, body)
        merged["metadata"]["generation"] = self.obj["metadata"]["generation"] + (
            merged["spec"] != self.obj["spec"]
        )
        self.obj = merged
        return merged


def json_merge(target, patch):
    """RFC 7386 merge patch, what the kubernetes client sends for a dict body."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge(out.get(key), value)
    return out


class FakeCore:
    """CoreV1Api stand-in for the rollout record's ConfigMap: read, merge-patch, create."""

    def __init__(self):
        self.maps = {}

    def read_namespaced_config_map(self, name, ns):
        if (ns, name) not in self.maps:
            raise type("ApiException", (Exception,), {"status": 404})()
        return self.maps[(ns, name)]

    def patch_namespaced_config_map(self, name, ns, body):
        current = self.read_namespaced_config_map(name, ns)
        self.maps[(ns, name)] = json_merge(current, body)

    def create_namespaced_config_map(self, ns, body):
        self.maps[(ns, body["metadata"]["name"])] = json_merge({}, body)


def _deploy(api, uri, version, checks, promoted, answer=None, core=None, **kw):
    def check(url, host=None):
        checks.append(url if host is None else (url, host))
        if answer:
            answer(url)
        return {"agreement": 1.0}

    spec = ServiceSpec(name="rc", storage_uri=uri, model_version=version, **kw)
    return Rollout(api, poll_s=0, timeout_s=5, core=core).run(
        spec, check=check, on_promote=lambda: promoted.append(version)
    )


def test_first_create_has_no_canary_and_tests_the_latest_revision():
    api, checks, promoted = FakeKServe(), [], []
    result = _deploy(api, URI, "1", checks, promoted, canary_percent=10)
    assert "canaryTrafficPercent" not in api.obj["spec"]["predictor"]
    assert api.obj["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
    assert result.action == "created" and result.revision == "rc-predictor-00001"
    assert checks == [LATEST_LOCAL]
    assert promoted == ["1"]


def test_canary_waits_past_the_stale_ready_status_tests_the_new_revision_then_promotes():
    api, checks, promoted = FakeKServe(), [], []
    _deploy(api, "s3://b/v1", "1", checks, promoted)
    seen = []
    real_tick = api.model.tick
    api.model.tick = lambda: seen.append(api.model.phase) or real_tick()
    result = _deploy(api, "s3://b/v2", "2", checks, promoted, canary_percent=20)
    # before the patch, then the old Ready=True status, which must not pass for the canary
    assert seen[:2] == ["done", "stale"]
    assert api.patches[0]["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert result.action == "promoted" and result.revision == "rc-predictor-00002"
    assert api.patches[-1] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    assert "canaryTrafficPercent" not in api.obj["spec"]["predictor"]
    status = api.model.status["components"]["predictor"]
    assert status["latestRolledoutRevision"] == "rc-predictor-00002"
    assert status["traffic"] == [
        {
            "tag": "latest",
            "revisionName": "rc-predictor-00002",
            "latestRevision": True,
            "percent": 100,
            "url": "http://latest-rc-predictor.review-classifier.example.com",
        }
    ]
    assert promoted == ["1", "2"]


def test_a_revision_that_fails_is_rolled_back_with_canary_zero_and_named():
    api, checks, promoted = FakeKServe(healthy={"s3://b/v2": False}), [], []
    _deploy(api, "s3://b/v1", "1", checks, promoted)
    with pytest.raises(PlatformError) as err:
        _deploy(api, "s3://b/v2", "2", checks, promoted)
    message = str(err.value)
    assert "canary rolled back: revision rc-predictor-00002 failed" in message
    assert "RevisionFailed" in message and "CrashLoopBackOff" in message
    assert api.patches[-1] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert promoted == ["1"] and len(checks) == 1  # the alias stays on the previous champion


def test_a_canary_that_answers_wrongly_is_rolled_back():
    api, checks, promoted = FakeKServe(), [], []
    _deploy(api, "s3://b/v1", "1", checks, promoted)

    def disagree(url):
        raise PlatformError("agrees with the evaluated model on 3 of 16 held-out reviews")

    with pytest.raises(PlatformError, match="rolled back: revision rc-predictor-00002 at http"):
        _deploy(api, "s3://b/v2", "2", checks, promoted, answer=disagree)
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    # the traffic went back to the rolled-out revision, without a third revision
    api.model.observe(api.obj)
    status = api.model.tick()["components"]["predictor"]
    assert len(api.model.revisions) == 2
    assert {t["revisionName"]: t["percent"] for t in status["traffic"]} == {
        "rc-predictor-00002": 0,
        "rc-predictor-00001": 100,
    }
    assert promoted == ["1"]


class FakeApps:
    """AppsV1Api stand-in: the predictor Deployment rolls out over a few reads."""

    def __init__(self, api, steps=3, fail=False):
        self.api, self.steps, self.fail, self.reads = api, steps, fail, 0

    def read_namespaced_deployment(self, name, ns):
        from kubernetes import client

        self.reads += 1
        uri = self.api.obj["spec"]["predictor"]["model"]["storageUri"]
        done = self.reads >= self.steps
        conds = [
            client.V1DeploymentCondition(
                type="Progressing",
                status="False" if self.fail else "True",
                reason="ProgressDeadlineExceeded"
                if self.fail
                else ("NewReplicaSetAvailable" if done else "ReplicaSetUpdated"),
                message="m",
            )
        ]
        template = client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(
                annotations={"internal.serving.kserve.io/storage-initializer-sourceuri": uri}
            ),
            spec=client.V1PodSpec(containers=[]),
        )
        return client.V1Deployment(
            metadata=client.V1ObjectMeta(generation=2),
            spec=client.V1DeploymentSpec(replicas=2, template=template, selector={}),
            status=client.V1DeploymentStatus(
                observed_generation=2,
                replicas=2 if done else 3,
                updated_replicas=2 if done else 1,
                available_replicas=2,
                conditions=conds,
            ),
        )


class RawApi(FakeKServe):
    def get_namespaced_custom_object(self, *args):
        if self.obj is None:
            raise type("ApiException", (Exception,), {"status": 404})()
        local = {"url": f"http://rc-predictor.{NS}.svc.cluster.local"}
        return {
            **self.obj,
            "status": {  # PropagateRawStatus: the external URL and the cluster-local address
                "url": "http://rc-review-classifier.example.com",
                "address": local,
                "components": {"predictor": {"address": local}},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }


def test_raw_deployment_follows_the_deployment_rollout_then_tests_the_service():
    api, checks, promoted = RawApi(), [], []
    apps = FakeApps(api)
    spec = ServiceSpec(name="rc", storage_uri="s3://b/v1", mode="RawDeployment", canary_percent=10)
    result = Rollout(api, poll_s=0, timeout_s=5, apps=apps).run(
        spec, check=checks.append, on_promote=lambda: promoted.append(1)
    )
    annotations = api.obj["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert "canaryTrafficPercent" not in api.obj["spec"]["predictor"]  # ignored there
    assert apps.reads >= 3 and checks == [f"http://rc-predictor.{NS}.svc.cluster.local"]
    assert result.action == "created" and promoted == [1]


def test_raw_deployment_that_does_not_progress_is_rolled_back_to_the_previous_model():
    api, promoted = RawApi(), []
    Rollout(api, poll_s=0, timeout_s=5, apps=FakeApps(api, steps=1)).run(
        ServiceSpec(name="rc", storage_uri="s3://b/v1", mode="RawDeployment", model_version="1",
                    variant="onnx-fp32"),
        check=print,
    )  # fmt: skip
    before = api.obj["spec"]["predictor"]["model"]["env"]
    with pytest.raises(PlatformError, match="rolled back to s3://b/v1: .*ProgressDeadlineExceeded"):
        Rollout(api, poll_s=0, timeout_s=5, apps=FakeApps(api, fail=True)).run(
            ServiceSpec(name="rc", storage_uri="s3://b/v2", mode="RawDeployment",
                        model_version="2", variant="onnx-int8"),
            check=print,
            on_promote=lambda: promoted.append(2),
        )  # fmt: skip
    assert api.obj["spec"]["predictor"]["model"]["storageUri"] == "s3://b/v1" and promoted == []
    # the old model is labelled with its own version again, not the rejected one
    assert api.obj["metadata"]["annotations"]["review-classifier/model-version"] == "1"
    # and its own variant: the annotation and the predictor's env name what answers
    assert api.obj["metadata"]["annotations"]["review-classifier/variant"] == "onnx-fp32"
    assert api.obj["spec"]["predictor"]["model"]["env"] == before
    assert {"name": "REVIEW_CLASSIFIER_MODEL_VERSION", "value": "1"} in before
    assert len(api.patches) == 2  # the rollout of v2, then one rollback patch


def test_logger_and_modes_validate_against_the_crd(crds_dir):
    schema = crd_schema(crds_dir, "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    for mode in ("Serverless", "RawDeployment"):
        isvc = build_inference_service(
            ServiceSpec(
                name="rc", storage_uri=URI, mode=mode, logger_url="http://sink.review-classifier"
            )
        )
        jsonschema.validate(isvc, schema)
        assert isvc["spec"]["predictor"]["logger"] == {
            "mode": "all",
            "url": "http://sink.review-classifier",
        }
    with pytest.raises(ConfigurationError):
        ServiceSpec(name="rc", storage_uri=URI, mode="Knative-ish")


def test_stock_huggingface_runtime_example_is_valid(crds_dir):
    from pathlib import Path

    import yaml

    path = (
        Path(__file__).resolve().parents[2]
        / "manifests"
        / "examples"
        / "huggingface-runtime-inferenceservice.yaml"
    )
    isvc = yaml.safe_load(path.read_text())
    jsonschema.validate(
        isvc, crd_schema(crds_dir, "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    )
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "huggingface"
    assert "--task=sequence_classification" in model["args"]
    # the same storage layout our registry step resolves for KServe
    assert model["storageUri"].startswith("s3://") and model["storageUri"].endswith(
        "/artifacts/artifacts/model"
    )
    assert model["resources"]["requests"] == model["resources"]["limits"]


# ---- where the checks go (issue #25, 1) --------------------------------------------------------
def test_canary_is_checked_at_the_cluster_local_address_of_its_tag_by_default():
    api, checks, promoted = FakeKServe(), [], []
    _deploy(api, "s3://b/v1", "1", checks, promoted)
    _deploy(api, "s3://b/v2", "2", checks, promoted)
    # Knative's tag Service in the namespace, never the external domain (no DNS in a cluster)
    assert checks == [LATEST_LOCAL, LATEST_LOCAL]


def test_external_address_uses_the_status_urls_as_written():
    api, checks, promoted = FakeKServe(), [], []
    _deploy(api, "s3://b/v1", "1", checks, promoted, address="external")
    assert checks == [LATEST_EXTERNAL]


def test_gateway_address_sends_the_external_host_in_the_host_header():
    api, checks, promoted = FakeKServe(), [], []
    gateway = "http://istio-ingressgateway.istio-system.svc.cluster.local"
    _deploy(api, "s3://b/v1", "1", checks, promoted, address="gateway", gateway_url=gateway + "/")
    assert checks == [(gateway, f"latest-rc-predictor.{NS}.example.com")]


def test_a_custom_tag_template_names_the_tag_service():
    api, checks, promoted = FakeKServe(), [], []
    _deploy(api, "s3://b/v1", "1", checks, promoted, tag_template="{{.Name}}-{{.Tag}}")
    assert checks == [f"http://rc-predictor-latest.{NS}.svc.cluster.local"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"address": "internal"}, "address 'internal' is not one of: cluster-local, external"),
        ({"address": "gateway"}, "address 'gateway' needs gateway_url"),
        ({"gateway_url": "http://gw"}, "only used with address 'gateway'"),
        ({"tag_template": "{{.Name}}"}, "has no {{.Tag}}"),
    ],
)
def test_bad_address_choices_fail_with_one_line(kw, message):
    with pytest.raises(ConfigurationError, match=message) as err:
        ServiceSpec(name="rc", storage_uri=URI, **kw)
    assert "\n" not in str(err.value)


def test_held_set_check_sends_the_host_header(monkeypatch):
    import io
    import json
    import urllib.request

    from components.deploy import checks

    sent = []

    def urlopen(request, timeout):
        sent.append((request.full_url, request.get_header("Host")))
        return io.BytesIO(json.dumps({"predictions": [{"star_rating": 5, "label": "5"}]}).encode())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    held = [{"text": "great", "label": "5"}]
    result = checks.held_set_check("http://gw/v1/models/rc:predict", held, host="rc.example.com")
    assert result == {"agreement": 1.0, "answered": 1}
    assert sent == [("http://gw/v1/models/rc:predict", "rc.example.com")]


# ---- a rejected model is never promoted untested (issue #25, 2) ---------------------------------
def test_a_rolled_back_version_deployed_again_is_tested_again_before_promotion():
    api, core, checks, promoted = FakeKServe(), FakeCore(), [], []
    _deploy(api, "s3://b/v1", "1", checks, promoted, core=core)

    def disagree(url):
        raise PlatformError("agrees on 3 of 16")

    with pytest.raises(PlatformError, match="canary rolled back"):
        _deploy(api, "s3://b/v2", "2", checks, promoted, answer=disagree, core=core)
    record = core.maps[(NS, "rc-rollout")]["data"]
    assert record["rejected-storage-uri"] == "s3://b/v2" and record["rejected-version"] == "2"
    assert record["promoted-storage-uri"] == "s3://b/v1"
    # the same version again: still wrong -> rolled back again, never at 100%, never champion
    with pytest.raises(PlatformError, match="re-test failed, rolled back"):
        _deploy(api, "s3://b/v2", "2", checks, promoted, answer=disagree, core=core)
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert promoted == ["1"] and checks == [LATEST_LOCAL] * 3
    # the canary went back to 10% of the traffic for the re-test, with no new revision
    assert {"spec": {"predictor": {"canaryTrafficPercent": 10}}} in api.patches
    assert len(api.model.revisions) == 2
    # fixed (say, a transient failure): tested once more, then promoted
    result = _deploy(api, "s3://b/v2", "2", checks, promoted, core=core)
    assert result.action == "retested" and result.revision == "rc-predictor-00002"
    assert promoted == ["1", "2"] and len(checks) == 4
    record = core.maps[(NS, "rc-rollout")]["data"]
    assert record["promoted-storage-uri"] == "s3://b/v2" and "rejected-storage-uri" not in record
    # promoted and recorded: a third run changes nothing and tests nothing
    assert _deploy(api, "s3://b/v2", "2", checks, promoted, core=core).action == "unchanged"
    assert len(checks) == 4


def test_a_failed_first_create_is_not_promoted_by_the_next_run():
    api, core, checks, promoted = FakeKServe(), FakeCore(), [], []

    def disagree(url):
        raise PlatformError("agrees on 0 of 16")

    with pytest.raises(PlatformError, match="revision rc-predictor-00001"):
        _deploy(api, "s3://b/v1", "1", checks, promoted, answer=disagree, core=core)
    assert core.maps[(NS, "rc-rollout")]["data"]["rejected-storage-uri"] == "s3://b/v1"
    with pytest.raises(PlatformError, match="re-test failed"):
        _deploy(api, "s3://b/v1", "1", checks, promoted, answer=disagree, core=core)
    assert promoted == [] and len(checks) == 2


def test_another_variant_of_the_promoted_version_rolls_out_through_the_canary():
    api, core, checks, promoted = FakeKServe(), FakeCore(), [], []
    _deploy(api, "s3://b/v1", "1", checks, promoted, core=core, variant="onnx-int8")
    assert _deploy(api, "s3://b/v1", "1", checks, promoted, core=core,
                   variant="onnx-int8").action == "unchanged"  # fmt: skip
    # pinned to another variant (or a GPU target): a new revision, tested, then promoted
    result = _deploy(api, "s3://b/v1", "1", checks, promoted, core=core, variant="onnx-fp32")
    assert result.action == "promoted" and result.revision == "rc-predictor-00002"
    assert api.obj["metadata"]["annotations"]["review-classifier/variant"] == "onnx-fp32"
    env = api.obj["spec"]["predictor"]["model"]["env"]
    assert {"name": "REVIEW_CLASSIFIER_VARIANT", "value": "onnx-fp32"} in env
    assert core.maps[(NS, "rc-rollout")]["data"]["promoted-variant"] == "onnx-fp32"
    assert len(checks) == 2 and promoted == ["1", "1", "1"]  # the unchanged run re-promotes


def test_without_a_record_an_unchanged_spec_is_always_tested():
    api, checks, promoted = FakeKServe(), [], []
    _deploy(api, "s3://b/v1", "1", checks, promoted)
    assert _deploy(api, "s3://b/v1", "1", checks, promoted).action == "retested"
    assert checks == [LATEST_LOCAL] * 2


# ---- RawDeployment scaling and shutdown (issue #25, 4 and 5) -------------------------------------
def test_raw_deployment_scales_on_cpu_utilization_and_validates(crds_dir):
    schema = crd_schema(crds_dir, "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    raw = build_inference_service(ServiceSpec(name="rc", storage_uri=URI, mode="RawDeployment"))
    jsonschema.validate(raw, schema)
    p = raw["spec"]["predictor"]
    assert (p["scaleMetric"], p["scaleTarget"]) == ("cpu", 80)
    knative = build_inference_service(ServiceSpec(name="rc", storage_uri=URI))["spec"]["predictor"]
    assert (knative["scaleMetric"], knative["scaleTarget"]) == ("concurrency", 32)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"mode": "RawDeployment", "scale_metric": "concurrency"}, "a Knative metric"),
        ({"mode": "RawDeployment", "scale_metric": "rps"}, "a Knative metric"),
        ({"scale_metric": "latency"}, "scale metric 'latency' is not one of"),
        ({"mode": "RawDeployment", "scale_target": 150}, "not a utilization 1-100"),
        ({"drain_seconds": 0}, "drain_seconds 0 must be >= 1"),
    ],
)
def test_bad_scaling_and_shutdown_settings_fail_with_one_line(kw, message):
    with pytest.raises(ConfigurationError, match=message) as err:
        ServiceSpec(name="rc", storage_uri=URI, **kw)
    assert "\n" not in str(err.value)


def test_raw_predictor_waits_for_endpoint_removal_then_drains_within_its_grace_period(crds_dir):
    spec = ServiceSpec(name="rc", storage_uri=URI, mode="RawDeployment", drain_seconds=25,
                       prestop_seconds=12)  # fmt: skip
    isvc = build_inference_service(spec)
    jsonschema.validate(
        isvc, crd_schema(crds_dir, "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    )
    p = isvc["spec"]["predictor"]
    command = p["model"]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "python"  # the image's own python: no shell assumed
    assert "time.sleep(12)" in command[-1]
    assert {"name": "REVIEW_CLASSIFIER_DRAIN_SECONDS", "value": "25"} in p["model"]["env"]
    assert p["terminationGracePeriodSeconds"] > 12 + 25
    # Knative rejects lifecycle hooks; its queue-proxy drains a Serverless pod
    serverless = build_inference_service(ServiceSpec(name="rc", storage_uri=URI))
    assert "lifecycle" not in serverless["spec"]["predictor"]["model"]
    assert "terminationGracePeriodSeconds" not in serverless["spec"]["predictor"]
