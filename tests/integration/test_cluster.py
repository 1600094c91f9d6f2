"""The cluster as it runs us, in processes (tests/cluster), on a real kube-apiserver.

Upstream code: kube-apiserver, kube-controller-manager (Deployment/ReplicaSet, garbage
collector, endpoints, service-account tokens, node lifecycle; the Job controller is off) and
kube-scheduler, v1.20.2. Played by the harness (each citing what it follows): the kubelet, the
pod network, cluster DNS and kube-proxy, Kubeflow Trainer + JobSet, the Training Operator,
KServe + Knative and KFP's driver/launcher. Every pod has its own network namespace and address
and sees only the cluster's DNS names; the KFP steps under test (the train launcher, the deploy
rollout) run as pods too, with the pipeline's own service account and RBAC.

With tests/k8s, about 7 minutes on 2 cores.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from components.common.errors import PlatformError
from components.common.storage import parse_s3_uri
from components.train.cluster import ClusterSpec, JobRunner, job_name, kind_for
from components.train.component import train
from tests.callers import KeepAliveCaller
from tests.cluster.control import start_controllers, stop_controllers
from tests.cluster.controllers import Cluster
from tests.cluster.kfp import CompiledPipeline, run_pod
from tests.cluster.proxy import Relay
from tests.k8s.conftest import NAMESPACE, apiserver, kustomize, tool  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
IMAGE_REGISTRY, IMAGE_TAG = "registry.test/review-classifier", "c0ffee123456"
FAST = dict(model_name_or_path="scratch", batch_size=32, learning_rate=1e-3, num_layers=2,
            hidden_size=128, num_heads=2, max_seq_length=64)  # fmt: skip
PIPELINE_SA, KFP_NS = "review-classifier-pipeline", "kubeflow"


def _api(apiserver):  # noqa: F811
    from kubernetes import client

    api = apiserver.api_client()
    return client.CustomObjectsApi(api), client.CoreV1Api(api)


def _host_service(core, network, name: str, port: int, host_port: int, relays: list) -> str:
    """A Service for a process outside the cluster (the local S3 and MLflow servers): a
    selectorless Service whose Endpoints are the node's address, relayed to the process."""
    core.create_namespaced_service(NAMESPACE, {"metadata": {"name": name},
                                               "spec": {"ports": [{"name": "http", "port": port}]}})  # fmt: skip
    core.create_namespaced_endpoints(NAMESPACE, {"metadata": {"name": name}, "subsets": [{
        "addresses": [{"ip": network.gateway}], "ports": [{"name": "http", "port": host_port}]}]})  # fmt: skip
    relays.append(Relay(network.gateway, host_port, lambda: ("127.0.0.1", host_port)))
    return f"http://{name}.{NAMESPACE}.svc.cluster.local:{port}"


@pytest.fixture(scope="module")
def cluster(apiserver, stack, settings, tmp_path_factory):  # noqa: F811
    """The platform as `make deploy` applies it (EKS overlay), the Trainer runtime, the cluster."""
    from kubernetes import client

    if apiserver.network is None:
        pytest.fail("the test cluster needs a pod network (root, iproute2): see the log above")
    pids = start_controllers(tool, apiserver.workdir, apiserver.kubeconfig,
                             apiserver.network.service_cidr)  # fmt: skip
    api = apiserver.api_client()
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    relays: list = []
    harness = None
    try:
        network = apiserver.network
        # the API server for pods: the `kubernetes` Service's endpoint is the node's address
        api_port = int(apiserver.url.rsplit(":", 1)[1])
        relays.append(Relay(network.gateway, api_port, lambda: ("127.0.0.1", api_port)))
        s3_port = int(stack.s3_endpoint.rsplit(":", 1)[1])
        s3_url = _host_service(core, network, "s3", s3_port, s3_port, relays)
        mlflow_port = int(stack.mlflow_uri.rsplit(":", 1)[1])
        mlflow_url = _host_service(core, network, "mlflow", 5000, mlflow_port, relays)
        runtime = yaml.safe_load(
            (ROOT / "tests/cluster/torch_distributed_runtime.yaml").read_text()
        )
        custom.create_cluster_custom_object("trainer.kubeflow.org", "v1alpha1",
                                            "clustertrainingruntimes", runtime)  # fmt: skip
        # what `make deploy` applies: service accounts (IRSA), RBAC, ConfigMaps, ServingRuntime
        objs = [o for o in kustomize("manifests/overlays/eks") if o["kind"] != "Namespace"]
        for obj in objs:
            if obj["kind"] == "ConfigMap":
                obj["data"].update({"S3_ENDPOINT_URL": s3_url, "MLFLOW_TRACKING_URI": mlflow_url,
                                    "MLFLOW_EXPERIMENT": "cluster-tests",
                                    "DATA_BUCKET": settings.data_bucket,
                                    "IMAGE_REGISTRY": IMAGE_REGISTRY, "IMAGE_TAG": IMAGE_TAG})  # fmt: skip
            if obj["kind"] == "ServingRuntime":
                obj["spec"]["containers"][0]["image"] = f"{IMAGE_REGISTRY}/serve:{IMAGE_TAG}"
            if obj["kind"] == "ServiceAccount" and obj["metadata"]["name"].endswith("-serving"):
                # KServe reads an S3-compatible endpoint from the service account
                obj["metadata"]["annotations"].update({
                    "serving.kserve.io/s3-endpoint": f"s3.{NAMESPACE}.svc.cluster.local:{s3_port}",
                    "serving.kserve.io/s3-usehttps": "0"})  # fmt: skip
        apiserver.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objs))
        # AWS STS for the IRSA web identity: the local S3 server (moto answers it too)
        harness = Cluster(api, tmp_path_factory.mktemp("pods"), network,
                          {"AWS_ENDPOINT_URL_STS": s3_url},
                          image_check=f"{IMAGE_REGISTRY}/{{name}}:{IMAGE_TAG}").start()  # fmt: skip
        _wait(lambda: any(s.type == "kubernetes.io/service-account-token"
                          for s in core.list_namespaced_secret(KFP_NS).items), 60,
              "service-account tokens from the token controller")  # fmt: skip
        harness.s3_url, harness.mlflow_url = s3_url, mlflow_url
        yield harness
    finally:
        if harness is not None:
            harness.stop()
        for relay in relays:
            relay.stop()
        stop_controllers(pids)


