"""Which MLflow run a stage logs into: the one Kubeflow Pipelines made for its task, or its own.

KFP 2.17's MLflow plugin (with ``injectUserEnvVars``) creates one MLflow run per pipeline run and
a nested run per task, and injects into each task's container ``MLFLOW_RUN_ID`` (the task's
nested run), ``MLFLOW_EXPERIMENT_ID``, ``MLFLOW_TRACKING_URI`` and, with auth,
``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (MLflow reads these
itself). Names from the Kubeflow documentation, "MLflow Environment Variables in Pipeline
End-User Code" (kubeflow/website, content/en/docs/components/pipelines/user-guides/integrations/
mlflow/overview.md). When they are present a stage logs into that run, so KFP's run and its
MLflow runs are one tree; without them it creates a run in our experiment, as before.

``mlflow.start_run()`` resumes ``MLFLOW_RUN_ID`` by itself, but refuses to when another
experiment was made active with ``set_experiment``: hence one place that decides, which makes
the run's own experiment the active one first.
"""

from __future__ import annotations

import os
from typing import Any

KFP_RUN_ID_VAR = "MLFLOW_RUN_ID"
KFP_EXPERIMENT_ID_VAR = "MLFLOW_EXPERIMENT_ID"
# What the pods of a multi-node training job get from the KFP task that launches them.
FORWARDED_VARS = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_WORKSPACE")


def kfp_task_run_id() -> str | None:
    """The MLflow run KFP made for this task, if its plugin injected one."""
    return os.environ.get(KFP_RUN_ID_VAR) or None


def start_stage_run(run_name: str, experiment: str | None = None,
                    resume_run_id: str | None = None) -> Any:  # fmt: skip
    """Start (or resume) this stage's MLflow run and return it (``mlflow.ActiveRun``).

    ``resume_run_id`` (a checkpoint's run) wins, then KFP's task run, then a new run named
    ``run_name`` in ``experiment`` (default: the settings' experiment).
    """
    import mlflow

    run_id = resume_run_id or kfp_task_run_id()
    if run_id:
        # the run's own experiment becomes the active one: start_run refuses a run of another
        # experiment than the one a caller (or an earlier stage in this process) made active
        experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
        return mlflow.start_run(run_id=run_id)
    if not experiment:
        from components.common.settings import Settings

        experiment = Settings.from_env().mlflow_experiment
    mlflow.set_experiment(experiment)
    return mlflow.start_run(run_name=run_name)


def forwarded_env() -> dict[str, str]:
    """KFP's MLflow variables of this process, to pass on to the pods it launches."""
    return {k: os.environ[k] for k in FORWARDED_VARS if os.environ.get(k)}
