"""The cluster as it runs us, in processes (tests/cluster), on a real kube-apiserver.

Training: the train component creates a TrainJob (or PyTorchJob); the harness plays Kubeflow
Trainer, JobSet and the kubelet, running each pod's container with its own command, env, user,
read-only root and private volumes; the pods train with gloo against the local S3 and MLflow.
Serving: the deploy step's rollout creates an InferenceService; the harness plays KServe,
Knative and the kubelet: the storage initializer fetches the registered version from S3, our
ServingRuntime's container serves it, the rollout tests it with held-out reviews.

About 5 minutes on 2 cores (two 2-node x 2-process trainings, a failing job, a probe pod, a
predictor pod).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from kfp.dsl import Artifact, Dataset, Metrics, Model

from components.common.errors import PlatformError
from components.common.storage import parse_s3_uri
from components.train.cluster import ClusterSpec, JobRunner, job_name, kind_for
from components.train.component import train
from tests.cluster.controllers import Cluster
from tests.k8s.conftest import NAMESPACE, apiserver, kustomize  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
IMAGE_REGISTRY, IMAGE_TAG = "registry.test/review-classifier", "c0ffee123456"
FAST = dict(model_name_or_path="scratch", batch_size=32, learning_rate=1e-3, num_layers=2,
            hidden_size=128, num_heads=2, max_seq_length=64)  # fmt: skip


@pytest.fixture(scope="module")
def cluster(apiserver, stack, settings, tmp_path_factory, monkeypatch_module):  # noqa: F811
    """The platform as `make deploy` applies it, the Trainer runtime, and the harness."""
    from kubernetes import client

    api = apiserver.api_client()
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    runtime = yaml.safe_load((ROOT / "tests/cluster/torch_distributed_runtime.yaml").read_text())
    custom.create_cluster_custom_object("trainer.kubeflow.org", "v1alpha1",
                                        "clustertrainingruntimes", runtime)  # fmt: skip
    # The EKS overlay's training service account (IRSA) and the ConfigMap of the training
    # namespace, with this stack's ports behind the same in-cluster service names.
    objs = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): o
            for o in kustomize("manifests/overlays/eks")}  # fmt: skip
    sa = objs[("ServiceAccount", "review-classifier-training", NAMESPACE)]
    core.create_namespaced_service_account(NAMESPACE, sa)
    cm = objs[("ConfigMap", "review-classifier-training-env", NAMESPACE)]
    s3_port = stack.s3_endpoint.rsplit(":", 1)[1]
    mlflow_port = stack.mlflow_uri.rsplit(":", 1)[1]
    cm["data"].update({
        "S3_ENDPOINT_URL": f"http://s3.{NAMESPACE}.svc.cluster.local:{s3_port}",
        # the local MLflow server accepts only its own host names (the chart sets
        # --allowed-hosts for the Service's); pods reach it on their loopback
        "MLFLOW_TRACKING_URI": f"http://localhost:{mlflow_port}",
        "MLFLOW_EXPERIMENT": "cluster-tests", "DATA_BUCKET": settings.data_bucket,
        "IMAGE_REGISTRY": IMAGE_REGISTRY, "IMAGE_TAG": IMAGE_TAG,
    })  # fmt: skip
    core.create_namespaced_config_map(NAMESPACE, cm)
    hosts = {f"s3.{NAMESPACE}.svc.cluster.local": "127.0.0.1"}
    # AWS STS for the IRSA web identity: the local S3 server (moto answers it too).
    extra = {"AWS_ENDPOINT_URL_STS": stack.s3_endpoint}
    # The component runs as in a KFP pod: the ConfigMap's settings, the cluster's API.
    monkeypatch_module.setenv("KUBECONFIG", str(apiserver.kubeconfig))
    monkeypatch_module.setenv("IMAGE_REGISTRY", IMAGE_REGISTRY)
    monkeypatch_module.setenv("IMAGE_TAG", IMAGE_TAG)
    harness = Cluster(api, tmp_path_factory.mktemp("pods"), NAMESPACE, hosts, extra,
                      image_check=f"{IMAGE_REGISTRY}/{{name}}:{IMAGE_TAG}").start()  # fmt: skip
    yield harness
    harness.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _component(splits: Path, out: Path, run_id: str, ckpt: str, **params) -> dict:
    """The KFP train component's own function, with artifacts as the KFP executor gives them."""
    model = Model(uri=str(out / "model"))
    metrics = Metrics(uri=str(out / "metrics"))
    outputs = train.python_func(
        train_data=Dataset(uri=str(splits / "train")),
        validation_data=Dataset(uri=str(splits / "validation")),
        ingest_stats=Artifact(uri=str(splits / "stats.json")), model=model, metrics=metrics,
        run_id=run_id, checkpoint_uri=ckpt, gpus_per_node=0, cpu_processes=2, **params,
    )  # fmt: skip
    return {"outputs": outputs, "metrics": metrics.metadata, "model": Path(model.path)}


