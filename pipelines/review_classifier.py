"""The review-classifier pipeline: ingest -> validate -> train -> evaluate -> [gate] -> deploy.

One definition runs in both places: through ``kfp.local`` on a laptop (the embedded default)
and on Kubeflow Pipelines on EKS, where the ``kfp.kubernetes`` settings below take effect
(GPU nodes, shared memory for torch, the platform ConfigMap as environment).
"""

from kfp import dsl, kubernetes

from components.common.settings import PLATFORM_CONFIG_MAP, PLATFORM_ENV_KEYS
from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.evaluate.gate import GateConfig
from components.evaluate.variants import VariantConfig
from components.ingest.component import ingest
from components.ingest.config import IngestConfig
from components.train.component import (
    fixed_learning_rate,
    lr_trial,
    pick_learning_rate,
    train,
    train_placement,
)
from components.train.config import GPU_MAX_EXAMPLES, TrainConfig
from components.validate.component import validate

PIPELINE_NAME = "review-classifier"
# Platform endpoints come from a ConfigMap on the cluster (kustomize writes it) and from the
# runner's environment locally; they are never pipeline parameters, and nothing is a secret.
CONFIG_MAP, CONFIG_KEYS = PLATFORM_CONFIG_MAP, PLATFORM_ENV_KEYS
# Stage defaults have one home, each stage's config dataclass; the parameters below that a
# stage owns default to its fields (compiled into the YAML), and the components declare no
# defaults of their own for them (tests/pipelines/test_defaults.py).
_SPLIT, _GATE, _TRAIN = IngestConfig.split, GateConfig, TrainConfig


def _platform_env(task: dsl.PipelineTask) -> dsl.PipelineTask:
    return kubernetes.use_config_map_as_env(
        task, CONFIG_MAP, {key: key for key in CONFIG_KEYS}, optional=True
    )


