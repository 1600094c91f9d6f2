"""What runs the forward pass: PyTorch (fp32 reference; bf16, CUDA graphs on a GPU) or ONNX Runtime.

Every backend offers the same two calls to the batcher: ``tokenize(texts)`` (token ids, no
padding; run off the event loop) and ``forward(input_ids, attention_mask)`` (class
probabilities, float32, for one padded bucket). The predictor picks one with ``--backend``:

- ``torch``: the save_pretrained model in PyTorch, fp32 on CPU (what the gate approved); on
  CUDA bf16 (fp16 where bf16 is missing), inputs through pinned host memory, and with
  ``cuda_graphs`` one captured CUDA graph per (batch, length) bucket shape, replayed.
- ``onnx``: the model exported to ONNX at load (or read from ``onnx/model.onnx`` in the model
  directory when registration put one there), transformer graph fusions from ONNX Runtime's
  optimizer, run by ONNX Runtime with all graph optimizations.
- ``onnx-int8``: the same graph with int8 dynamic quantization of the weights (its predictions
  differ slightly from fp32: the evaluate step judges it against fp32 on the test split before
  a deployment may serve it, components/evaluate/variants.py).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from components.common.errors import ModelLoadError
from components.common.inference import Classifier

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")
ONNX_FILE = "onnx/model.onnx"  # optional, beside the save_pretrained files


class Backend(Protocol):
    labels: list[str]
    max_length: int
    pad_id: int
    name: str

    def tokenize(self, texts: list[str]) -> list[list[int]]: ...

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class _Tokenizing:
    """Tokenization shared by the backends: truncation to the model's max length, no padding."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.tokenizer = classifier.tokenizer
        self.labels = classifier.labels
        self.max_length = classifier.max_length
        self.pad_id = classifier.tokenizer.pad_token_id or 0

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        encoded = self.tokenizer(
            texts, truncation=True, max_length=self.max_length,
            return_attention_mask=False, return_token_type_ids=False,
        )  # fmt: skip
        return encoded["input_ids"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def bucket_sizes(limit: int) -> list[int]:
    """Batch sizes captured as CUDA graphs: powers of two up to ``limit`` (and ``limit``)."""
    sizes = [1]
    while sizes[-1] * 2 < limit:
        sizes.append(sizes[-1] * 2)
    return sorted({*sizes, limit})


class TorchBackend(_Tokenizing):
    """The PyTorch model; on CUDA: bf16/fp16, pinned host memory, optional CUDA graphs."""

    def __init__(self, classifier: Classifier, cuda_graphs: bool = False,
                 max_batch_size: int = 64, seq_multiple: int = 16) -> None:  # fmt: skip
        super().__init__(classifier)
        self.model = classifier.model
        self.device = classifier.device
        self.name = f"torch-{str(classifier.dtype).removeprefix('torch.')}-{self.device.type}"
        self.seq_multiple = seq_multiple
        self.graphs: dict[tuple[int, int], tuple] = {}
        if cuda_graphs and self.device.type == "cuda":
            try:
                self._capture(max_batch_size)
                self.name += "-cudagraphs"
            except RuntimeError as e:  # a model whose forward cannot be captured runs eagerly
                logger.warning("CUDA graph capture failed, serving eagerly: %s", e)
                self.graphs.clear()
                torch.cuda.synchronize()

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    @torch.inference_mode()
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.graphs:
            return self._replay(input_ids, attention_mask)
        logits = self.model(input_ids=self._to_device(input_ids),
                            attention_mask=self._to_device(attention_mask)).logits  # fmt: skip
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    # ---- CUDA graphs: one per (batch, length) bucket, sharing one memory pool ----------------
    def _shapes(self, max_batch_size: int) -> list[tuple[int, int]]:
        lengths = range(self.seq_multiple, self.max_length + self.seq_multiple, self.seq_multiple)
        return [(b, min(n, self.max_length)) for b in bucket_sizes(max_batch_size) for n in lengths]

    @torch.inference_mode()
    def _capture(self, max_batch_size: int) -> None:
        """Capture the forward pass for every bucket shape.

        The recipe of PyTorch's CUDA graphs notes (docs/source/notes/cuda.rst, "CUDA Graphs"):
        warm-up on a side stream, capture, one memory pool shared by the graphs; transformers
        skips its host-side mask checks while a stream captures (``is_tracing``).
        """
        pool = None
        for b, n in sorted(self._shapes(max_batch_size), reverse=True):  # largest first: one pool
            ids = torch.full((b, n), self.pad_id, dtype=torch.long, device=self.device)
            mask = torch.ones((b, n), dtype=torch.long, device=self.device)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.model(input_ids=ids, attention_mask=mask)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            pool = graph.pool()
            host_ids = torch.empty((b, n), dtype=torch.long).pin_memory()
            host_mask = torch.empty((b, n), dtype=torch.long).pin_memory()
            self.graphs[(b, n)] = (graph, ids, mask, logits, host_ids, host_mask)
        logger.info("captured %d CUDA graphs (batch x length buckets)", len(self.graphs))

    def _replay(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        n, length = input_ids.shape
        key = min((k for k in self.graphs if k[0] >= n and k[1] >= length), default=None)
        if key is None:  # larger than any captured shape: run it eagerly
            logits = self.model(input_ids=self._to_device(input_ids),
                                attention_mask=self._to_device(attention_mask)).logits  # fmt: skip
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()
        graph, ids, mask, logits, host_ids, host_mask = self.graphs[key]
        host_ids.fill_(self.pad_id)
        host_mask.zero_()
        host_mask[:, 0] = 1  # filler rows attend to one position (no all-masked softmax)
        host_ids[:n, :length] = torch.from_numpy(input_ids)
        host_mask[:n, :length] = torch.from_numpy(attention_mask)
        ids.copy_(host_ids, non_blocking=True)
        mask.copy_(host_mask, non_blocking=True)
        graph.replay()
        return torch.softmax(logits[:n].float(), dim=-1).cpu().numpy()


def export_onnx(classifier: Classifier, path: Path) -> Path:
    """The classifier as ONNX (input_ids, attention_mask -> logits), dynamic batch and length."""
    from transformers import AutoModelForSequenceClassification

    path.parent.mkdir(parents=True, exist_ok=True)
    # eager attention exports to plain MatMul/Softmax, which ONNX Runtime's BERT fusion recognises
    model = AutoModelForSequenceClassification.from_pretrained(
        classifier.model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    sample = classifier.tokenizer(["An example review to trace the graph with, padded.", "Short."],
                                  padding=True, return_tensors="pt")  # fmt: skip
    ids, mask = sample["input_ids"], sample["attention_mask"]
    axes = {0: "batch", 1: "sequence"}
    with torch.inference_mode():
        # The TorchScript exporter (dynamo=False): no onnxscript dependency, dynamic axes as is.
        torch.onnx.export(model, (ids, mask), str(path), opset_version=17, dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                        "logits": {0: "batch"}})  # fmt: skip
    return path


def optimize_onnx(path: Path, config: object, out: Path) -> Path:
    """ONNX Runtime's transformer optimizer: fused attention, LayerNorm and GELU for BERT."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=1)  # fmt: skip
    optimized.save_model_to_file(str(out))
    return out


def quantize_int8(path: Path, out: Path) -> Path:
    """int8 dynamic quantization of the MatMul weights (activations quantized per batch)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the fused graph's contrib ops escape ONNX shape inference: their outputs are float
    # per output channel: one scale per column keeps small models' accuracy
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})  # fmt: skip
    return out


