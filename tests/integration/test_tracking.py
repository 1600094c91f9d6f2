"""Stages log into the MLflow run KFP's MLflow plugin made for their task, when it made one."""

import mlflow
import pytest
from mlflow import MlflowClient

from components.common.tracking import forwarded_env, start_stage_run

pytestmark = pytest.mark.integration


@pytest.fixture
def kfp_task_run(stack, monkeypatch):
    """A parent run and a nested task run, made as KFP's plugin makes them, and its env vars."""
    mlflow.set_tracking_uri(stack.mlflow_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("KFP-Default")
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment("KFP-Default"))  # fmt: skip
    parent = client.create_run(experiment_id, run_name="review-classifier-run")
    task = client.create_run(experiment_id, run_name="validate",
                             tags={"mlflow.parentRunId": parent.info.run_id})  # fmt: skip
    monkeypatch.setenv("MLFLOW_RUN_ID", task.info.run_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    yield task
    mlflow.end_run()


def test_validate_logs_into_the_kfp_task_run(kfp_task_run, settings, tmp_path, monkeypatch):
    from components.validate.job import _log_to_mlflow

    mlflow.set_experiment("another-stage-ran-first")  # in this process, before validate

    monkeypatch.setenv("MLFLOW_EXPERIMENT", "not-used-under-kfp")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "report.html").write_text("<html></html>")
    summary = {"passed": True, "failed": [], "checks": [1, 2], "bias": {}}
    run_id = _log_to_mlflow(summary, tmp_path, "v-123")
    assert run_id == kfp_task_run.info.run_id
    run = MlflowClient().get_run(run_id)
    assert run.data.metrics["checks_total"] == 2 and run.data.tags["data_version"] == "v-123"
    assert MlflowClient().get_experiment_by_name("not-used-under-kfp") is None


def test_a_checkpoints_run_wins_and_without_kfp_a_new_run_is_made(kfp_task_run, stack,
                                                                  monkeypatch):  # fmt: skip
    assert forwarded_env() == {"MLFLOW_RUN_ID": kfp_task_run.info.run_id,
                               "MLFLOW_EXPERIMENT_ID": kfp_task_run.info.experiment_id}  # fmt: skip
    own = MlflowClient().create_run(kfp_task_run.info.experiment_id)
    with start_stage_run("train", resume_run_id=own.info.run_id) as run:
        assert run.info.run_id == own.info.run_id
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)  # (mlflow's end_run unsets it too)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")
    with start_stage_run("train", experiment="tracking-test") as run:
        assert run.info.run_id not in (own.info.run_id, kfp_task_run.info.run_id)
        assert run.info.run_name == "train"
        assert MlflowClient().get_experiment(run.info.experiment_id).name == "tracking-test"
