import jsonschema
import pytest

from components.common.errors import PlatformError
from components.train.pytorchjob import JobSpec, render_pytorchjob, submit_and_wait
from tests.conftest import crd_schema


def _job() -> dict:
    spec = JobSpec(
        name="train-run-7", image="123.dkr.ecr.us-east-1.amazonaws.com/rc/train:abc",
        train_args=["--data", "s3://b/runs/7/", "--output-dir", "s3://b/runs/7/model"],
        num_nodes=2, gpus_per_node=4, env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
    )  # fmt: skip
    return render_pytorchjob(spec)


def test_two_nodes_by_four_gpus(crds_dir):
    job = _job()
    jsonschema.validate(job, crd_schema(crds_dir, "kubeflow.org_pytorchjobs.yaml", "v1"))
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    assert job["spec"]["nprocPerNode"] == "4"
    for role in ("Master", "Worker"):
        pod = replicas[role]["template"]["spec"]
        c = pod["containers"][0]
        assert c["image"].endswith("/rc/train:abc")
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
        assert c["resources"]["requests"] == c["resources"]["limits"]
        assert c["command"] == ["python", "-m", "torch.distributed.run", "-m", "components.train"]
        assert c["args"][:2] == ["--data", "s3://b/runs/7/"]
        assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in c["env"]
        assert pod["serviceAccountName"] == "review-classifier-training"
        assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_one_node_is_not_a_pytorchjob():
    with pytest.raises(ValueError, match="num_nodes >= 2"):
        render_pytorchjob(JobSpec(name="x", image="i", train_args=[], num_nodes=1))


class FakeApi:
    """In-process stand-in for CustomObjectsApi: returns the scripted statuses in order."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.created = None

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        self.created = (group, version, ns, plural, body["metadata"]["name"])

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        return {"status": self.statuses.pop(0)}


def test_waits_for_success_and_fails_with_the_jobs_reason():
    running = {"conditions": [{"type": "Running", "status": "True"}]}
    done = {"conditions": [{"type": "Succeeded", "status": "True", "message": "all good"}]}
    api = FakeApi([running, done])
    assert submit_and_wait(_job(), api=api, poll_s=0) == "all good"
    assert api.created == ("kubeflow.org", "v1", "review-classifier", "pytorchjobs", "train-run-7")
    failed = {"conditions": [{"type": "Failed", "status": "True", "message": "OOMKilled"}]}
    with pytest.raises(PlatformError, match="failed: OOMKilled"):
        submit_and_wait(_job(), api=FakeApi([running, failed]), poll_s=0)