def _wait(predicate, timeout: float, what: str, poll: float = 0.5):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> CompiledPipeline:
    """The pipeline compiled with the images `make deploy` names, as `make pipeline-run` does."""
    from pipelines.compile import compile_pipeline

    path = tmp_path_factory.mktemp("compiled") / "review_classifier.yaml"
    compile_pipeline(path, registry=IMAGE_REGISTRY, tag=IMAGE_TAG)
    return CompiledPipeline(path)


@pytest.fixture(scope="module")
def uploaded_splits(splits, settings, storage) -> dict[str, tuple[str, str]]:
    """The ingest step's outputs in the pipeline root, as KFP's launcher left them."""
    data, _ = splits
    root = f"s3://{settings.data_bucket}/tests/pipeline-root/ingest"
    for split in ("train", "validation"):
        storage.upload_dir(data / split, f"{root}/{split}/")
    storage.put_bytes(f"{root}/stats.json", (data / "stats.json").read_bytes())
    return {"train_data": ("system.Dataset", f"{root}/train"),
            "validation_data": ("system.Dataset", f"{root}/validation"),
            "ingest_stats": ("system.Artifact", f"{root}/stats.json")}  # fmt: skip


def _train_pod(
    compiled, pipeline_params: dict, parameters: dict, artifacts: dict, outputs: dict, pod_name: str
) -> dict:  # noqa: ANN001
    """The train task's pod, its resources from the train-placement step's outputs (what that
    upstream step returns for these parameters, as KFP would pass them on)."""
    from components.train.placement import train_placement

    placement = train_placement(pipeline_params["num_nodes"], pipeline_params["gpus_per_node"])
    task = compiled.task("train", pipeline_params)
    return compiled.pod(task, parameters, artifacts, outputs, pod_name, KFP_NS, PIPELINE_SA,
                        pipeline_params, {"train-placement": placement})  # fmt: skip


# ---- training: the train step's launcher runs as a KFP pod -----------------------------------
@pytest.fixture(scope="module")
def trainjob_run(cluster, compiled, uploaded_splits, settings, apiserver):  # noqa: F811
    """num_nodes=2 x 2 gloo processes through a TrainJob the launcher pod creates; rank 0's pod
    is killed after the first checkpoint."""
    _, core = _api(apiserver)
    ckpt = f"s3://{settings.data_bucket}/tests/cluster-checkpoints"
    run_id = "cluster-tj"
    params = dict(run_id=run_id, checkpoint_uri=ckpt, gpus_per_node=0, num_nodes=2,
                  cpu_processes=2, launcher="trainjob", max_steps=40, checkpoint_every=10,
                  job_policy="keep", epochs=1, class_weighting="none", selection_metric="accuracy",
                  train_image="", **FAST)  # fmt: skip
    out = f"s3://{settings.data_bucket}/tests/pipeline-root/train"
    pod = _train_pod(compiled, {"gpus_per_node": 0, "num_nodes": 2, "lr_search": False},
                     params, uploaded_splits, {"model": f"{out}/model", "metrics": f"{out}/metrics"},
                     "train-launcher")  # fmt: skip
    killed: dict = {}

    def kill_after_first_checkpoint() -> None:
        from components.common.storage import S3Storage

        storage, deadline = S3Storage(), time.monotonic() + 400
        while time.monotonic() < deadline and not killed:
            done = [o.key for o in storage.list_objects(f"{ckpt}/{run_id}/")
                    if o.key.endswith("/COMPLETE") and "/step-" in o.key]  # fmt: skip
            rank0 = [n for n in cluster.pods if n.startswith(f"{job_name(run_id)}-node-0-0-")]
            if done and rank0:
                cluster.kill(rank0[0])
                killed.update(pod=rank0[0], after=sorted(done)[-1])
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    result = run_pod(core, pod, cluster.kubelet, timeout=600)
    killer.join(timeout=5)
    launcher = cluster.kubelet.by_name("train-launcher", KFP_NS)
    model_dir = launcher.workdir / "volumes" / "s3" / parse_s3_uri(f"{out}/model").bucket / \
        parse_s3_uri(f"{out}/model").key  # fmt: skip
    return {**result, "killed": killed, "run_id": run_id, "model": model_dir}


