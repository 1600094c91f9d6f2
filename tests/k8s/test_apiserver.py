"""Against a real kube-apiserver: server-side dry-run of everything, `make deploy`'s script, and
the deploy step's and the PyTorchJob launcher's Kubernetes code, with the test as controller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import yaml

from components.common.errors import PlatformError
from tests.k8s.conftest import NAMESPACE, ROOT, cluster_spec_2x4, run, tool


def dry_run(apiserver, objs: list[dict]):
    return apiserver.kubectl("apply", "--dry-run=server", "-f", "-",
                             stdin=yaml.safe_dump_all(as_1_20(objs)), check=False)  # fmt: skip


def as_1_20(objs: list[dict]) -> list[dict]:
    """The test's v1.20 server serves CronJob as batch/v1beta1 only (batch/v1 is 1.21+, with
    the same fields); every other object goes as rendered. The chart picks the version from the
    cluster's (.Capabilities.KubeVersion); the manifests name batch/v1, which EKS serves."""
    return [{**o, "apiVersion": "batch/v1beta1"} if (o["apiVersion"], o["kind"]) == (
        "batch/v1", "CronJob") else o for o in objs]  # fmt: skip


def test_server_side_dry_run_accepts_every_rendered_object(apiserver, rendered):
    for source, objs in rendered.items():
        proc = dry_run(apiserver, objs)
        assert proc.returncode == 0, f"{source}:\n{proc.stderr}"
        assert proc.stdout.count("(server dry run)") == len(objs), proc.stdout


@pytest.mark.parametrize(
    ("kind", "mutate", "message"),
    [
        ("InferenceService", lambda o: o["spec"]["predictor"].update(minReplicas="one"),
         "minReplicas"),
        ("PyTorchJob", lambda o: o["spec"].update(pytorchReplicaSpecs={"Master": {"replicas": "x"}}),
         "replicas"),
        ("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0]["resources"].update(
            requests={"cpu": "64", "memory": "1Gi"}), "must be less than or equal to cpu limit"),
        ("NetworkPolicy", lambda o: o["spec"].update(policyTypes=["Sideways"]), "policyTypes"),
    ],
)  # fmt: skip
def test_server_side_dry_run_rejects_broken_objects(apiserver, rendered, kind, mutate, message):
    import copy

    obj = copy.deepcopy(next(o for objs in rendered.values() for o in objs if o["kind"] == kind))
    mutate(obj)
    proc = dry_run(apiserver, [obj])
    assert proc.returncode != 0
    assert message in proc.stderr


def test_deploy_script_installs_the_local_overlay_and_the_mlflow_chart(apiserver, tmp_path):
    env = {"KUBECONFIG": str(apiserver.kubeconfig), "KUBECTL": tool("kubectl"),
           "HELM": tool("helm"), "OVERLAY": "local", "IMAGE_REGISTRY": "localhost:5001",
           "IMAGE_TAG": "abc123", "DEPLOY_BUILD_DIR": str(tmp_path / "deploy")}  # fmt: skip
    out = run("bash", "tools/k8s/deploy.sh", env=env).stdout
    assert "4/4 next" in out
    runtime = yaml.safe_load(
        apiserver.kubectl(
            "-n", NAMESPACE, "get", "servingruntime", "review-classifier", "-o", "yaml"
        ).stdout
    )
    assert runtime["spec"]["containers"][0]["image"] == "localhost:5001/serve:abc123"
    mlflow = yaml.safe_load(apiserver.kubectl(
        "-n", NAMESPACE, "get", "deployment", "mlflow", "-o", "yaml").stdout)  # fmt: skip
    assert mlflow["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "localhost:5001/mlflow:abc123"
    )
    s3 = apiserver.kubectl("-n", NAMESPACE, "get", "service", "s3", "-o", "name").stdout
    assert s3.strip() == "service/s3"
    # a second deploy is an upgrade, not an error
    run("bash", "tools/k8s/deploy.sh", env=env)


