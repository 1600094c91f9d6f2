"""Components run for real through kfp.local (SubprocessRunner, same Python)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from kfp import local

from components.ingest.component import ingest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BAD = Path(__file__).resolve().parents[1] / "data" / "raw_bad"


@pytest.fixture(scope="module")
def kfp_local(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp-root")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def test_ingest_component_outputs_typed_artifacts(kfp_local):
    task = ingest(
        input_uri=str(BAD / "rows"),
        output_uri="",
        balance=False,
        train_fraction=0.9,
        validation_fraction=0.05,
        test_fraction=0.05,
    )
    train = pd.read_parquet(task.outputs["train"].path)
    assert len(train) == task.outputs["train"].metadata["rows"] > 0
    rejects = pd.read_parquet(task.outputs["rejects"].path)
    assert task.outputs["rejects"].metadata["by_reason"]["star_rating"] == 4
    assert len(rejects) == 19
    stats = json.loads(Path(task.outputs["stats"].path).read_text())
    assert stats["rows_read"] == 30
    assert task.outputs["metrics"].metadata["rejected_encoding"] == 2
