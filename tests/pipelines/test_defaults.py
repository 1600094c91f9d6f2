"""Each stage default has one home, its config dataclass; the layers above pass overrides only."""

import dataclasses

import pytest

from components.common.settings import DEFAULT_NAMESPACE, Settings
from components.deploy.component import deploy
from components.deploy.inferenceservice import ServiceSpec
from components.evaluate.component import evaluate
from components.evaluate.gate import GateConfig
from components.ingest.component import ingest
from components.ingest.config import IngestConfig
from components.ingest.spark import K8sOptions
from components.train.cluster import ClusterSpec
from components.train.component import lr_trial, train
from components.train.config import GPU_MAX_EXAMPLES, TrainConfig
from pipelines.review_classifier import review_classifier

OWNED = {  # pipeline parameter -> the stage default it must equal
    "min_accuracy": GateConfig.min_accuracy,
    "metric": GateConfig.metric,
    "min_gain_over_baseline": GateConfig.min_gain_over_baseline,
    "baseline_test": GateConfig.baseline_test,
    "max_regression": GateConfig.max_regression,
    "max_category_accuracy_gap": GateConfig.max_category_accuracy_gap,
    "balance": IngestConfig.balance,
    "dedupe": IngestConfig.dedupe,
    "learning_rate": TrainConfig.learning_rate,
    "epochs": TrainConfig.epochs,
    "max_steps": TrainConfig.max_steps,
    "budget_passes": TrainConfig.budget_passes,
    "max_examples": GPU_MAX_EXAMPLES,  # the cluster's ceiling; LOCAL_PARAMS the CPU's
    "class_weighting": TrainConfig.class_weighting,
    "train_fraction": IngestConfig.split[0],
    "validation_fraction": IngestConfig.split[1],
    "test_fraction": IngestConfig.split[2],
}
NO_COMPONENT_DEFAULT = [
    (evaluate, ["min_accuracy", "gate_metric", "min_gain_over_baseline", "baseline_test",
                "max_regression", "max_category_accuracy_gap"]),
    (ingest, ["train_fraction", "validation_fraction", "test_fraction"]),
    (deploy, ["target"]),
    (train, ["gpus_per_node"]),
    (lr_trial, ["gpus_per_node"]),
]  # fmt: skip


def test_pipeline_parameters_default_to_the_stage_configs():
    inputs = review_classifier.component_spec.inputs
    for name, expected in OWNED.items():
        assert inputs[name].default == expected, name


@pytest.mark.parametrize("component, names", NO_COMPONENT_DEFAULT,
                         ids=[c.name for c, _ in NO_COMPONENT_DEFAULT])  # fmt: skip
def test_components_declare_no_defaults_of_their_own(component, names):
    inputs = component.component_spec.inputs
    for name in names:
        assert inputs[name].default is None and not inputs[name].optional, name


def test_one_namespace_default():
    specs = [ServiceSpec, ClusterSpec, K8sOptions]
    defaults = {s.__name__: {f.name: f.default for f in dataclasses.fields(s)}["namespace"]
                for s in specs}  # fmt: skip
    assert set(defaults.values()) == {DEFAULT_NAMESPACE}, defaults
    settings = Settings.from_env({}, dotenv=None)
    assert settings.kserve_namespace == settings.training_namespace == DEFAULT_NAMESPACE
    assert deploy.component_spec.inputs["namespace"].default == ""  # KSERVE_NAMESPACE then


def test_the_train_step_selects_on_the_gate_metric_and_the_run_keeps_no_other_ml_default():
    from pipelines.run import LOCAL_PARAMS

    assert TrainConfig.selection_metric == GateConfig.metric
    # the embedded default changes only what the hardware sets and where things run
    assert set(LOCAL_PARAMS) == {"deploy_target", "gpus_per_node", "serving_gpus",
                                 "cpu_processes", "spark_master", "model_name_or_path",
                                 "batch_size", "max_examples", "checkpoint_every"}  # fmt: skip
    # the examples ceiling is a time budget: the CPU's here, a GPU node's on the cluster
    assert LOCAL_PARAMS["max_examples"] == TrainConfig.max_examples < GPU_MAX_EXAMPLES