def test_trainjob_trains_across_two_pods_launched_from_a_step_pod(trainjob_run, stack):
    assert trainjob_run["phase"] == "Succeeded", trainjob_run["log"][-4000:]
    results = json.loads((trainjob_run["model"] / "results.json").read_text())
    # 40 steps at most: early stopping (the train step's default) may end the run sooner
    assert results["world_size"] == 4 and 10 < results["steps"] <= 40
    params = trainjob_run["outputs"]["parameterValues"]
    assert params["mlflow_run_id"] == results["mlflow_run_id"]
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
    assert results["steps_this_attempt"] == results["steps"] - results["resumed_from_step"]
    _, core = _api(apiserver)
    pod = core.read_namespaced_pod(killed["pod"], NAMESPACE)
    status = pod.status.container_statuses[0]
    assert status.restart_count >= 1 and status.last_state.terminated.exit_code != 0
    assert pod.spec.security_context.run_as_user == 10001


def test_trainjob_pods_are_scheduled_resolved_and_owned(trainjob_run, apiserver):  # noqa: F811
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
    # bound by the real scheduler, each with its own address, owned by the TrainJob
    assert {p.spec.node_name for p in pods} == {"harness-node"}
    assert len({p.status.pod_ip for p in pods}) == 2
    assert all(p.metadata.owner_references[0].uid == job["metadata"]["uid"] for p in pods)
    # the master address resolves through the headless Service's Endpoints (real controller)
    ep = core.read_namespaced_endpoints(name, NAMESPACE)
    hosts = {
        a.hostname
        for s in ep.subsets
        for a in [*(s.addresses or []), *(s.not_ready_addresses or [])]
    }
    assert f"{name}-node-0-0" in hosts
    env = {e.name: e for e in pods[0].spec.containers[0].env}
    assert env["MLFLOW_TRACKING_URI"].value_from.config_map_key_ref.name == (
        "review-classifier-training-env"
    )
    assert pods[0].spec.containers[0].image == f"{IMAGE_REGISTRY}/train:{IMAGE_TAG}"
    for arg in ("--data", "--output-dir", "--checkpoint-uri"):
        value = pods[0].spec.containers[0].args[pods[0].spec.containers[0].args.index(arg) + 1]
        assert value.startswith("s3://"), (arg, value)  # nothing pod-local crosses pods


def test_rank0_log_is_streamed_through_the_api(trainjob_run, apiserver):  # noqa: F811
    _, core = _api(apiserver)
    name = job_name(trainjob_run["run_id"])
    pod = core.list_namespaced_pod(
        NAMESPACE, label_selector=f"jobset.sigs.k8s.io/jobset-name={name},"
        "batch.kubernetes.io/job-completion-index=0"
    ).items[0]  # fmt: skip
    text = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, container="node")
    assert "training:" in text and "world 4" in text
    assert "training:" in trainjob_run["log"]  # the launcher pod streamed it into its own log


def test_deleting_the_trainjob_garbage_collects_its_pods(trainjob_run, apiserver):  # noqa: F811
    custom, core = _api(apiserver)
    name = job_name(trainjob_run["run_id"])
    selector = f"jobset.sigs.k8s.io/jobset-name={name}"
    assert len(core.list_namespaced_pod(NAMESPACE, label_selector=selector).items) == 2
    custom.delete_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", NAMESPACE,
                                           "trainjobs", name)  # fmt: skip
    _wait(lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=selector).items, 60,
          "the garbage collector to delete the TrainJob's pods")  # fmt: skip
    assert not core.list_namespaced_pod(NAMESPACE, label_selector=selector).items


