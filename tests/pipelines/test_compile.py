"""The compiled pipeline is checked in; it must match what the code compiles to now."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "pipelines" / "review_classifier.yaml"


def _compile(tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_")}
    out = tmp_path / "compiled.yaml"
    subprocess.run([sys.executable, "-m", "pipelines.compile", "--output", str(out)],
                   check=True, env=env, cwd=ROOT, capture_output=True)  # fmt: skip
    return out.read_text()


def test_checked_in_yaml_is_not_stale(tmp_path):
    assert _compile(tmp_path) == GOLDEN.read_text(), "run `make compile` and commit the YAML"


def test_checked_in_batch_score_yaml_is_not_stale(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_")}
    out = tmp_path / "batch.yaml"
    subprocess.run([sys.executable, "-m", "pipelines.compile", "--pipeline", "batch-score",
                    "--output", str(out)], check=True, env=env, cwd=ROOT)  # fmt: skip
    golden = ROOT / "pipelines" / "batch_score.yaml"
    assert out.read_text() == golden.read_text(), "run `make compile` and commit the YAML"
    spec, platform = yaml.safe_load_all(golden.read_text())
    assert spec["pipelineInfo"]["name"] == "batch-score"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-score"]
    assert k8s["configMapAsEnv"][0]["configMapName"] == "review-classifier-env"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["model"]["defaultValue"] == "models:/review-classifier@champion"
    assert params["model_version"]["defaultValue"] == ""
    assert spec["deploymentSpec"]["executors"]["exec-score"]["container"]["image"] == (
        "ghcr.io/review-classifier/spark:0.1.0"
    )


def test_pipeline_shape():
    docs = list(yaml.safe_load_all(GOLDEN.read_text()))
    spec, platform = docs[0], docs[1]
    assert spec["pipelineInfo"]["name"] == "review-classifier"
    tasks = spec["root"]["dag"]["tasks"]
    assert {"ingest", "validate", "train", "evaluate", "condition-branches-1"} <= set(tasks)
    # learning-rate search: If(lr_search) { ParallelFor(trials) ; pick } Else { fixed }, and the
    # train task takes the OneOf of the two branches' rates
    components = spec["components"]
    search = components["comp-condition-3"]["dag"]["tasks"]
    assert set(search) == {"for-loop-2", "pick-learning-rate"}
    loop = components["comp-for-loop-2"]
    assert loop["dag"]["tasks"]["lr-trial"]["componentRef"]["name"] == "comp-lr-trial"
    assert search["for-loop-2"]["parameterIterator"]["items"]["inputParameter"].endswith(
        "lr_candidates"
    )
    assert search["for-loop-2"]["iteratorPolicy"]["parallelismLimit"] == 1
    assert "condition-branches-1" in tasks["train"]["dependentTasks"]
    assert tasks["ingest"]["cachingOptions"].get("enableCache") is True
    assert tasks["validate"]["cachingOptions"].get("enableCache") is True
    assert "validate" in tasks["train"]["dependentTasks"]
    assert tasks["train"]["cachingOptions"].get("enableCache") in (None, False)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["max_seq_length"]["defaultValue"] == 64
    assert params["learning_rate"]["defaultValue"] == 5e-5
    assert params["lr_search"]["defaultValue"] is False
    assert params["lr_candidates"]["defaultValue"] == [1e-5, 3e-5, 1e-4]
    assert params["model_name_or_path"]["defaultValue"] == "bert-base-uncased"
    assert params["baseline_test"]["defaultValue"] == "superiority"
    assert params["batch_size"]["defaultValue"] == 128
    assert params["train_fraction"]["defaultValue"] == 0.8
    assert params["balance"]["defaultValue"] is False and params["dedupe"]["defaultValue"] is True
    assert params["epochs"]["defaultValue"] == 0  # the examples budget decides
    executors = spec["deploymentSpec"]["executors"]
    train_container = executors["exec-train"]["container"]
    assert train_container["image"] == "ghcr.io/review-classifier/train:0.1.0"
    assert train_container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert executors["exec-ingest"]["container"]["image"] == "ghcr.io/review-classifier/spark:0.1.0"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    # GPU node placement comes from the train-placement step (test below)
    assert "train-placement" in tasks and "train-placement" in tasks["train"]["dependentTasks"]
    assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    assert k8s["configMapAsEnv"][0]["configMapName"] == "review-classifier-env"


def test_importing_the_pipeline_reads_no_environment(tmp_path):
    """A broken .env and odd IMAGE_* variables change nothing at import; compile takes them."""
    (tmp_path / ".env").write_text("S3_MAX_ATTEMPTS=not-a-number\n")
    code = ("from pipelines.review_classifier import review_classifier as p; "
            "print(sorted({e['container']['image'] for e in "
            "p.pipeline_spec.deployment_spec['executors'].values()}))")  # fmt: skip
    env = {**os.environ, "IMAGE_REGISTRY": "elsewhere.example/x", "IMAGE_TAG": "t1",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ghcr.io/review-classifier/train:0.1.0" in out.stdout and "elsewhere" not in out.stdout


def test_monitor_component_compiles_with_its_decision_outputs(tmp_path):
    from kfp import compiler

    from components.monitor.component import monitor

    out = tmp_path / "monitor.yaml"
    compiler.Compiler().compile(monitor, str(out))
    spec = yaml.safe_load(out.read_text())
    outputs = spec["root"]["outputDefinitions"]
    assert set(outputs["parameters"]) == {"retrain", "reasons"}
    assert set(outputs["artifacts"]) == {"report", "summary", "metrics"}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["confidence"]["defaultValue"] == 0.7
    golden = next(yaml.safe_load_all(GOLDEN.read_text()))
    assert golden["root"]["inputDefinitions"]["parameters"]["feedback_uri"]["defaultValue"] == ""


def test_the_namespace_settings_reach_the_deploy_and_train_steps():
    """KSERVE_NAMESPACE (deploy) and TRAINING_NAMESPACE (train launcher) come from the ConfigMap."""
    _, platform = list(yaml.safe_load_all(GOLDEN.read_text()))[:2]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor, key in (
        ("exec-deploy", "KSERVE_NAMESPACE"),
        ("exec-train", "TRAINING_NAMESPACE"),
    ):
        (env,) = executors[executor]["configMapAsEnv"]
        assert {"configMapKey": key, "envVar": key} in env["keyToEnv"], executor


def _train_pod(num_nodes: int, gpus_per_node: int) -> dict:
    """The train step's pod resources and placement as KFP's driver resolves them for a run."""
    from components.train.component import train_placement

    spec, platform = list(yaml.safe_load_all(GOLDEN.read_text()))[:2]
    task = spec["root"]["dag"]["tasks"]["train"]
    placement = train_placement.python_func(num_nodes=num_nodes, gpus_per_node=gpus_per_node)

    def resolve(value):  # {{$.inputs.parameters['pipelinechannel--train-placement-<key>']}}
        name = value.split("'")[1]
        source = task["inputs"]["parameters"][name]["taskOutputParameter"]
        assert source["producerTask"] == "train-placement", name
        return getattr(placement, source["outputParameterKey"])

    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    selector = k8s["nodeSelector"]["nodeSelectorJson"]["taskOutputParameter"]
    (toleration,) = k8s["tolerations"]
    tolerations = toleration["tolerationJson"]["taskOutputParameter"]
    assert selector["producerTask"] == tolerations["producerTask"] == "train-placement"
    return {
        "gpus": int(resolve(resources["accelerator"]["resourceCount"])),
        "cpu": resolve(resources["resourceCpuLimit"]),
        "memory": resolve(resources["resourceMemoryLimit"]),
        "node_selector": getattr(placement, selector["outputParameterKey"]),
        "tolerations": getattr(placement, tolerations["outputParameterKey"]),
    }


def test_the_multi_node_train_launcher_requests_no_gpu():
    """A 2-node TrainJob needs 2 GPU pods; the launcher step that creates it holds none."""
    launcher = _train_pod(num_nodes=2, gpus_per_node=4)
    assert launcher["gpus"] == 0
    assert launcher["node_selector"] == {} and launcher["tolerations"] == []
    assert (launcher["cpu"], launcher["memory"]) == ("1", "2G")
    single = _train_pod(num_nodes=1, gpus_per_node=4)
    assert single["gpus"] == 4 and single["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert single["tolerations"][0]["key"] == "nvidia.com/gpu"
