"""The two multi-node launchers' objects against their upstream CRDs, and the job runner's
decisions (create, adopt, recreate, clean up) with an in-process API stand-in."""

import jsonschema
import pytest

from components.common.errors import ConfigurationError, PlatformError
from components.train.cluster import ClusterSpec, JobRunner, job_name, kind_for
from components.train.pytorchjob import render_pytorchjob
from components.train.trainjob import render_trainjob
from tests.conftest import crd_schema

IMAGE = "123.dkr.ecr.us-east-1.amazonaws.com/rc/train:abc"
ARGS = ["--data", "s3://b/runs/7/train/data/", "--output-dir", "s3://b/runs/7/train/model/"]


def _spec(**kw) -> ClusterSpec:
    return ClusterSpec(**{"name": "train-run-7", "image": IMAGE, "train_args": ARGS,
                          "num_nodes": 2, "procs_per_node": 4, "gpus_per_node": 4, **kw})  # fmt: skip


def test_trainjob_two_nodes_by_four_gpus(crds_dir):
    job = render_trainjob(_spec())
    jsonschema.validate(
        job, crd_schema(crds_dir, "trainer.kubeflow.org_trainjobs.yaml", "v1alpha1")
    )
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["image"] == IMAGE and trainer["args"] == ARGS
    assert trainer["command"][:3] == ["python", "-m", "torch.distributed.run"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    env = {e["name"]: e for e in trainer["env"]}
    ref = env["MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"]
    assert ref == {"name": "review-classifier-training-env", "key": "MLFLOW_TRACKING_URI",
                   "optional": True}  # fmt: skip
    assert "IMAGE_TAG" in env and not any(k.startswith("PET_") for k in env)  # the plugin's
    (patch,) = job["spec"]["runtimePatches"]
    pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]
    pod = pod["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "review-classifier-training"
    assert pod["containers"][0]["name"] == "node" and "env" not in pod["containers"][0]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_pytorchjob_two_nodes_by_four_gpus(crds_dir):
    job = render_pytorchjob(_spec())
    jsonschema.validate(job, crd_schema(crds_dir, "kubeflow.org_pytorchjobs.yaml", "v1"))
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    assert job["spec"]["nprocPerNode"] == "4"
    for role in ("Master", "Worker"):
        c = replicas[role]["template"]["spec"]["containers"][0]
        assert c["image"] == IMAGE and c["args"] == ARGS
        assert c["envFrom"] == [{"configMapRef": {"name": "review-classifier-training-env",
                                                  "optional": True}}]  # fmt: skip
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_cpu_nodes_get_no_gpu_scheduling_and_bad_specs_are_refused(crds_dir):
    job = render_trainjob(_spec(gpus_per_node=0, procs_per_node=2))
    assert "nvidia.com/gpu" not in job["spec"]["trainer"]["resourcesPerNode"]["limits"]
    with pytest.raises(ConfigurationError, match="num_nodes >= 2"):
        _spec(num_nodes=1)
    with pytest.raises(ConfigurationError, match="train image"):
        _spec(image="")
    with pytest.raises(ConfigurationError, match="launcher 'mpi'"):
        kind_for("mpi")


def test_job_names_are_dns_labels_of_bounded_length():
    assert job_name("Review_Classifier-2026") == "train-review-classifier-2026"
    long = job_name("review-classifier-" + "x" * 80)
    assert len(long) <= 40 and long != job_name("review-classifier-" + "y" * 80)


class FakeApi:
    """CustomObjectsApi stand-in: scripted objects; the watch is replaced by get()."""

    def __init__(self, existing=None, statuses=()):
        self.existing, self.statuses = existing, list(statuses)
        self.calls = []

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        from kubernetes.client.exceptions import ApiException

        self.calls.append(("create", body["metadata"]["name"]))
        if self.existing is not None:
            self.existing, body = None, self.existing
            raise ApiException(status=409, reason="AlreadyExists")
        return body

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        self.calls.append(("get", name))
        return self._current

    def delete_namespaced_custom_object(self, group, version, ns, plural, name, **kw):
        self.calls.append(("delete", name))


def _runner(api, policy="delete-on-success"):
    runner = JobRunner(kind_for("trainjob"), api, None, policy)
    # one scripted status per follow, in place of the watch stream
    runner._follow = lambda current, what: runner.kind.terminal({"status": api.statuses.pop(0)})
    return runner


COMPLETE = {"conditions": [{"type": "Complete", "status": "True", "reason": "AllJobsCompleted",
                            "message": "jobset completed successfully"}]}  # fmt: skip
FAILED = {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs",
                          "message": "jobset failed due to one or more job failures"}]}  # fmt: skip


def test_success_deletes_the_job_by_default_and_keep_keeps_it():
    job = render_trainjob(_spec())
    api = FakeApi(statuses=[COMPLETE])
    assert _runner(api).run(job) == "AllJobsCompleted: jobset completed successfully"
    assert ("delete", "train-run-7") in api.calls
    api = FakeApi(statuses=[COMPLETE])
    _runner(api, "keep").run(job)
    assert ("delete", "train-run-7") not in api.calls


def test_failure_raises_with_the_jobs_reason_and_keeps_it_for_inspection():
    api = FakeApi(statuses=[FAILED])
    with pytest.raises(PlatformError, match="failed: FailedJobs: jobset failed .* kubectl -n "):
        _runner(api).run(render_trainjob(_spec()))
    assert ("delete", "train-run-7") not in api.calls


def test_a_retry_recreates_its_failed_job_and_follows_a_running_one(monkeypatch):
    job = render_trainjob(_spec())
    api = FakeApi(existing=job, statuses=[COMPLETE])
    api._current = {**job, "status": FAILED}
    runner = _runner(api)
    monkeypatch.setattr(runner, "_delete", lambda *a, **k: api.calls.append(("delete", a[1])))
    runner.run(job)
    assert [c[0] for c in api.calls] == ["create", "get", "delete", "create", "delete"]
    api = FakeApi(existing=job, statuses=[COMPLETE])
    api._current = {**job, "status": {}}  # running: adopted, not recreated
    _runner(api).run(job)
    assert [c[0] for c in api.calls] == ["create", "get", "delete"]