def test_a_two_node_launcher_holds_no_gpu(cluster, compiled, uploaded_splits, settings, apiserver):  # noqa: F811
    """On a node with 2 GPUs, a 2-node x 1-GPU TrainJob schedules only if its launcher (the KFP
    step's pod) holds none: the real scheduler decides."""
    _, core = _api(apiserver)
    core.patch_node_status("harness-node", {"status": {
        "capacity": {"nvidia.com/gpu": "2"}, "allocatable": {"nvidia.com/gpu": "2"}}})  # fmt: skip
    core.patch_node("harness-node", {"metadata": {"labels": {"nvidia.com/gpu.present": "true"}}})
    run_id = "cluster-gpu"
    params = dict(run_id=run_id, checkpoint_uri=f"s3://{settings.data_bucket}/tests/ckpt-gpu",
                  gpus_per_node=1, num_nodes=2, cpu_processes=1, launcher="trainjob",
                  max_steps=1, checkpoint_every=0, job_policy="keep", epochs=1,
                  class_weighting="none", selection_metric="accuracy", train_image="", **FAST)  # fmt: skip
    out = f"s3://{settings.data_bucket}/tests/pipeline-root/train-gpu"
    pod = _train_pod(compiled, {"gpus_per_node": 1, "num_nodes": 2, "lr_search": False},
                     params, uploaded_splits, {"model": f"{out}/model", "metrics": f"{out}/metrics"},
                     "train-launcher-gpu")  # fmt: skip
    name = job_name(run_id)
    try:
        core.create_namespaced_pod(KFP_NS, pod)
        limits = (pod["spec"]["containers"][0].get("resources") or {}).get("limits") or {}
        assert "nvidia.com/gpu" not in limits, limits
        selector = f"jobset.sigs.k8s.io/jobset-name={name}"
        bound = _wait(lambda: [p for p in core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
                               if p.spec.node_name] if len(core.list_namespaced_pod(
                                   NAMESPACE, label_selector=selector).items) == 2 else None,
                      120, "the TrainJob's pods")  # fmt: skip
        _wait(lambda: len([p for p in core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
                           if p.spec.node_name]) == 2, 30, "both training pods to be scheduled")  # fmt: skip
        assert bound
    finally:
        core.delete_namespaced_pod("train-launcher-gpu", KFP_NS)
        try:
            custom, _ = _api(apiserver)
            custom.delete_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", NAMESPACE,
                                                   "trainjobs", name)  # fmt: skip
        except Exception:  # noqa: BLE001 - never created
            pass
        core.patch_node_status("harness-node", {"status": {
            "capacity": {"nvidia.com/gpu": "0"}, "allocatable": {"nvidia.com/gpu": "0"}}})  # fmt: skip


def test_failed_pytorchjob_fails_the_component_with_the_jobs_reason(cluster, splits, settings,
                                                                    tmp_path, caplog,
                                                                    apiserver, monkeypatch):  # noqa: F811  # fmt: skip
    """The launcher in this process (kubeconfig), the job's pods in the cluster."""
    from kfp.dsl import Artifact, Dataset, Metrics, Model

    monkeypatch.setenv("KUBECONFIG", str(apiserver.kubeconfig))
    monkeypatch.setenv("IMAGE_REGISTRY", IMAGE_REGISTRY)
    monkeypatch.setenv("IMAGE_TAG", IMAGE_TAG)
    data, _ = splits
    empty = tmp_path / "empty"
    for split in ("train", "validation"):
        (empty / split).mkdir(parents=True)
    (empty / "stats.json").write_text((data / "stats.json").read_text())
    ckpt = f"s3://{settings.data_bucket}/tests/cluster-checkpoints"
    with caplog.at_level(logging.INFO), pytest.raises(PlatformError) as err:
        train.python_func(
            train_data=Dataset(uri=str(empty / "train")),
            validation_data=Dataset(uri=str(empty / "validation")),
            ingest_stats=Artifact(uri=str(empty / "stats.json")),
            model=Model(uri=str(tmp_path / "model")), metrics=Metrics(uri=str(tmp_path / "m")),
            run_id="cluster-ptj-fail", checkpoint_uri=ckpt, gpus_per_node=0, cpu_processes=2,
            num_nodes=2, launcher="pytorchjob", max_steps=5, **FAST)  # fmt: skip
    message = str(err.value)
    assert "PyTorchJob review-classifier/train-cluster-ptj-fail failed" in message
    assert re.search(r"is failed because 1 (Master|Worker) replica\(s\) failed", message)
    # the failed pods' own exits, from their container statuses (runPolicy.backoffLimit 3)
    assert re.search(r"pod train-cluster-ptj-fail-(master|worker)-0: exit code 1 \(Error", message)
    assert "kubectl -n review-classifier describe pytorchjobs" in message