def build_onnx(classifier: Classifier, work: Path, int8: bool = False) -> Path:
    """The optimized ONNX graph (int8-quantized with ``int8``) of ``classifier``, in ``work``."""
    shipped = Path(classifier.model_dir) / ONNX_FILE
    try:
        raw = shipped if shipped.exists() else export_onnx(classifier, work / "model.onnx")
        path = optimize_onnx(raw, classifier.model.config, work / "optimized.onnx")
        if int8:
            path = quantize_int8(path, work / "int8.onnx")
    except Exception as e:  # noqa: BLE001 - any exporter failure is a load failure
        raise ModelLoadError(f"cannot build the ONNX model from {classifier.model_dir}: {e}") from e
    return path


def cpu_budget(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may keep busy: its affinity mask, bounded by the cgroup v2 CPU quota.

    A pod's CPU limit is a quota (``cpu.max``: "400000 100000" for 4 CPUs), not an affinity
    mask: on a 64-vCPU node a 4-CPU predictor still sees 64 CPUs, and one runtime thread per
    CPU would be throttled by the quota most of each period.
    """
    n = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 file (macOS, cgroup v1): the affinity mask
    return n


class OnnxBackend(_Tokenizing):
    """The model in ONNX Runtime (fp32, or int8 dynamically quantized), on CPU."""

    def __init__(
        self, classifier: Classifier, int8: bool = False, threads: int | None = None,
        path: Path | None = None,
    ) -> None:  # fmt: skip
        import onnxruntime as ort

        super().__init__(classifier)
        self.name = "onnx-int8" if int8 else "onnx"
        if path is None:  # no built variant file: export (and quantize) now
            path = build_onnx(classifier, Path(tempfile.mkdtemp(prefix="onnx-")), int8)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or cpu_budget()
        # no busy-waiting between runs: those cycles belong to the event loop and tokenizer
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path
        classifier.model = None  # the PyTorch weights are no longer needed in memory

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(
            None, {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        return _softmax(logits)


def make_backend(model_dir: str | Path, backend: str = "torch", device: str | None = None,
                 precision: str = "auto", cuda_graphs: bool = False,
                 max_batch_size: int = 64, onnx_path: Path | None = None,
                 threads: int | None = None) -> Backend:  # fmt: skip
    """The backend named ``backend`` for a save_pretrained directory.

    ``onnx_path``: an ONNX graph built already (a registered variant), loaded as it is.
    """
    if backend not in BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        classifier = Classifier(model_dir, device=device, precision=precision)
        return TorchBackend(classifier, cuda_graphs, max_batch_size)
    classifier = Classifier(model_dir, device="cpu", precision="fp32")
    return OnnxBackend(classifier, int8=backend == "onnx-int8", threads=threads, path=onnx_path)