@pytest.fixture(scope="module")
def pipeline_api(apiserver, rendered):
    """CustomObjectsApi and CoreV1Api as the pipeline's service account (its RBAC, not admin's)."""
    from kubernetes import client

    objs = [o for o in rendered["manifests/overlays/eks"]
            if o["kind"] in ("ServiceAccount", "Role", "RoleBinding")]  # fmt: skip
    apiserver.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objs))
    core = client.CoreV1Api(apiserver.api_client())
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["https://kubernetes.default.svc"])
    )
    token = core.create_namespaced_service_account_token(
        "review-classifier-pipeline", "kubeflow", request
    ).status.token
    api_client = apiserver.api_client(token)
    return client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)


def test_pipeline_service_account_is_least_privilege(pipeline_api):
    from kubernetes.client.exceptions import ApiException

    custom, core = pipeline_api
    custom.list_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                         "inferenceservices")  # fmt: skip
    forbidden = [
        lambda: core.list_namespaced_secret(NAMESPACE),
        lambda: core.create_namespaced_pod(NAMESPACE, {"metadata": {"name": "x"}, "spec": {
            "containers": [{"name": "x", "image": "busybox:1.36"}]}}),  # fmt: skip
        lambda: custom.delete_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", "anything"),
        lambda: custom.list_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", "default", "inferenceservices"),
    ]  # fmt: skip
    for call in forbidden:
        with pytest.raises(ApiException) as info:
            call()
        assert info.value.status == 403


class Controller:
    """Plays KServe's / the Training Operator's part: writes status when the test says so."""

    def __init__(self, apiserver, group: str, version: str, plural: str) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(apiserver.api_client())
        self.args = (group, version, NAMESPACE, plural)

    def get(self, name: str) -> dict:
        return self.api.get_namespaced_custom_object(*self.args, name)

    def wait_for(self, name: str, test: Callable[[dict], bool], timeout: float = 30) -> dict:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                obj = self.get(name)
                if test(obj):
                    return obj
            except ApiException as e:
                if e.status != 404:
                    raise
            time.sleep(0.1)
        raise AssertionError(f"{name} never satisfied the condition")

    def set_status(self, name: str, status: dict) -> None:
        self.api.patch_namespaced_custom_object_status(*self.args, name, {"status": status})


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except Exception as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


class KServeLoop:
    """Plays KServe's reconcile loop on the real API server: reads the InferenceService, writes
    the status its model (tests/cluster/kserve.py) gives, a reconcile every 0.2 s."""

    def __init__(self, apiserver, name: str, healthy: dict) -> None:
        from tests.cluster.kserve import KServeModel

        self.ctl = Controller(apiserver, "serving.kserve.io", "v1beta1", "inferenceservices")
        self.model = KServeModel(name, NAMESPACE, healthy=healthy)
        self.name, self.stop = name, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        while not self.stop.is_set():
            try:
                obj = self.ctl.get(self.name)
            except ApiException:
                time.sleep(0.05)
                continue
            self.model.observe(obj)
            obj["status"] = self.model.tick()
            self.ctl.api.replace_namespaced_custom_object_status(*self.ctl.args, self.name, obj)
            time.sleep(0.2)