def test_pods_run_non_root_with_a_read_only_root_and_private_volumes(cluster, apiserver):  # noqa: F811
    """The rendered TrainJob's pod, its command swapped for a probe of what it may write and
    which names it can resolve."""
    probe = r"""
import json, os, pathlib, socket, sys
out = {"uid": os.getuid(), "gid": os.getgid(), "writes": {}, "resolve": {}}
for path in ("/probe", "/etc/probe", sys.argv[1] + "/probe", "/tmp/probe", "/dev/shm/probe"):
    try:
        pathlib.Path(path).write_text("x"); out["writes"][path] = "ok"
    except OSError as e:
        out["writes"][path] = e.strerror
out["tmp"] = sorted(os.listdir("/tmp"))
for name in ("mlflow", "s3.review-classifier.svc.cluster.local", "kubernetes.default",
             "rc-probe.review-classifier.example.com", "pypi.org"):
    try:
        out["resolve"][name] = socket.gethostbyname(name)
    except OSError:
        out["resolve"][name] = None
out["ip"] = socket.gethostbyname(socket.gethostname())
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
    ips = set()
    for pod in pods:
        log = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, container="node")
        out = json.loads(log.split("PROBE ", 1)[1])
        assert (out["uid"], out["gid"]) == (10001, 10001)
        writes = out["writes"]
        assert writes["/tmp/probe"] == "ok" and writes["/dev/shm/probe"] == "ok"
        for path in ("/probe", "/etc/probe", f"{ROOT}/probe"):
            assert writes[path] == "Read-only file system", (path, writes)
        # its own emptyDir: nothing of the host or other pods; only the mount point of the
        # checkout when it lives under /tmp (the harness's stand-in for the image's installed
        # package, at its own path for the editable install)
        under_tmp = [ROOT.relative_to("/tmp").parts[0]] if ROOT.is_relative_to("/tmp") else []
        assert out["tmp"] == sorted(["probe", *under_tmp])
        resolve = out["resolve"]
        assert resolve["mlflow"] and resolve["s3.review-classifier.svc.cluster.local"]
        assert resolve["kubernetes.default"]
        # external names do not resolve in the cluster (Knative's example.com, the internet)
        assert resolve["rc-probe.review-classifier.example.com"] is None
        assert resolve["pypi.org"] is None
        ips.add(out["ip"])
    assert len(ips) == 2 and not ips & {"127.0.0.1"}  # each pod its own address


def test_data_and_outputs_of_the_job_are_under_the_runs_prefix(trainjob_run, settings, storage):
    base = settings.run_uri(trainjob_run["run_id"]) + "train/"
    keys = {o.key for o in storage.list_objects(base)}
    prefix = parse_s3_uri(base).key
    assert f"{prefix}data/stats.json" in keys and f"{prefix}model/results.json" in keys


# ---- serving: the deploy step's rollout runs as a KFP pod ------------------------------------
SERVE_NAME = "rc-serve"


def _register(stack, uri: str) -> str:
    client = mlflow.MlflowClient(stack.mlflow_uri)
    try:
        client.create_registered_model("review-classifier")
    except mlflow.exceptions.MlflowException:
        pass
    return client.create_model_version("review-classifier", uri).version


@pytest.fixture(scope="module")
def deploy_inputs(cluster, trained, splits, settings, storage) -> dict:
    """A good model (registered twice, at two URIs) and a bad one, in S3; the evaluation."""
    import pandas as pd

    from components.common.inference import Classifier
    from components.evaluate.job import predict_probs, smoke_set

    base = f"s3://{settings.data_bucket}/tests/registered"
    good, again = f"{base}/good/artifacts/model", f"{base}/again/artifacts/model"
    third = f"{base}/third/artifacts/model"
    for uri in (good, again, third):
        storage.upload_dir(trained["model_dir"], uri + "/")
    test = pd.read_parquet(splits[0] / "test")
    texts, y = test["review_body"].tolist()[:200], test["label"].to_numpy()[:200]
    model = Classifier(trained["model_dir"])
    held = smoke_set(texts, y, predict_probs(model, texts, 32), model.labels)
    # a model that loads and answers, but not as the evaluation did: the held-out labels moved
    bad_held = [{**row, "label": str((int(row["label"]) % 5) + 1)} for row in held]
    ev = f"{base}/evaluation.json"
    storage.put_bytes(ev, json.dumps({"smoke_set": held}).encode())
    storage.put_bytes(f"{base}/evaluation-bad.json", json.dumps({"smoke_set": bad_held}).encode())
    return {"good": good, "again": again, "third": third, "evaluation": ev,
            "evaluation_bad": f"{base}/evaluation-bad.json", "held": held}  # fmt: skip


def _deploy(
    cluster,
    compiled,
    apiserver,  # noqa: F811
    uri: str,
    version: str,
    evaluation: str,
    pod_name: str,  # noqa: F811
    **overrides,
) -> dict:  # noqa: ANN001
    _, core = _api(apiserver)
    params = dict(model_storage_uri=uri, registered_version=version, target="cluster",
                  service_name=SERVE_NAME, namespace=NAMESPACE, canary_percent=10,
                  deployment_mode="Serverless", gpus=0, min_replicas=1, max_replicas=1,
                  min_agreement=0.9, logger_url="")  # fmt: skip
    params.update(overrides)
    task = compiled.task("deploy", {"deploy_model": True}, {"evaluate-deploy": True})
    accepted = set(compiled.spec["components"][task.component]["inputDefinitions"]["parameters"])
    params = {k: v for k, v in params.items() if k in accepted}
    pod = compiled.pod(task, params, {"model": ("system.Model", uri),
                                      "evaluation": ("system.Artifact", evaluation)},
                       {}, pod_name, KFP_NS, PIPELINE_SA, {"deploy_model": True})  # fmt: skip
    return run_pod(core, pod, cluster.kubelet, timeout=300)


def _champion(stack) -> str | None:
    try:
        return (
            mlflow.MlflowClient(stack.mlflow_uri)
            .get_model_version_by_alias("review-classifier", "champion")
            .version
        )
    except mlflow.exceptions.MlflowException:
        return None


@pytest.fixture(scope="module")
def served(cluster, compiled, deploy_inputs, stack, apiserver):  # noqa: F811
    """The registered version deployed by the deploy step's own pod (created, tested, promoted)."""
    version = _register(stack, deploy_inputs["good"])
    result = _deploy(cluster, compiled, apiserver, deploy_inputs["good"], version,
                     deploy_inputs["evaluation"], "deploy-1")  # fmt: skip
    return {**result, "version": version}


