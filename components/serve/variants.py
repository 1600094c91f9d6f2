"""Serving variants of one registered model, and the policy that picks the one to serve.

The evaluate step builds the variants beside the save_pretrained files, scores each on the
test rows, and records them in ``variants.json`` (``components.evaluate.variants``); the
predictor and batch scoring load a variant through :func:`load_variant` and score through
:func:`predict_texts`, so what the gate measured, what answers online and what scores in batch
run the same code:

- ``torch-fp32``: the PyTorch model as trained (the reference the others are compared with);
- ``onnx-fp32``: ONNX Runtime, optimized graph, fp32 (exact up to float rounding);
- ``onnx-int8``: the same graph, int8 dynamically quantized weights;
- ``torch-bf16``: PyTorch in bfloat16 (GPU; on CPU where torch has bf16 kernels).

ONNX variants are files (``variants/<name>.onnx``) whose sha256 the record holds: a predictor
refuses a file that is not the one the gate evaluated.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.common.errors import ModelLoadError
from components.common.text import clean_text
from components.serve.buckets import pad, plan_buckets

if TYPE_CHECKING:  # torch and transformers load with a backend, not with the policy
    from components.serve.backends import Backend

logger = logging.getLogger(__name__)

VARIANTS_FILE = "variants.json"
VARIANTS_DIR = "variants"
REFERENCE = "torch-fp32"
# name -> (backend, precision)
VARIANTS = {
    "torch-fp32": ("torch", "fp32"),
    "onnx-fp32": ("onnx", "fp32"),
    "onnx-int8": ("onnx-int8", "fp32"),
    "torch-bf16": ("torch", "bf16"),
}
ONNX_VARIANTS = ("onnx-fp32", "onnx-int8")
# fastest first; the exact one last before the reference (the fallback when none other passes)
PREFERENCE = {"cpu": ("onnx-int8", "onnx-fp32", "torch-fp32"),
              "gpu": ("torch-bf16", "torch-fp32")}  # fmt: skip
TARGETS = tuple(PREFERENCE)
AUTO = "auto"


def variant_file(model_dir: str | Path, name: str) -> Path:
    return Path(model_dir) / VARIANTS_DIR / f"{name}.onnx"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_record(model_dir: str | Path) -> dict | None:
    """``variants.json`` of a model directory, or None (a model registered before variants)."""
    path = Path(model_dir) / VARIANTS_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from e


@dataclass(frozen=True)
class Choice:
    """The variant to serve and why."""

    variant: str
    reason: str

    def to_dict(self) -> dict:
        return {"variant": self.variant, "reason": self.reason}


def choose_variant(record: dict | None, target: str = "cpu", pinned: str = "") -> Choice:
    """The fastest variant the gate found eligible for ``target``, or the ``pinned`` one.

    Without a record (a model from before variants) the reference is served. A pinned variant
    is served as asked, even one the gate refused: the reason says so.
    """
    if target not in PREFERENCE:
        raise ModelLoadError(f"target {target!r} is not one of: {', '.join(TARGETS)}")
    variants = (record or {}).get("variants", {})
    if pinned and pinned != AUTO:
        if pinned not in VARIANTS:
            raise ModelLoadError(f"variant {pinned!r} is not one of: {', '.join(VARIANTS)}")
        found = variants.get(pinned)
        verdict = ("not evaluated" if found is None else
                   "eligible" if found.get("eligible") else "REFUSED by the gate")  # fmt: skip
        return Choice(pinned, f"pinned by serving_variant ({verdict})")
    if record is None:
        return Choice(REFERENCE, "no variants recorded for this model: the reference")
    refused = []
    for name in PREFERENCE[target]:
        found = variants.get(name)
        if name == REFERENCE or (found and found.get("eligible")):
            return Choice(name, _reason(name, found, refused, target))
        refused.append(f"{name} ({found['verdict'] if found else 'not built'})")
    return Choice(REFERENCE, "no faster variant eligible")


def _reason(name: str, found: dict | None, refused: list[str], target: str) -> str:
    passed = f"fastest eligible on {target}"
    if found and name != REFERENCE:
        passed += f": {found['verdict']}"
    return passed + (f"; passed over: {', '.join(refused)}" if refused else "")


def load_variant(model_dir: str | Path, name: str, device: str | None = None,
                 cuda_graphs: bool = False, max_batch_size: int = 64,
                 verify: bool = True, threads: int | None = None) -> Backend:  # fmt: skip
    """The backend of variant ``name`` of a model directory.

    An ONNX variant is read from its built file when the directory has one (a registered
    model), after checking its sha256 against ``variants.json``; otherwise it is built now.
    """
    from components.serve.backends import make_backend

    if name not in VARIANTS:
        raise ModelLoadError(f"variant {name!r} is not one of: {', '.join(VARIANTS)}")
    backend, precision = VARIANTS[name]
    path = variant_file(model_dir, name)
    onnx_path = None
    if name in ONNX_VARIANTS and path.exists():
        if verify:
            check_sha256(model_dir, name, path)
        onnx_path = path
    elif name in ONNX_VARIANTS and verify and _recorded_sha256(model_dir, name):
        # the gate judged a file that is not here (a partial upload, an older copy): building
        # one now would serve a graph nobody evaluated
        raise ModelLoadError(f"{path}: {name} is recorded in {VARIANTS_FILE} (evaluated by the "
                             "gate) but its file is absent; copy the registered version's "
                             "files again")  # fmt: skip
    loaded = make_backend(model_dir, backend, device if backend == "torch" else None, precision,
                          cuda_graphs, max_batch_size, onnx_path, threads)  # fmt: skip
    loaded.variant = name
    return loaded


def check_sha256(model_dir: str | Path, name: str, path: Path) -> None:
    """Refuse a variant file that is not the one the gate evaluated."""
    expected = _recorded_sha256(model_dir, name)
    if not expected:
        raise ModelLoadError(f"{path}: {VARIANTS_FILE} records no sha256 for {name}")
    actual = sha256_file(path)
    if actual != expected:
        raise ModelLoadError(f"{path}: sha256 {actual[:12]}... is not the evaluated "
                             f"{expected[:12]}... recorded in {VARIANTS_FILE}")  # fmt: skip


def _recorded_sha256(model_dir: str | Path, name: str) -> str | None:
    record = read_record(model_dir)
    return ((record or {}).get("variants", {}).get(name) or {}).get("sha256")


def held_labels(held: list[dict], variant: str) -> list[dict]:
    """The evaluation's held-out reviews, each labelled as ``variant`` answered it there."""
    return [{**row, "label": (row.get("variants") or {}).get(variant, row["label"])}
            for row in held]  # fmt: skip


def predict_texts(backend: Backend, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Class probabilities for ``texts`` in input order, through ``backend``.

    Cleaned and tokenized as the predictor does, then cut into forward passes by the
    predictor's own bucketing (length-sorted, bounded padding); batch scoring and the evaluate
    step use this, so their rows are the predictor's answers.
    """
    probs = np.zeros((len(texts), len(backend.labels)), dtype=np.float32)
    if not texts:
        return probs
    seqs = backend.tokenize([clean_text(t) for t in texts])
    for index in plan_buckets([len(s) for s in seqs], batch_size):
        ids, mask = pad([seqs[i] for i in index], backend.pad_id)
        probs[index] = backend.forward(ids, mask)
    return probs