def _train_resources(task: dsl.PipelineTask, gpus_per_node: int) -> dsl.PipelineTask:
    """GPU nodes, resources, shared memory and the platform env of a training task."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus_per_node)
    task.set_cpu_limit("8").set_memory_limit("64G")
    kubernetes.add_node_selector(task, "nvidia.com/gpu.present", "true")
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    return _shm_and_env(task)


def _shm_and_env(task: dsl.PipelineTask) -> dsl.PipelineTask:
    # NCCL and DataLoader workers need more shared memory than a pod's default 64 MiB.
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                               size_limit="16Gi")  # fmt: skip
    return _platform_env(task)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Amazon product reviews in S3 to a served BERT star-rating classifier: Spark "
    "ingest, distributed BERT fine-tuning, evaluation against a baseline and the champion, "
    "MLflow registry and KServe deployment.",
)
def review_classifier(
    input_uri: str = "s3://review-classifier/raw/amazon-reviews/",
    feedback_uri: str = "",
    data_uri: str = "s3://review-classifier/processed/",
    checkpoint_uri: str = "s3://review-classifier/checkpoints/",
    label_mode: str = "star_rating",
    balance: bool = IngestConfig.balance,
    dedupe: bool = IngestConfig.dedupe,
    train_fraction: float = _SPLIT[0],
    validation_fraction: float = _SPLIT[1],
    test_fraction: float = _SPLIT[2],
    spark_master: str = "local[*]",
    validation_mode: str = "fail",
    max_seq_length: int = 64,
    model_name_or_path: str = "bert-base-uncased",
    learning_rate: float = _TRAIN.learning_rate,
    lr_search: bool = False,
    lr_candidates: list = [1e-5, 3e-5, 1e-4],  # noqa: B006 (a KFP parameter default)
    lr_trial_steps: int = 100,
    batch_size: int = 128,
    epochs: int = _TRAIN.epochs,
    max_steps: int = _TRAIN.max_steps,
    budget_passes: float = _TRAIN.budget_passes,
    max_examples: int = GPU_MAX_EXAMPLES,  # a GPU node's time budget (the CPU's: LOCAL_PARAMS)
    checkpoint_every: int = 500,
    num_layers: int = 2,
    hidden_size: int = 128,
    num_heads: int = 2,
    class_weighting: str = _TRAIN.class_weighting,
    metric: str = _GATE.metric,
    gpus_per_node: int = 1,
    num_nodes: int = 1,
    cpu_processes: int = 2,
    min_accuracy: float = _GATE.min_accuracy,
    min_gain_over_baseline: float = _GATE.min_gain_over_baseline,
    baseline_test: str = _GATE.baseline_test,
    max_regression: float = _GATE.max_regression,
    max_category_accuracy_gap: float = _GATE.max_category_accuracy_gap,
    variant_tolerance: float = VariantConfig.tolerance,
    serving_variant: str = "auto",
    deploy_model: bool = True,
    deploy_target: str = "cluster",
    service_name: str = "review-classifier",
    canary_percent: int = 10,
    deployment_mode: str = "Serverless",
    serving_gpus: int = 1,
    serving_logger_url: str = "",
    serving_address: str = "cluster-local",
    serving_gateway_url: str = "",
    train_launcher: str = "trainjob",
    train_job_policy: str = "delete-on-success",
    train_image: str = "",
) -> str:
    ingest_task = ingest(
        input_uri=input_uri, output_uri=data_uri, label_mode=label_mode, balance=balance,
        dedupe=dedupe,
        train_fraction=train_fraction, validation_fraction=validation_fraction,
        test_fraction=test_fraction, spark_master=spark_master, feedback_uri=feedback_uri,
    )  # fmt: skip
    ingest_task.set_display_name("ingest (Spark)").set_caching_options(True)
    ingest_task.set_cpu_limit("4").set_memory_limit("16G")
    # With a k8s:// spark_master this pod is the Spark driver; executors reach it at its IP.
    kubernetes.use_field_path_as_env(ingest_task, env_name="POD_IP", field_path="status.podIP")
    _platform_env(ingest_task)

    validate_task = validate(
        train_data=ingest_task.outputs["train"],
        validation_data=ingest_task.outputs["validation"],
        test_data=ingest_task.outputs["test"], ingest_stats=ingest_task.outputs["stats"],
        validation_mode=validation_mode,
    )  # fmt: skip
    validate_task.set_display_name("validate (deepchecks)").set_caching_options(True)
    validate_task.set_cpu_limit("4").set_memory_limit("16G")
    _platform_env(validate_task)

    data_inputs = dict(
        train_data=ingest_task.outputs["train"],
        validation_data=ingest_task.outputs["validation"],
        ingest_stats=ingest_task.outputs["stats"],
    )
    model_inputs = dict(
        run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, checkpoint_uri=checkpoint_uri,
        model_name_or_path=model_name_or_path, max_seq_length=max_seq_length,
        batch_size=batch_size, num_layers=num_layers, hidden_size=hidden_size,
        num_heads=num_heads, class_weighting=class_weighting, selection_metric=metric,
        gpus_per_node=gpus_per_node, cpu_processes=cpu_processes,
    )  # fmt: skip
    # Optional learning-rate search: one short trial per candidate, the best validation score
    # wins (the book's SageMaker tuning job, small); otherwise the configured rate.
    with dsl.If(lr_search == True, "lr-search"):  # noqa: E712 (a KFP condition)
        with dsl.ParallelFor(lr_candidates, parallelism=1) as candidate:
            trial = lr_trial(**data_inputs, **model_inputs, learning_rate=candidate,
                             max_steps=lr_trial_steps)  # fmt: skip
            trial.after(validate_task).set_caching_options(False)
            trial.set_display_name("learning-rate trial")
            _train_resources(trial, gpus_per_node)
        picked = pick_learning_rate(trials=dsl.Collected(trial.output))
        picked.set_display_name("pick learning rate").set_caching_options(False)
    with dsl.Else("fixed-lr"):
        fixed = fixed_learning_rate(learning_rate=learning_rate)
        fixed.set_display_name("learning rate").set_caching_options(False)
    train_task = train(
        **data_inputs, **model_inputs, learning_rate=dsl.OneOf(picked.output, fixed.output),
        epochs=epochs, max_steps=max_steps, budget_passes=budget_passes,
        max_examples=max_examples, checkpoint_every=checkpoint_every, num_nodes=num_nodes,
        launcher=train_launcher, job_policy=train_job_policy, train_image=train_image,
    )  # fmt: skip
    train_task.after(validate_task)  # a failed validation gate stops the run here
    # A retry finds its own job (same run id): follows a running one, recreates a failed one;
    # either way the pods resume from the run's last S3 checkpoint (checkpoint_every steps).
    train_task.set_retry(num_retries=2, backoff_duration="30s")
    train_task.set_display_name("train (torchrun, DDP)").set_caching_options(False)
    # One task either way, so its outputs feed evaluate and deploy directly; its pod's GPUs,
    # node and size come from the placement step at run time (components/train/placement.py):
    # with num_nodes > 1 it is a CPU-only launcher of the TrainJob, whose pods hold the GPUs.
    placement = train_placement(num_nodes=num_nodes, gpus_per_node=gpus_per_node)
    placement.set_display_name("train placement").set_caching_options(False)
    p = placement.outputs
    train_task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(p["gpus"])
    train_task.set_cpu_limit(p["cpu"]).set_memory_limit(p["memory"])
    kubernetes.add_node_selector_json(train_task, p["node_selector"])
    kubernetes.add_toleration_json(train_task, p["tolerations"])
    _shm_and_env(train_task)

    eval_task = evaluate(
        model=train_task.outputs["model"], train_data=ingest_task.outputs["train"],
        test_data=ingest_task.outputs["test"], ingest_stats=ingest_task.outputs["stats"],
        mlflow_run_id=train_task.outputs["mlflow_run_id"],
        kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, min_accuracy=min_accuracy,
        gate_metric=metric, min_gain_over_baseline=min_gain_over_baseline,
        baseline_test=baseline_test, max_regression=max_regression,
        max_category_accuracy_gap=max_category_accuracy_gap, variant_tolerance=variant_tolerance,
    )  # fmt: skip
    eval_task.set_display_name("evaluate + register").set_caching_options(False)
    eval_task.set_cpu_limit("4").set_memory_limit("16G")
    _platform_env(eval_task)

    with dsl.If(deploy_model == True, "deploy-enabled"):  # noqa: E712 (a KFP condition)
        with dsl.If(eval_task.outputs["deploy"] == True, "gate-passed"):  # noqa: E712
            deploy_task = deploy(
                model=train_task.outputs["model"], evaluation=eval_task.outputs["evaluation"],
                model_storage_uri=eval_task.outputs["model_storage_uri"],
                registered_version=eval_task.outputs["registered_version"],
                service_name=service_name, target=deploy_target, canary_percent=canary_percent,
                deployment_mode=deployment_mode, gpus=serving_gpus, logger_url=serving_logger_url,
                address=serving_address, gateway_url=serving_gateway_url,
                variant=serving_variant,
            )  # fmt: skip
            deploy_task.set_display_name("deploy (KServe)").set_caching_options(False)
            _platform_env(deploy_task)
    return eval_task.outputs["gate_message"]
