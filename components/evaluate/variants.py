"""The serving variants, built and scored on the test rows the fp32 model was scored on.

Each variant (``components.serve.variants``) goes through the predictor's own loading and
bucketing code; its accuracy and macro-F1 are compared with the fp32 reference by the paired
bootstrap the gate uses (``components.evaluate.paired``). A variant is **eligible** to serve
when the lower end of the interval of (variant - fp32) on the gate's metric lies above
``-tolerance``: it is not shown to lose more than the tolerance. The record, with each file's
sha256, is ``variants.json`` beside the model files.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.errors import ConfigurationError
from components.evaluate.gate import GateConfig
from components.evaluate.paired import METRICS, paired_bootstrap
from components.serve.variants import (
    ONNX_VARIANTS,
    REFERENCE,
    VARIANTS_DIR,
    VARIANTS_FILE,
    load_variant,
    predict_texts,
    sha256_file,
    variant_file,
)  # fmt: skip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantConfig:
    """Which variants to build and how much loss against fp32 a variant may show."""

    tolerance: float = 0.005  # on the gate's metric: 0.5 points
    metric: str = GateConfig.metric  # the gate's (evaluate passes its own)
    confidence: float = 0.95
    resamples: int = 2000
    bf16: bool = True  # on CPU only where torch has bf16 kernels (see bf16_supported)
    # Test rows each variant is scored on (a fixed random sample beyond it): a cluster's test
    # split of 100k rows would cost three more full passes; 5,000 rows still resolve a
    # difference of 0.5 points between two models that agree on 98% of their answers.
    max_rows: int = 5_000

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance < 1:
            raise ConfigurationError(f"variant_tolerance must be in [0, 1), got {self.tolerance}")
        if self.metric not in METRICS:
            raise ConfigurationError(f"metric {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.max_rows < 1:
            raise ConfigurationError(f"variant max_rows must be >= 1, got {self.max_rows}")


def bf16_supported() -> bool:
    """Whether torch runs a bf16 matmul here (CUDA, or a CPU build with bf16 kernels)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    # Every x86 build runs a bf16 matmul, through a slow fallback where the CPU lacks the
    # instructions: only AVX512-BF16 or AMX make the variant worth judging (and fast to score).
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def build_variant_files(model_dir: str | Path, names: tuple[str, ...] = ONNX_VARIANTS) -> dict:
    """The ONNX variants as files in ``<model_dir>/variants/``: name -> path."""
    from components.common.inference import Classifier
    from components.serve.backends import build_onnx

    classifier = Classifier(model_dir, device="cpu", precision="fp32")
    out = Path(model_dir) / VARIANTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    with tempfile.TemporaryDirectory(prefix="variants-") as tmp:
        for name in names:
            built = build_onnx(classifier, Path(tmp) / name, int8=name == "onnx-int8")
            files[name] = Path(shutil.copyfile(built, variant_file(model_dir, name)))
    return files


def evaluate_variants(model_dir: str | Path, texts: list[str], y: np.ndarray,
                      reference: np.ndarray, num_labels: int, cfg: VariantConfig,
                      build: bool = True) -> dict:  # fmt: skip
    """Build (unless ``build`` is False: files present already), score and judge each variant.

    ``reference`` holds the fp32 model's class probabilities on the same rows. Returns the
    ``variants.json`` record: per variant its figures, paired difference, eligibility and
    predictions (for the canary's check of that variant).
    """
    names = [*ONNX_VARIANTS, *(("torch-bf16",) if cfg.bf16 and bf16_supported() else ())]
    ref_pred = reference.argmax(axis=1)
    weights = Path(model_dir) / "model.safetensors"  # what the torch variants load
    variants = {REFERENCE: _figures(y, ref_pred, ref_pred, num_labels, cfg, model_dir, weights)}
    variants[REFERENCE].update(eligible=True, verdict="the reference")
    for name in names:
        t = time.perf_counter()
        try:
            if build and name in ONNX_VARIANTS:
                build_variant_files(model_dir, (name,))
            backend = load_variant(model_dir, name, device="cpu", verify=False)
            file = variant_file(model_dir, name) if name in ONNX_VARIANTS else weights
            probs = predict_texts(backend, texts)
        except Exception as e:  # noqa: BLE001 - an export or runtime failure refuses the variant
            # the fp32 model stands: a variant that cannot be built is refused, never fatal
            reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            logger.warning("variant %s cannot be built here: %s", name, reason)
            variants[name] = {"eligible": False, "verdict": f"not built: {reason}"}
            continue
        pred = probs.argmax(axis=1)
        figures = _figures(y, pred, ref_pred, num_labels, cfg, model_dir, file)
        figures["seconds"] = round(time.perf_counter() - t, 3)
        figures["predictions"] = pred.tolist()
        variants[name] = figures
        logger.info("variant %s: %s", name, figures["verdict"])
    variants[REFERENCE]["predictions"] = ref_pred.tolist()
    return {"tolerance": cfg.tolerance, "metric": cfg.metric, "rows": len(y),
            "reference": REFERENCE, "variants": variants}  # fmt: skip


def _figures(y: np.ndarray, pred: np.ndarray, ref: np.ndarray, num_labels: int,
             cfg: VariantConfig, model_dir: str | Path, path: Path) -> dict:  # fmt: skip
    out: dict = {}
    for metric in METRICS:
        diff = paired_bootstrap(y, pred, ref, num_labels, metric, cfg.resamples, cfg.confidence)
        out[metric] = round(diff.ours, 6)
        out[f"{metric}_vs_fp32"] = diff.to_dict()
    gate = out[f"{cfg.metric}_vs_fp32"]
    out["agreement_with_fp32"] = round(float((pred == ref).mean()), 6)
    out["eligible"] = bool(gate["low"] >= -cfg.tolerance)
    out["verdict"] = (
        f"{cfg.metric} {gate['difference']:+.4f} vs fp32, {cfg.confidence:.0%} CI "
        f"[{gate['low']:+.4f}, {gate['high']:+.4f}] "
        f"{'not below' if out['eligible'] else 'reaches below'} -{cfg.tolerance:.4f}; "
        f"agreement {out['agreement_with_fp32']:.4f}"
    )
    if path.exists():
        out["file"] = path.relative_to(model_dir).as_posix()
        out["sha256"] = sha256_file(path)
        out["bytes"] = path.stat().st_size
    return out


def record_variants(
    model_dir: str | Path, texts: list[str], y: np.ndarray, reference: np.ndarray,
    num_labels: int, cfg: VariantConfig,
) -> dict:  # fmt: skip
    """Build and judge the variants, write ``variants.json`` beside them; returns the record."""
    record = evaluate_variants(model_dir, texts, y, reference, num_labels, cfg)
    (Path(model_dir) / VARIANTS_FILE).write_text(json.dumps(record))
    return record


def public(record: dict) -> dict:
    """The record without per-row predictions (what evaluation.json and tags carry)."""
    return {**record, "variants": {n: {k: x for k, x in v.items() if k != "predictions"}
                                   for n, v in record["variants"].items()}}  # fmt: skip