def _api(apiserver):  # noqa: F811
    from kubernetes import client

    api = apiserver.api_client()
    return client.CustomObjectsApi(api), client.CoreV1Api(api)


@pytest.fixture(scope="module")
def trainjob_run(cluster, splits, settings, tmp_path_factory, apiserver):  # noqa: F811
    """num_nodes=2 x 2 gloo processes through a TrainJob; rank 0's pod is killed mid-run."""
    data, _ = splits
    out = tmp_path_factory.mktemp("trainjob")
    ckpt = f"s3://{settings.data_bucket}/tests/cluster-checkpoints"
    run_id = "cluster-tj"
    killed: dict = {}

    def kill_after_first_checkpoint() -> None:
        from components.common.storage import S3Storage

        storage, deadline = S3Storage(), time.monotonic() + 400
        while time.monotonic() < deadline and not killed:
            done = [o.key for o in storage.list_objects(f"{ckpt}/{run_id}/") if o.key.endswith("/COMPLETE") and "/step-" in o.key]  # fmt: skip
            rank0 = [n for n in cluster.pods if n.startswith(f"{job_name(run_id)}-node-0-0-")]
            if done and rank0:
                cluster.kill(rank0[0])
                killed.update(pod=rank0[0], after=sorted(done)[-1])
                return
            time.sleep(0.2)

    import threading

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    result = _component(data, out, run_id, ckpt, num_nodes=2, launcher="trainjob",
                        max_steps=40, checkpoint_every=10, job_policy="keep", **FAST)  # fmt: skip
    killer.join(timeout=5)
    return {**result, "killed": killed, "run_id": run_id}


def test_trainjob_trains_across_two_pods_and_the_component_reads_s3(trainjob_run, stack):
    results = json.loads((trainjob_run["model"] / "results.json").read_text())
    assert results["world_size"] == 4 and results["steps"] == 40
    assert trainjob_run["metrics"]["steps"] == 40
    assert (trainjob_run["model"] / "model.safetensors").exists()
    run = mlflow.MlflowClient(stack.mlflow_uri).get_run(results["mlflow_run_id"])
    assert run.data.params["world_size"] == "4"
    assert run.data.tags["code_version"] == IMAGE_TAG  # IMAGE_TAG reached the pods


def test_a_killed_pod_restarts_and_resumes_from_its_checkpoint(trainjob_run, apiserver):  # noqa: F811
    killed = trainjob_run["killed"]
    assert killed, "the first checkpoint never appeared"
    results = json.loads((trainjob_run["model"] / "results.json").read_text())
    # restartPolicy OnFailure (JobSet's default): the kubelet restarted the killed container,
    # the other node's torchrun failed with it and restarted too, both from the checkpoint.
    assert results["resumed_from_step"] is not None and results["resumed_from_step"] >= 10
    assert results["steps_this_attempt"] == 40 - results["resumed_from_step"]
    _, core = _api(apiserver)
    pod = core.read_namespaced_pod(killed["pod"], NAMESPACE)
    status = pod.status.container_statuses[0]
    assert status.restart_count >= 1 and status.last_state.terminated.exit_code != 0
    assert pod.spec.security_context.run_as_user == 10001


