import jsonschema
import pytest

from components.common.errors import PlatformError
from components.deploy.inferenceservice import Rollout, ServiceSpec, build_inference_service
from tests.conftest import crd_schema

URI = "s3://mlflow-artifacts/1/models/m-abc/artifacts/artifacts/model"


def test_inference_service_validates_against_the_kserve_crd(crds_dir):
    spec = ServiceSpec(name="review-classifier", storage_uri=URI, gpus=1, min_replicas=2,
                       max_replicas=6, scale_target=16, canary_percent=10, model_version="3")  # fmt: skip
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


def test_models_uris_are_rejected():
    with pytest.raises(PlatformError, match="storageUri"):
        build_inference_service(ServiceSpec(name="x", storage_uri="models:/review-classifier/1"))


class FakeApi:
    """Stands in for CustomObjectsApi; the test plays the KServe controller."""

    def __init__(self, existing=None, conditions=None):
        self.obj = existing
        self.conditions = conditions or [[{"type": "Ready", "status": "True"}]]
        self.patches = []

    def get_namespaced_custom_object(self, *args):
        if self.obj is None:
            raise type("ApiException", (Exception,), {"status": 404})()
        status = self.conditions.pop(0) if len(self.conditions) > 1 else self.conditions[0]
        return {**self.obj, "status": {"conditions": status, "url": "http://rc.example.com"}}

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        self.obj = body

    def patch_namespaced_custom_object(self, group, version, ns, plural, name, body):
        self.patches.append(body)


def test_first_rollout_creates_and_promotes():
    api, promoted = FakeApi(), []
    result = Rollout(api, poll_s=0).run(ServiceSpec(name="rc", storage_uri=URI),
                                        smoke=lambda url: None, on_promote=lambda: promoted.append(1))  # fmt: skip
    assert result.action == "created" and promoted == [1] and api.patches == []


def test_canary_then_full_traffic():
    old = build_inference_service(ServiceSpec(name="rc", storage_uri="s3://b/old"))
    api = FakeApi(existing=old)
    result = Rollout(api, poll_s=0).run(ServiceSpec(name="rc", storage_uri=URI, canary_percent=20),
                                        smoke=lambda url: None)  # fmt: skip
    assert result.action == "promoted"
    assert api.patches[0]["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert api.patches[-1] == {"spec": {"predictor": {"canaryTrafficPercent": 100}}}


def test_failed_canary_rolls_back_with_the_reason():
    old = build_inference_service(ServiceSpec(name="rc", storage_uri="s3://b/old"))
    failed = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "RevisionFailed",
            "message": "CrashLoopBackOff",
        }
    ]
    api = FakeApi(existing=old, conditions=[failed])
    promoted = []
    with pytest.raises(PlatformError, match="canary rolled back: .*CrashLoopBackOff"):
        Rollout(api, poll_s=0).run(ServiceSpec(name="rc", storage_uri=URI), smoke=lambda url: None,
                                   on_promote=lambda: promoted.append(1))  # fmt: skip
    assert api.patches[-1]["spec"]["predictor"]["model"]["storageUri"] == "s3://b/old"
    assert promoted == []


def test_failed_smoke_request_rolls_back():
    old = build_inference_service(ServiceSpec(name="rc", storage_uri="s3://b/old"))
    api = FakeApi(existing=old)

    def smoke(url):
        raise PlatformError("smoke request got no prediction")

    with pytest.raises(PlatformError, match="rolled back: smoke request"):
        Rollout(api, poll_s=0).run(ServiceSpec(name="rc", storage_uri=URI), smoke=smoke)
    assert api.patches[-1]["spec"]["predictor"]["canaryTrafficPercent"] == 100


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
