import json

import numpy as np
import pytest
import torch

from components.common.errors import ConfigurationError
from components.common.metrics import confusion_matrix, metrics_from_confusion
from components.train.checkpoint import CheckpointStore
from components.train.config import TrainConfig, parse_args
from components.train.data import PadCollator, ShardedSampler, eval_shard
from components.train.launch import torchrun_argv


def test_parse_args_into_frozen_config():
    cfg = parse_args(["--data", "d", "--output-dir", "o", "--no-mlflow", "--no-group-by-length",
                      "--learning-rate", "3e-4", "--precision", "bf16"])  # fmt: skip
    assert (cfg.data, cfg.output_dir, cfg.mlflow, cfg.group_by_length) == ("d", "o", False, False)
    assert parse_args(["--data", "d", "--output-dir", "o"]).group_by_length  # the default
    assert cfg.learning_rate == 3e-4 and cfg.max_seq_length == 64 and cfg.batch_size == 128
    with pytest.raises(AttributeError):
        cfg.data = "x"  # frozen
    with pytest.raises(SystemExit):
        parse_args(["--data", "d", "--output-dir", "o", "--precision", "fp8"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int8"}, "auto, bf16, fp16, fp32"),
        ({"hidden_size": 130, "num_heads": 4}, "not divisible"),
        ({"epochs": -1}, "epochs and max_steps must be >= 0"),
        ({"min_examples": 20_000}, "min_examples <= max_examples"),
        ({"max_seq_length": 1024}, "512"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_invalid_config_names_the_problem(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        TrainConfig(data="d", output_dir="o", **kwargs)


def test_pad_collator_pads_to_the_batch_longest_rounded_to_8():
    batch = PadCollator(pad_id=0)([([2, 5, 6, 3], 1), ([2, 9, 3], 4)])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].sum(1).tolist() == [4, 3]
    assert batch["input_ids"][1, 3:].eq(0).all()
    assert batch["labels"].tolist() == [1, 4]


def test_sharded_sampler_splits_disjointly_and_equally_per_epoch():
    lengths = list(range(1, 104))
    shards = [list(ShardedSampler(lengths, r, 2, seed=1, batch_size=4)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 52
    assert set(shards[0]) | set(shards[1]) == set(range(103))
    again = list(ShardedSampler(lengths, 0, 2, seed=1, batch_size=4))
    assert again == shards[0]
    sampler = ShardedSampler(lengths, 0, 2, seed=1, batch_size=4)
    sampler.set_epoch(1)
    assert list(sampler) != shards[0]


def test_length_grouping_sorts_within_mega_batches():
    lengths = list(np.random.default_rng(0).integers(1, 64, size=400))
    order = list(ShardedSampler(lengths, 0, 1, seed=3, batch_size=2, group_by_length=True))
    got = [lengths[i] for i in order[:100]]
    assert got == sorted(got, reverse=True)


def test_eval_shards_cover_every_row_once():
    shards = [eval_shard(11, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


def test_metrics_against_hand_computed_values():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    m = metrics_from_confusion(cm)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx([0.5, 2 / 3, 1.0])
    assert m["recall"] == pytest.approx([0.5, 1.0, 0.5])
    f1 = [0.5, 0.8, 2 / 3]
    assert m["f1"] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)


def test_checkpoint_store_ignores_half_written_and_prunes(tmp_path):
    store = CheckpointStore(str(tmp_path), "run-1", keep=2)
    assert store.latest() is None
    for step in (10, 20, 30):
        store.save(step, {"w": torch.tensor([step])})
    assert store.steps() == [20, 30]
    # a crash after state.pt but before the marker: never picked up
    half = tmp_path / "run-1" / "step-00000040"
    half.mkdir()
    (half / "state.pt").write_bytes(b"partial")
    assert store.latest() == 30
    assert store.load(30)["w"].item() == 30
    with pytest.raises(ValueError, match="run_id"):
        CheckpointStore(str(tmp_path), "../escape")


def test_torchrun_command_is_standalone_for_one_node():
    argv = torchrun_argv(2, ["--data", "d"], max_restarts=1)
    assert argv[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in argv and "--max-restarts=1" in argv and "--standalone" in argv
    assert argv[-4:] == ["-m", "components.train", "--data", "d"]
    assert json.dumps(argv)


def test_balanced_class_weights_and_weighted_loss():
    import numpy as np
    import torch

    from components.train.labels import class_weights

    weights = class_weights(np.array([0, 0, 0, 0, 1, 2, 2, 2]), 4)
    # rows / (present classes x class rows); an absent class gets 0
    assert weights.tolist() == pytest.approx([8 / 12, 8 / 3, 8 / 9, 0.0])
    assert (weights[:3] * np.array([4, 1, 3])).sum() == pytest.approx(8)  # total weight = rows
    sqrt = class_weights(np.array([0, 0, 0, 0, 1, 2, 2, 2]), 4, "sqrt")
    assert (sqrt[:3] * np.array([4, 1, 3])).sum() == pytest.approx(8) and sqrt[3] == 0
    assert sqrt[1] / sqrt[0] == pytest.approx(2.0)  # sqrt(4 / 1): half the balanced ratio's log
    assert weights[1] / weights[0] == pytest.approx(4.0)
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    loss = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    per_row = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    w = torch.tensor(weights, dtype=torch.float32)[labels]
    assert loss(logits, labels).item() == pytest.approx(((per_row * w).sum() / w.sum()).item())


def test_class_weighting_and_selection_metric_are_closed_sets():
    with pytest.raises(
        ConfigurationError, match="class_weighting 'log' is not one of: none, balanced, sqrt"
    ):
        TrainConfig(data="d", output_dir="o", class_weighting="log")
    with pytest.raises(ConfigurationError, match="selection_metric"):
        TrainConfig(data="d", output_dir="o", selection_metric="loss")
    cfg = parse_args(["--data", "d", "--output-dir", "o", "--class-weighting", "balanced",
                      "--selection-metric", "macro_f1"])  # fmt: skip
    assert cfg.class_weighting == "balanced" and cfg.selection_metric == "macro_f1"


def test_learning_rate_search_picks_the_best_trial_with_safe_run_ids():
    from components.common.errors import InvalidInput
    from components.train.search import pick_best, trial_run_id

    assert (
        trial_run_id("rc-2026/for-loop-2-iteration-0", 3e-5)
        == "rc-2026-for-loop-2-iteration-0-lr3e-05"
    )
    trials = [
        {"learning_rate": 1e-5, "score": 0.61},
        {"learning_rate": 1e-4, "score": 0.70},
        {"learning_rate": 3e-5, "score": 0.70},
        {"learning_rate": 3e-4, "score": float("nan")},
    ]
    assert pick_best(trials)["learning_rate"] == 3e-5  # a tie goes to the smaller rate
    with pytest.raises(InvalidInput, match="no learning-rate trial produced a score"):
        pick_best([{"learning_rate": 1e-4, "score": None}])


def test_train_placement_gives_a_launcher_no_gpu_and_torchrun_its_gpus():
    from components.common.errors import ConfigurationError
    from components.train.placement import train_placement

    launcher = train_placement(num_nodes=2, gpus_per_node=8)
    assert launcher["gpus"] == 0 and launcher["node_selector"] == {} and not launcher["tolerations"]
    here = train_placement(num_nodes=1, gpus_per_node=8)
    assert here["gpus"] == 8 and here["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert train_placement(num_nodes=1, gpus_per_node=0)["tolerations"] == []
    with pytest.raises(ConfigurationError, match="num_nodes 0 must be >= 1"):
        train_placement(num_nodes=0, gpus_per_node=1)