def test_trainjob_is_kept_complete_with_its_pods(trainjob_run, apiserver):  # noqa: F811
    custom, core = _api(apiserver)
    name = job_name(trainjob_run["run_id"])
    job = custom.get_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", NAMESPACE,
                                              "trainjobs", name)  # fmt: skip
    assert [c["type"] for c in job["status"]["conditions"]] == ["Complete"]
    pods = core.list_namespaced_pod(
        NAMESPACE, label_selector=f"jobset.sigs.k8s.io/jobset-name={name}"
    ).items
    assert len(pods) == 2 and {p.spec.hostname for p in pods} == {f"{name}-node-0-0",
                                                                  f"{name}-node-0-1"}  # fmt: skip
    env = {e.name: e for e in pods[0].spec.containers[0].env}
    assert env["MLFLOW_TRACKING_URI"].value_from.config_map_key_ref.name == (
        "review-classifier-training-env"
    )
    assert pods[0].spec.containers[0].image == f"{IMAGE_REGISTRY}/train:{IMAGE_TAG}"
    for arg in ("--data", "--output-dir", "--checkpoint-uri"):
        value = pods[0].spec.containers[0].args[pods[0].spec.containers[0].args.index(arg) + 1]
        assert value.startswith("s3://"), (arg, value)  # nothing pod-local crosses pods


def test_rank0_log_is_streamed_through_the_api(trainjob_run, apiserver, caplog):  # noqa: F811
    _, core = _api(apiserver)
    name = job_name(trainjob_run["run_id"])
    pod = core.list_namespaced_pod(
        NAMESPACE, label_selector=f"jobset.sigs.k8s.io/jobset-name={name},"
        "batch.kubernetes.io/job-completion-index=0"
    ).items[0]  # fmt: skip
    text = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, container="node")
    assert "training:" in text and "world 4" in text


def test_failed_pytorchjob_fails_the_component_with_the_jobs_reason(cluster, splits, settings,
                                                                    tmp_path, caplog):  # fmt: skip
    data, _ = splits
    empty = tmp_path / "empty"
    for split in ("train", "validation"):
        (empty / split).mkdir(parents=True)
    (empty / "stats.json").write_text((data / "stats.json").read_text())
    ckpt = f"s3://{settings.data_bucket}/tests/cluster-checkpoints"
    with caplog.at_level(logging.INFO), pytest.raises(PlatformError) as err:
        _component(empty, tmp_path, "cluster-ptj-fail", ckpt, num_nodes=2,
                   launcher="pytorchjob", max_steps=5, **FAST)  # fmt: skip
    message = str(err.value)
    assert "PyTorchJob review-classifier/train-cluster-ptj-fail failed" in message
    assert re.search(r"is failed because 1 (Master|Worker) replica\(s\) failed", message)
    # the failed pods' own exits, from their container statuses (runPolicy.backoffLimit 3)
    assert re.search(r"pod train-cluster-ptj-fail-(master|worker)-0: exit code 1 \(Error", message)
    assert "kubectl -n review-classifier describe pytorchjobs" in message


def test_pods_run_non_root_with_a_read_only_root_and_private_volumes(cluster, apiserver):  # noqa: F811
    """The rendered TrainJob's pod, its command swapped for a probe of what it may write."""
    probe = r"""
import json, os, pathlib, sys
out = {"uid": os.getuid(), "gid": os.getgid(), "writes": {}}
for path in ("/probe", "/etc/probe", sys.argv[1] + "/probe", "/tmp/probe", "/dev/shm/probe"):
    try:
        pathlib.Path(path).write_text("x"); out["writes"][path] = "ok"
    except OSError as e:
        out["writes"][path] = e.strerror
out["tmp"] = sorted(os.listdir("/tmp"))
print("PROBE " + json.dumps(out))
"""
    custom, core = _api(apiserver)
    kind = kind_for("trainjob")
    spec = ClusterSpec(name="probe-readonly", image=f"{IMAGE_REGISTRY}/train:{IMAGE_TAG}",
                       train_args=[], namespace=NAMESPACE, num_nodes=2, gpus_per_node=0)  # fmt: skip
    job = kind.render(spec)
    job["spec"]["trainer"].update(command=["python", "-c", probe], args=[str(ROOT)])
    JobRunner(kind, custom, core, policy="keep", timeout_s=120).run(job)
    pods = core.list_namespaced_pod(
        NAMESPACE, label_selector="jobset.sigs.k8s.io/jobset-name=probe-readonly"
    ).items
    for pod in pods:
        log = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, container="node")
        out = json.loads(log.split("PROBE ", 1)[1])
        assert (out["uid"], out["gid"]) == (10001, 10001)
        writes = out["writes"]
        assert writes["/tmp/probe"] == "ok" and writes["/dev/shm/probe"] == "ok"
        for path in ("/probe", "/etc/probe", f"{ROOT}/probe"):
            assert writes[path] == "Read-only file system", (path, writes)
        assert out["tmp"] == ["probe"]  # its own emptyDir: nothing of the host or other pods