def test_the_deploy_pod_tested_the_revision_through_cluster_dns_and_promoted(served, stack):
    assert served["phase"] == "Succeeded", served["log"][-4000:]
    url = served["outputs"]["parameterValues"]["Output"]
    assert url.endswith(f"/v1/models/{SERVE_NAME}:predict")
    assert "answered the held-out reviews" in served["log"]
    assert _champion(stack) == served["version"]


def test_predictor_pod_serves_the_registered_bytes_non_root_read_only(served, cluster, storage,
                                                                      deploy_inputs, apiserver):  # noqa: F811  # fmt: skip
    import hashlib

    _, core = _api(apiserver)
    (pod,) = core.list_namespaced_pod(
        NAMESPACE, label_selector=f"serving.knative.dev/revision={SERVE_NAME}-predictor-00001"
    ).items
    (init,) = pod.spec.init_containers
    uri = deploy_inputs["good"]
    assert init.name == "storage-initializer" and init.args == [uri, "/mnt/models"]
    main = pod.spec.containers[0]
    assert f"--model_name={SERVE_NAME}" in main.args  # {{.Name}} rendered
    assert any(m.mount_path == "/mnt/models" and m.read_only for m in main.volume_mounts)
    assert (
        main.security_context.read_only_root_filesystem
        and main.security_context.run_as_user == 10001
    )
    run = cluster.kubelet.by_name(pod.metadata.name, NAMESPACE)
    served_dir = run.workdir / "volumes" / "kserve-provision-location"
    prefix = parse_s3_uri(uri + "/").key
    objects = storage.list_objects(uri + "/")
    assert objects
    for obj in objects:
        local = served_dir / obj.key[len(prefix) :]
        want = hashlib.sha256(storage.get_bytes(f"s3://{parse_s3_uri(uri).bucket}/{obj.key}"))
        assert hashlib.sha256(local.read_bytes()).hexdigest() == want.hexdigest(), obj.key


