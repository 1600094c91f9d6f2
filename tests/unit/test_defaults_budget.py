"""The training budget, the gate's and validation's advice: the arithmetic behind the defaults."""

import numpy as np
import pytest

from components.evaluate.advice import advise
from components.evaluate.gate import GateConfig, decide
from components.train.budget import budget_examples, plan_steps
from components.train.config import TrainConfig
from components.validate.advice import with_advice
from components.validate.constraints import CheckOutcome


@pytest.mark.parametrize(
    ("rows", "examples"),
    [
        (85, 9_600),  # the floor: a tiny set still sees 9,600 examples
        (1_000, 9_600),
        (4_000, 12_000),  # 3 passes
        (8_000, 15_000),  # 10,000 reviews: the ceiling
        (2_000_000, 15_000),
    ],
)
def test_budget_is_passes_over_rows_within_floor_and_ceiling(rows, examples):
    cfg = TrainConfig(data="d", output_dir="o")
    assert budget_examples(rows, cfg.budget_passes, cfg.min_examples, cfg.max_examples) == examples


def test_plan_steps_budget_evaluations_and_explicit_overrides():
    plan = plan_steps(8_000, 32, 250)  # the defaults
    assert (plan.total_steps, plan.eval_every, plan.examples) == (469, 79, 15_008)
    assert "budget" in plan.describe() and "every 79 steps" in plan.describe()
    assert plan_steps(8_000, 128, 62).total_steps == 118  # a GPU batch: the same examples
    assert plan_steps(8_000, 32, 250, epochs=2).total_steps == 500
    assert plan_steps(8_000, 32, 250, epochs=2, max_steps=7).total_steps == 7
    assert plan_steps(8_000, 32, 250, max_steps=7).eval_every == 2
    assert plan_steps(8_000, 32, 250, evaluations=0).eval_every == 0  # at epoch ends
    assert plan_steps(8_000, 32, 250, eval_every=5).eval_every == 5


def test_defaults_keep_rows_weight_the_loss_and_select_on_the_gate_metric():
    cfg = TrainConfig(data="d", output_dir="o")
    assert (cfg.class_weighting, cfg.selection_metric) == ("sqrt", GateConfig.metric)
    assert (cfg.epochs, cfg.max_steps, cfg.learning_rate, cfg.warmup_ratio) == (0, 0, 5e-5, 0.1)
    assert cfg.early_stopping_patience > 0


STATS = {
    "rows_accepted": 10_000,
    "splits": {"train": 1_300, "validation": 160, "test": 160},
    "split_classes": {"train": {"1": 100, "2": 50, "3": 60, "4": 140, "5": 950}},
    "config": {"balance": False},
}


def test_gate_advice_names_what_to_change_from_the_run_figures():
    results = {"steps": 40, "total_steps": 40, "examples_per_step": 32, "early_stopped": False,
               "class_weighting": "none", "learning_rate": 1e-5, "best_step": 40,
               "history": [{"step": 20}, {"step": 40}]}  # fmt: skip
    advice = advise(STATS, results)
    text = " | ".join(advice)
    assert "only 1300 training rows" in text
    assert "test split has 160 rows" in text and "test_fraction" in text
    assert "saw 1280 examples (40 steps)" in text
    assert "19x the smallest" in text and "class_weighting=sqrt" in text
    assert "learning_rate 1e-05" in text
    balanced = {**STATS, "config": {"balance": True}}
    assert "set balance=false" in advise(balanced, {})[0]
    good = {"rows_accepted": 10_000, "splits": {"train": 8_000, "test": 1_000}, "config": {}}
    assert advise(good, {"steps": 469, "examples_per_step": 32, "learning_rate": 5e-5,
                         "class_weighting": "sqrt", "history": []}) == []  # fmt: skip


def test_failed_gate_message_carries_the_advice():
    y = np.arange(200) % 5
    decision = decide(y, {"model": (y + 1) % 5, "baseline": y}, 5, GateConfig(), report="/r")
    from dataclasses import replace

    message = replace(decision, advice=("set class_weighting=sqrt",)).message()
    assert message.startswith("gate failed: min_accuracy")
    assert message.endswith("report: /r; what to change: set class_weighting=sqrt")


def test_every_failing_validation_check_says_what_to_change():
    names = ["min_row_count_train", "duplicates_train", "conflicting_labels_train",
             "label_balance_train", "train_test_text_overlap", "review_id_unique"]  # fmt: skip
    for name in names:
        failed = with_advice(CheckOutcome(name, False, 1.0, 0.5, "detail"))
        assert failed.advice and failed.advice != "see the report", name
    passed = CheckOutcome("duplicates_train", True, 0.0, 0.1, "ok")
    assert with_advice(passed).advice == ""