def test_data_and_outputs_of_the_job_are_under_the_runs_prefix(trainjob_run, settings, storage):
    base = settings.run_uri(trainjob_run["run_id"]) + "train/"
    keys = {o.key for o in storage.list_objects(base)}
    prefix = parse_s3_uri(base).key
    assert f"{prefix}data/stats.json" in keys and f"{prefix}model/results.json" in keys


# ---- serving: the predictor pod as KServe runs it ---------------------------------------------
@pytest.fixture(scope="module")
def served(cluster, trained, splits, settings, storage, stack, apiserver):  # noqa: F811
    """A registered version's S3 copy served through an InferenceService the deploy step's
    Rollout creates: KServe's storage initializer, our ServingRuntime, the held-out check."""
    from kubernetes import client

    from components.common.inference import Classifier
    from components.deploy.checks import held_set_check, predict_url
    from components.deploy.inferenceservice import Rollout, ServiceSpec
    from components.evaluate.job import predict_probs, smoke_set

    custom, core = _api(apiserver)
    objs = {(o["kind"], o["metadata"]["name"]): o for o in kustomize("manifests/overlays/eks")}
    runtime = objs[("ServingRuntime", "review-classifier")]
    # the image `make deploy` sets (kustomize images), as the TrainJob's
    runtime["spec"]["containers"][0]["image"] = f"{IMAGE_REGISTRY}/serve:{IMAGE_TAG}"
    custom.create_namespaced_custom_object("serving.kserve.io", "v1alpha1", NAMESPACE,
                                           "servingruntimes", runtime)  # fmt: skip
    sa = objs[("ServiceAccount", "review-classifier-serving")]
    # KServe reads an S3-compatible endpoint from the service account (pkg/credentials/s3)
    sa["metadata"]["annotations"].update({
        "serving.kserve.io/s3-endpoint": f"s3.{NAMESPACE}.svc.cluster.local:"
        f"{stack.s3_endpoint.rsplit(':', 1)[1]}", "serving.kserve.io/s3-usehttps": "0"})  # fmt: skip
    client.CoreV1Api(apiserver.api_client()).create_namespaced_service_account(NAMESPACE, sa)
    uri = f"s3://{settings.data_bucket}/tests/registered/7/artifacts/model"
    storage.upload_dir(trained["model_dir"], uri + "/")
    import pandas as pd

    test = pd.read_parquet(splits[0] / "test")
    texts, y = test["review_body"].tolist()[:200], test["label"].to_numpy()[:200]
    model = Classifier(trained["model_dir"])
    held = smoke_set(texts, y, predict_probs(model, texts, 32), model.labels)
    name, checked, promoted = "rc-serve", [], []
    spec = ServiceSpec(name=name, storage_uri=uri, gpus=0, cpu="1", memory="2Gi",
                       model_version="7")  # fmt: skip

    def check(url):
        checked.append(url)
        return held_set_check(predict_url(url, name), held)

    result = Rollout(custom, poll_s=0.3, timeout_s=240).run(
        spec, check=check, on_promote=lambda: promoted.append("7")
    )
    return {"result": result, "checked": checked, "promoted": promoted, "uri": uri,
            "name": name, "held": held}  # fmt: skip


def test_the_rollout_tested_the_new_revision_with_held_out_reviews(served):
    assert served["result"].revision == "rc-serve-predictor-00001"
    assert served["promoted"] == ["7"] and len(served["checked"]) == 1
    assert len(served["held"]) == 16 and len({row["text"] for row in served["held"]}) == 16


