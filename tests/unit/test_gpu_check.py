"""The GPU check's CPU rehearsal: the same script a lent GPU machine runs, with a tiny model."""

import json
import subprocess
import sys

import pytest

from benchmarks.gpu_check import main

pytestmark = pytest.mark.slow  # about 10 s


def test_dry_run_measures_both_loops_and_parity(tmp_path):
    assert main(["--dry-run", "--output-dir", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("train-*.json")
    result = json.loads(path.read_text())
    (row,) = result["rows"]
    assert (
        row["ours"] > 0 and row["baseline_value"] > 0 and row["baseline"] == "Hugging Face Trainer"
    )
    assert result["parity"]["ok"] and set(result["parity"]) >= {"fp32", "bf16", "val_loss_rel_diff"}
    assert result["config"]["steps"] == 24 and result["dry_run"] is True


def test_without_a_gpu_the_full_check_says_so():
    assert main(["--output-dir", "unused"]) == 2


def test_the_trainer_imports_without_what_the_gpu_machine_lacks():
    """The GPU machine has no pandas, pyarrow, MLflow or Spark: none may load at import."""
    code = ("import sys\nfor m in ('pandas', 'pyarrow', 'mlflow', 'pyspark'):\n"
            "    sys.modules[m] = None\n"
            "import benchmarks.gpu_check, components.train.trainer, components.train.data")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
