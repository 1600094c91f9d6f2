"""Loading a save_pretrained classifier and turning texts into star-rating predictions.

Shared by the MLflow pyfunc model, the evaluation step (champion scoring) and the predictor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from components.common.errors import ModelLoadError

LABEL_MAP_FILE = "label_map.json"


@dataclass(frozen=True)
class Prediction:
    """One review's prediction in the serving contract's shape."""

    star_rating: int | None
    label: str
    score: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "star_rating": self.star_rating,
            "label": self.label,
            "score": self.score,
            "probabilities": self.probabilities,
        }


PRECISIONS = ("auto", "fp32", "bf16")


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU; or as asked.

    bf16 on a CPU is opt-in: fast where the CPU has AMX or AVX512-BF16 units, slow elsewhere,
    and its predictions can differ from the fp32 ones the gate approved (measure agreement).
    """
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Classifier:
    """A tokenizer and a sequence classifier on one device, in eval mode."""

    def __init__(self, model_dir: str | Path, device: str | None = None, max_length: int = 64,
                 precision: str = "auto") -> None:  # fmt: skip
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = pick_dtype(self.device, precision)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            self.model = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), dtype=self.dtype, attn_implementation="sdpa"
            )
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load a classifier from {model_dir}: {e}") from e
        self.model.to(self.device).eval()
        self.max_length = max_length
        meta = model_dir / LABEL_MAP_FILE
        if meta.exists():
            self.max_length = json.loads(meta.read_text()).get("max_seq_length", max_length)
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]

    @torch.inference_mode()
    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """Class probabilities (float32, CPU) for a batch of texts."""
        encoded = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        ).to(self.device)
        logits = self.model(**encoded).logits
        return torch.softmax(logits.float(), dim=-1).cpu()

    def predict(self, texts: list[str]) -> list[Prediction]:
        probs = self.probabilities(texts)
        return [self.to_prediction(row) for row in probs]

    def to_prediction(self, probs: torch.Tensor) -> Prediction:
        index = int(torch.argmax(probs))
        label = self.labels[index]
        return Prediction(
            star_rating=int(label) if label.isdigit() else None,
            label=label,
            score=float(probs[index]),
            probabilities={name: float(p) for name, p in zip(self.labels, probs, strict=True)},
        )