def test_predictor_pod_serves_the_registered_bytes_non_root_read_only(served, cluster, storage,
                                                                      apiserver):  # noqa: F811  # fmt: skip
    import hashlib

    from components.common.storage import parse_s3_uri

    run = cluster.revision_pods[served["result"].revision]
    pod = _api(apiserver)[1].read_namespaced_pod(run.name, NAMESPACE)
    (init,) = pod.spec.init_containers
    assert init.name == "storage-initializer" and init.args == [served["uri"], "/mnt/models"]
    main = pod.spec.containers[0]
    assert f"--model_name={served['name']}" in main.args  # {{.Name}} rendered
    assert any(m.mount_path == "/mnt/models" and m.read_only for m in main.volume_mounts)
    assert (
        main.security_context.read_only_root_filesystem
        and main.security_context.run_as_user == 10001
    )
    served_dir = run.workdir / "volumes" / "kserve-provision-location"
    prefix = parse_s3_uri(served["uri"] + "/").key
    objects = storage.list_objects(served["uri"] + "/")
    assert objects
    for obj in objects:
        local = served_dir / obj.key[len(prefix) :]
        want = hashlib.sha256(
            storage.get_bytes(f"s3://{parse_s3_uri(served['uri']).bucket}/{obj.key}")
        )
        assert hashlib.sha256(local.read_bytes()).hexdigest() == want.hexdigest(), obj.key


def test_predictor_pod_answers_v1_v2_and_metrics(served, cluster):
    import urllib.request

    base = f"http://{cluster.revision_pods[served['result'].revision].ip}:8080"
    name = served["name"]
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                   "data": ["Broke after a day, waste of money."]}]}).encode()  # fmt: skip
    req = urllib.request.Request(f"{base}/v2/models/{name}/infer", body,
                                 {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (the pod)
        answer = json.loads(r.read())
    assert answer["model_name"] == name and answer["outputs"]
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:  # noqa: S310
        assert r.status == 200 and b"# TYPE" in r.read()
    bad = urllib.request.Request(f"{base}/v1/models/{name}:predict", b'{"instances": [42]}',
                                 {"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=30)  # noqa: S310
    assert err.value.code == 400


def test_the_charts_rendering_serves_and_its_helm_test_passes(served, cluster, settings, apiserver,  # noqa: F811
                                                              tmp_path):  # fmt: skip
    """`helm install` of charts/review-classifier with the same registered version, then its
    `helm test` hook pod, both run by the harness."""
    import subprocess

    from tests.k8s.conftest import load_all, tool

    custom, core = _api(apiserver)
    # one predictor at a time here (pods share the host's network): the first one goes
    custom.delete_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                           "inferenceservices", served["name"])  # fmt: skip
    deadline = time.monotonic() + 30
    while served["result"].revision in cluster.revision_pods and time.monotonic() < deadline:
        time.sleep(0.2)
    rendered = load_all(subprocess.run(
        [tool("helm"), "template", "rc", "charts/review-classifier", "--namespace", NAMESPACE,
         "--set", f"storageUri={served['uri']}", "--set", "gpus=0",
         "--set", f"image.repository={IMAGE_REGISTRY}/serve", "--set", f"image.tag={IMAGE_TAG}",
         "--set", "serviceAccount.create=false",
         "--set", "serviceAccount.name=review-classifier-serving"],
        capture_output=True, text=True, check=True, cwd=ROOT).stdout)  # fmt: skip
    by_kind = {o["kind"]: o for o in rendered}
    custom.create_namespaced_custom_object("serving.kserve.io", "v1alpha1", NAMESPACE,
                                           "servingruntimes", by_kind["ServingRuntime"])  # fmt: skip
    isvc = by_kind["InferenceService"]
    custom.create_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                           "inferenceservices", isvc)  # fmt: skip
    name = isvc["metadata"]["name"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        obj = custom.get_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                                  "inferenceservices", name)  # fmt: skip
        if any(c["type"] == "Ready" and c["status"] == "True"
               for c in (obj.get("status") or {}).get("conditions", [])):  # fmt: skip
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"{name} never became Ready: {obj.get('status')}")
    hook = by_kind["Pod"]  # what `helm test rc` creates
    core.create_namespaced_pod(NAMESPACE, hook)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        phase = core.read_namespaced_pod(hook["metadata"]["name"], NAMESPACE).status.phase
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(0.5)
    log = core.read_namespaced_pod_log(hook["metadata"]["name"], NAMESPACE)
    assert phase == "Succeeded", log
    assert "star_rating" in log and f"{name}-predictor.{NAMESPACE}.svc.cluster.local" in log