def test_predictor_pod_answers_v1_v2_and_metrics(served, cluster, apiserver):  # noqa: F811
    _, core = _api(apiserver)
    (pod,) = core.list_namespaced_pod(
        NAMESPACE, label_selector=f"serving.knative.dev/revision={SERVE_NAME}-predictor-00001"
    ).items
    base = f"http://{pod.status.pod_ip}:8080"
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                   "data": ["Broke after a day, waste of money."]}]}).encode()  # fmt: skip
    req = urllib.request.Request(f"{base}/v2/models/{SERVE_NAME}/infer", body,
                                 {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (the pod)
        answer = json.loads(r.read())
    assert answer["model_name"] == SERVE_NAME and answer["outputs"]
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:  # noqa: S310
        assert r.status == 200 and b"# TYPE" in r.read()
    bad = urllib.request.Request(f"{base}/v1/models/{SERVE_NAME}:predict", b'{"instances": [42]}',
                                 {"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=30)  # noqa: S310
    assert err.value.code == 400


@pytest.fixture(scope="module")
def rejected(served, cluster, compiled, deploy_inputs, stack, apiserver):  # noqa: F811
    """A version whose answers disagree with its evaluation, deployed twice: the canary is
    rolled back both times, the champion stays."""
    version = _register(stack, deploy_inputs["again"])
    first = _deploy(cluster, compiled, apiserver, deploy_inputs["again"], version,
                    deploy_inputs["evaluation_bad"], "deploy-bad-1")  # fmt: skip
    second = _deploy(cluster, compiled, apiserver, deploy_inputs["again"], version,
                     deploy_inputs["evaluation_bad"], "deploy-bad-2")  # fmt: skip
    return {"first": first, "second": second, "version": version}


def test_a_rejected_canary_is_rolled_back_and_tested_again_on_the_next_run(rejected, served,
                                                                          stack, apiserver):  # noqa: F811  # fmt: skip
    for run in (rejected["first"], rejected["second"]):
        assert run["phase"] == "Failed", run["log"][-3000:]
        assert "rolled back" in run["log"], run["log"][-3000:]
    # the second run tested the version again rather than promoting it as "unchanged"
    for run in (rejected["first"], rejected["second"]):
        assert re.search(r"agree", run["log"]), run["log"][-3000:]
    assert _champion(stack) == served["version"]
    custom, _ = _api(apiserver)
    obj = custom.get_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                              "inferenceservices", SERVE_NAME)  # fmt: skip
    traffic = obj["status"]["components"]["predictor"]["traffic"]
    rolled = obj["status"]["components"]["predictor"]["latestRolledoutRevision"]
    assert rolled == f"{SERVE_NAME}-predictor-00001"
    assert sum(t["percent"] for t in traffic if t["revisionName"] == rolled) == 100


def _served_texts(base: str) -> float:
    """Texts a predictor pod has run through its batcher (its own /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:  # noqa: S310 (the pod)
        text = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "review_classifier_batch_size_sum")  # fmt: skip


def test_two_live_revisions_share_traffic_by_the_canary_percent(rejected, deploy_inputs, cluster,
                                                                apiserver):  # noqa: F811  # fmt: skip
    """A user's own canary (`kubectl patch`: a new storageUri at canaryTrafficPercent 10): both
    revisions run, and the cluster-local gateway splits connections about 90/10 between them."""
    import http.client

    custom, core = _api(apiserver)
    custom.patch_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                          "inferenceservices", SERVE_NAME, {"spec": {"predictor": {
        "canaryTrafficPercent": 10,
        "model": {"storageUri": deploy_inputs["third"]}}}})  # fmt: skip
    old, new = f"{SERVE_NAME}-predictor-00001", f"{SERVE_NAME}-predictor-00003"

    def split() -> dict[str, int]:
        obj = custom.get_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                                  "inferenceservices", SERVE_NAME)  # fmt: skip
        traffic = ((obj.get("status") or {}).get("components", {}).get("predictor", {})
                   .get("traffic", []))  # fmt: skip
        return {t["revisionName"]: t["percent"] for t in traffic}

    _wait(lambda: split() == {old: 90, new: 10}, 180, "the 90/10 split in the status")

    def pod_base(revision: str) -> str:
        pods = [p for p in core.list_namespaced_pod(
            NAMESPACE, label_selector=f"serving.knative.dev/revision={revision}").items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp]  # fmt: skip
        assert len(pods) == 1, [p.metadata.name for p in pods]
        return f"http://{pods[0].status.pod_ip}:8080"

    bases = {rev: pod_base(rev) for rev in (old, new)}
    before = {rev: _served_texts(b) for rev, b in bases.items()}
    body = json.dumps({"instances": ["Arrived late but works well."]})
    statuses = []
    for _ in range(300):  # a connection each: the gateway splits connections
        conn = http.client.HTTPConnection(cluster.serving.gateway_ip, 80, timeout=30)
        conn.request("POST", f"/v1/models/{SERVE_NAME}:predict", body,
                     {"Host": f"{SERVE_NAME}-predictor.{NAMESPACE}.svc.cluster.local",
                      "Content-Type": "application/json"})  # fmt: skip
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
        conn.close()
    counts = {rev: _served_texts(b) - before[rev] for rev, b in bases.items()}
    assert statuses == [200] * 300, sorted(set(statuses))
    assert counts[old] + counts[new] == 300, counts
    # 10% of 300 is 30 (sd 5.2): well inside 12..60, far from an even or an all-or-nothing split
    assert 12 <= counts[new] <= 60, counts


def test_the_charts_rendering_serves_and_its_helm_test_passes(two_live_cleanup, cluster, settings,
                                                              deploy_inputs, apiserver):  # noqa: F811  # fmt: skip
    """`helm install` of charts/review-classifier with the same registered version, then its
    `helm test` hook pod, both run by the harness."""
    import subprocess

    from tests.k8s.conftest import load_all

    custom, core = _api(apiserver)
    rendered = load_all(subprocess.run(
        [tool("helm"), "template", "rc", "charts/review-classifier", "--namespace", NAMESPACE,
         "--set", f"storageUri={deploy_inputs['good']}", "--set", "gpus=0",
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

    def ready():
        obj = custom.get_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                                  "inferenceservices", name)  # fmt: skip
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in (obj.get("status") or {}).get("conditions", []))  # fmt: skip

    _wait(ready, 180, f"{name} to be Ready")
    # KServe's :explain verb on the chart's predictor (the pod the rendered runtime started)
    (pod,) = [p for p in core.list_namespaced_pod(
        NAMESPACE, label_selector=f"serving.kserve.io/inferenceservice={name}").items
        if p.status.phase == "Running"]  # fmt: skip
    req = urllib.request.Request(
        f"http://{pod.status.pod_ip}:8080/v1/models/{name}:explain",
        json.dumps({"instances": ["Broke after a day, waste of money."]}).encode(),
        {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 (the pod)
        explained = json.loads(r.read())
    words = [w["word"] for w in explained["explanations"][0]["attributions"]]
    assert words[:2] == ["Broke", "after"], explained
    hook = by_kind["Pod"]  # what `helm test rc` creates
    core.create_namespaced_pod(NAMESPACE, hook)
    _wait(lambda: core.read_namespaced_pod(hook["metadata"]["name"], NAMESPACE).status.phase
          in ("Succeeded", "Failed"), 120, "the helm test pod")  # fmt: skip
    phase = core.read_namespaced_pod(hook["metadata"]["name"], NAMESPACE).status.phase
    log = core.read_namespaced_pod_log(hook["metadata"]["name"], NAMESPACE)
    assert phase == "Succeeded", log
    assert "star_rating" in log and f"{name}-predictor.{NAMESPACE}.svc.cluster.local" in log


def _remove_services(apiserver, names: list[str] | None = None) -> None:  # noqa: F811
    """Delete these InferenceServices (all by default) and wait for the garbage collector to
    remove their pods: two predictors at a time on 2 cores."""
    custom, core = _api(apiserver)
    if names is None:
        names = [o["metadata"]["name"] for o in custom.list_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices")["items"]]  # fmt: skip
    for name in names:
        try:
            custom.delete_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                                   "inferenceservices", name)  # fmt: skip
        except Exception:  # noqa: BLE001 - not there
            pass
    for name in names:
        _wait(lambda name=name: not core.list_namespaced_pod(
            NAMESPACE, label_selector=f"serving.kserve.io/inferenceservice={name}").items,
            120, f"the garbage collector to remove {name}'s pods")  # fmt: skip


@pytest.fixture(scope="module")
def two_live_cleanup(cluster, apiserver):  # noqa: F811
    """The first service goes before the chart's: two predictors at a time on 2 cores."""
    _remove_services(apiserver, [SERVE_NAME])


# ---- RawDeployment: the deploy step's pod, two replicas, one deleted under load ---------------
RAW_NAME = "rc-raw"


@pytest.fixture(scope="module")
def raw_served(cluster, compiled, deploy_inputs, stack, apiserver):  # noqa: F811
    """The other services go first (2 cores); then the deploy step's own pod rolls out
    RawDeployment with two replicas."""
    _remove_services(apiserver)
    version = _register(stack, deploy_inputs["third"])
    result = _deploy(cluster, compiled, apiserver, deploy_inputs["third"], version,
                     deploy_inputs["evaluation"], "deploy-raw", service_name=RAW_NAME,
                     deployment_mode="RawDeployment", min_replicas=2, max_replicas=2)  # fmt: skip
    return {**result, "version": version}


def test_raw_deployment_rolled_out_by_the_deploy_pod_with_an_hpa(raw_served, apiserver):  # noqa: F811
    assert raw_served["phase"] == "Succeeded", raw_served["log"][-4000:]
    assert "answered the held-out reviews" in raw_served["log"]
    from kubernetes import client

    api = apiserver.api_client()
    dep = client.AppsV1Api(api).read_namespaced_deployment(f"{RAW_NAME}-predictor", NAMESPACE)
    assert dep.spec.replicas == 2 and dep.status.ready_replicas == 2
    pod = dep.spec.template.spec
    assert pod.termination_grace_period_seconds == 35
    assert pod.containers[0].lifecycle.pre_stop._exec.command[0] == "python"
    hpa = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "autoscaling", "v2beta2", NAMESPACE, "horizontalpodautoscalers", f"{RAW_NAME}-predictor"
    )
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_a_predictor_pod_deleted_under_load_loses_no_request(raw_served, apiserver):  # noqa: F811
    """16 keep-alive callers on the Service address; one of the two pods is deleted (preStop
    wait, endpoints controller drops it, SIGTERM, drain): every request sent is answered 200."""
    _, core = _api(apiserver)
    ip = core.read_namespaced_service(f"{RAW_NAME}-predictor", NAMESPACE).spec.cluster_ip
    pods = [p for p in core.list_namespaced_pod(
        NAMESPACE, label_selector=f"serving.kserve.io/inferenceservice={RAW_NAME}").items
        if p.status.phase == "Running"]  # fmt: skip
    assert len(pods) == 2
    victim = pods[0]
    stop = threading.Event()
    callers = [KeepAliveCaller(ip, 80, RAW_NAME, "Stopped charging after two weeks.", stop,
                               reconnect=True) for _ in range(16)]  # fmt: skip
    for c in callers:
        c.start()
    time.sleep(4)
    deleted = time.monotonic()
    core.delete_namespaced_pod(victim.metadata.name, NAMESPACE)  # the pod's own grace period

    def gone() -> bool:
        try:
            core.read_namespaced_pod(victim.metadata.name, NAMESPACE)
        except Exception:  # noqa: BLE001 - 404: the kubelet's final delete
            return True
        return False

    _wait(gone, 60, f"{victim.metadata.name} to terminate")
    time.sleep(2)
    stop.set()
    for c in callers:
        c.join(timeout=60)
    errors = [(round(t - deleted, 2), e) for c in callers for t, e in c.errors]
    answered = [a for c in callers for a in c.answered]
    assert errors == [], f"{len(errors)} requests lost: {errors[:5]}"
    assert answered and all(s == 200 for _, s in answered), {s for _, s in answered}
    # requests went on being answered through the deletion and after the pod was gone
    assert [a for a in answered if a[0] > deleted + 15]
