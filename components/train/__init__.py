"""Train: BERT fine-tuning with torch distributed (torchrun, PyTorchJob), checkpoints, MLflow."""

from components.train.config import TrainConfig
from components.train.trainer import run_training

__all__ = ["TrainConfig", "run_training"]