def test_rollout_creates_canaries_promotes_and_rolls_back(apiserver, pipeline_api):
    """With the pipeline's own rights: create, canary + promote, a failing revision, a wrong
    answer; KServe's status in its real order (the stale Ready first after each patch)."""
    from components.deploy.inferenceservice import Rollout, ServiceSpec

    custom, _ = pipeline_api
    name = "rc-rollout"
    kserve = KServeLoop(apiserver, name, healthy={"s3://models/v3": False})
    rollout = Rollout(custom, poll_s=0.05, timeout_s=30)
    checked, promoted = [], []

    def deploy(version: str, wrong: bool = False):
        def check(url):
            checked.append((version, url))
            if wrong:
                raise PlatformError("agrees on 2 of 16 held-out reviews")

        spec = ServiceSpec(name=name, storage_uri=f"s3://models/v{version}", gpus=0,
                           canary_percent=20, model_version=version)  # fmt: skip
        return rollout.run(spec, check=check, on_promote=lambda: promoted.append(version))

    try:
        assert deploy("1").revision == f"{name}-predictor-00001"
        result = deploy("2")
        assert (result.action, result.revision) == ("promoted", f"{name}-predictor-00002")
        # Knative's cluster-local tag Service, not the external domain
        assert checked[-1] == ("2", f"http://latest-{name}-predictor.{NAMESPACE}.svc.cluster.local")
        obj = kserve.ctl.get(name)
        assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
        assert obj["status"]["components"]["predictor"]["latestRolledoutRevision"] == (
            f"{name}-predictor-00002"
        )
        with pytest.raises(PlatformError, match="revision rc-rollout-predictor-00003 failed: "
                           ".*RevisionFailed"):  # fmt: skip
            deploy("3")
        assert kserve.ctl.get(name)["spec"]["predictor"]["canaryTrafficPercent"] == 0
        with pytest.raises(PlatformError, match="rolled back: revision rc-rollout-predictor-00004"):
            deploy("4", wrong=True)
        assert promoted == ["1", "2"]  # the alias stayed on version 2
        # KServe's rollback pinned all traffic to the last rolled-out revision, no new revision
        pinned = kserve.ctl.wait_for(name, lambda o: {
            t["revisionName"]: t["percent"]
            for t in o["status"]["components"]["predictor"]["traffic"]
        }.get(f"{name}-predictor-00002") == 100)  # fmt: skip
        assert pinned["status"]["components"]["predictor"]["latestCreatedRevision"] == (
            f"{name}-predictor-00004"
        )
    finally:
        kserve.stop.set()


@pytest.mark.parametrize(
    ("launcher", "condition", "reason", "message"),
    [("pytorchjob", "Succeeded", "PyTorchJobSucceeded",
      "PyTorchJob rc-train-2x4 is successfully completed."),
     ("pytorchjob", "Failed", "PyTorchJobFailed",
      "PyTorchJob rc-train-2x4 is failed because 1 Worker replica(s) failed."),
     ("trainjob", "Complete", "AllJobsCompleted", "jobset completed successfully"),
     ("trainjob", "Failed", "FailedJobs", "jobset failed due to one or more job failures "
      "(first failed job: rc-train-2x4-node-0)")],
)  # fmt: skip
def test_launchers_follow_their_job_with_the_pipelines_rights(apiserver, pipeline_api, launcher,
                                                             condition, reason, message):  # fmt: skip
    """Create, watch to the end, delete on success, with the pipeline's Role (not admin)."""
    from components.train.cluster import JobRunner, kind_for

    custom, core = pipeline_api
    kind = kind_for(launcher)
    operator = Controller(apiserver, kind.group, kind.version, kind.plural)
    job = kind.render(cluster_spec_2x4())
    name = job["metadata"]["name"]
    runner = JobRunner(kind, custom, core, timeout_s=30)
    thread, box = _in_thread(lambda: runner.run(job))
    operator.wait_for(name, lambda o: True)
    operator.set_status(name, {"conditions": [
        {"type": condition, "status": "True", "reason": reason, "message": message,
         "lastTransitionTime": "2026-12-01T00:00:00Z"}]})  # fmt: skip
    thread.join(30)
    if condition == "Failed":
        assert isinstance(box.get("error"), PlatformError), box
        assert f"{reason}: {message}" in str(box["error"])
        operator.api.delete_namespaced_custom_object(*operator.args, name)
    else:
        assert box.get("result") == f"{reason}: {message}", box
        gone = operator.api.list_namespaced_custom_object(*operator.args)["items"]
        assert name not in [o["metadata"]["name"] for o in gone]  # deleted on success


@pytest.mark.parametrize("template", ["pytorchjob-template.yaml", "trainjob-template.yaml"])
def test_training_job_manifest_templates_are_accepted_as_is(apiserver, template):
    text = (ROOT / "manifests" / "base" / template).read_text()
    proc = apiserver.kubectl("apply", "--dry-run=server", "-f", "-", stdin=text, check=False)
    assert proc.returncode == 0, proc.stderr
