"""The predictor: a kserve.Model serving a save_pretrained directory, batching by tokens."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from prometheus_client import Counter, Gauge

from components.common.errors import ModelLoadError
from components.common.inference import Classifier, Prediction
from components.common.storage import S3Storage, is_s3_uri
from components.common.text import clean_text
from components.serve.backends import Backend
from components.serve.batching import Overloaded, TokenBudgetBatcher
from components.serve.explainer import ExplainConfig, Explainer, low_confidence
from components.serve.payload_logger import PayloadLogger, request_id
from components.serve.payloads import V2_INPUT, Limits, texts_from_v1, texts_from_v2, v1_body
from components.serve.variants import AUTO, VARIANTS, choose_variant, load_variant, read_record

logger = logging.getLogger(__name__)

# what `make monitor` waits for before it flushes the capture sink (pipelines/monitor.py)
CAPTURES_PENDING = Gauge(
    "review_classifier_captures_pending",
    "Answered inferences not yet handed to the capture sink (waiting for top words or sending)",
)

INFERENCES = Counter(
    "review_classifier_inferences",
    "Texts answered (V1 and V2, HTTP and gRPC), by registered model version and served variant",
    ["model_version", "variant"],
)
# --backend/--precision (before variants) as the variant they name
BACKEND_VARIANTS = {("torch", "fp32"): "torch-fp32", ("torch", "bf16"): "torch-bf16",
                    ("onnx", "fp32"): "onnx-fp32", ("onnx-int8", "fp32"): "onnx-int8"}  # fmt: skip

# set by the deploy step in the predictor's env (components/deploy/inferenceservice.py)
VARIANT_ENV, VERSION_ENV = "REVIEW_CLASSIFIER_VARIANT", "REVIEW_CLASSIFIER_MODEL_VERSION"
WARMUP_TEXTS = ["Warm-up review: works as described.", "Broke after one day."]


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def local_model_dir(model_dir: str) -> Path:
    """A local path as is; an s3:// prefix downloaded once.

    In a cluster, KServe's storage initializer has already put the model in /mnt/models.
    """
    if not is_s3_uri(model_dir):
        return Path(model_dir)
    target = Path(tempfile.mkdtemp(prefix="model-"))
    S3Storage().download_prefix(model_dir, target)
    return target


class ReviewClassifierModel(Model):
    """Star ratings for review texts over KServe V1 and V2, with token-budget batching."""

    def __init__(
        self,
        name: str,
        model_dir: str,
        max_batch_size: int = 64,
        max_batch_tokens: int = 8192,
        max_queue: int = 512,
        limits: Limits | None = None,
        device: str | None = None,
        backend: str = "torch",
        precision: str = "auto",
        cuda_graphs: bool = False,
        payload_logger: PayloadLogger | None = None,
        explain: ExplainConfig | None = None,
        variant: str = "",
        model_version: str = "",
        target: str = "",
    ) -> None:
        super().__init__(name)
        self.variant = variant  # "" (--backend/--precision as given), "auto" or a variant name
        self.model_version = model_version
        self.target = target  # where "auto" chooses for: cpu or gpu (default: this machine)
        self.model_dir = model_dir
        self.limits = limits or Limits()
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self.device = device
        self.backend_name = backend
        self.precision = precision
        self.cuda_graphs = cuda_graphs
        self.backend: Backend | None = None
        self.batcher: TokenBudgetBatcher | None = None
        # tokenization runs here, off the event loop, while the forward thread computes
        self._tokenize_pool = ThreadPoolExecutor(1, thread_name_prefix="tokenize")
        self.payload_logger = payload_logger  # every answered inference to the capture sink
        self.explain_config = explain or ExplainConfig()
        self.explainer: Explainer | None = None
        self._enriching: set[asyncio.Task] = set()  # captures waiting for their top words
        if payload_logger is not None:
            CAPTURES_PENDING.set_function(self._captures_pending)

    def load(self) -> bool:
        """Load, warm up with one batch, and only then report ready."""
        start = time.perf_counter()
        try:
            local = local_model_dir(self.model_dir)
            self.variant = self._variant_to_serve(local)
            self.backend = load_variant(local, self.variant, self.device, self.cuda_graphs,
                                        self.max_batch_size)  # fmt: skip
        except OSError as e:
            raise ModelLoadError(f"cannot read model directory {self.model_dir}: {e}") from e
        on_gpu = (
            getattr(self.backend, "device", None) is not None and self.backend.device.type == "cuda"
        )
        self.batcher = TokenBudgetBatcher(
            self.backend.forward, self.backend.pad_id, self.max_batch_tokens, self.max_batch_size,
            self.max_queue, pad_to_multiple=16 if on_gpu else 1,
        )  # fmt: skip
        self.batcher.warm_up(self.backend.tokenize(WARMUP_TEXTS))
        if self.explain_config.enabled:
            self.explainer = Explainer(self.backend, self.batcher, self.explain_config,
                                       self._tokenize_pool)  # fmt: skip
        self.ready = True
        logger.info("model %s v%s loaded from %s, variant %s (backend %s), in %.1fs", self.name,
                    self.model_version or "?", self.model_dir, self.variant, self.backend.name,
                    time.perf_counter() - start)  # fmt: skip
        return self.ready

    def _variant_to_serve(self, model_dir: Path) -> str:
        """The variant named, the one the gate chose for this target ("auto"), or the backend's."""
        if not self.variant:
            precision = "bf16" if self.precision == "bf16" else "fp32"
            if self.backend_name == "torch" and self.precision == "auto":
                on_gpu = (self.device or ("cuda" if torch_cuda() else "cpu")).startswith("cuda")
                precision = "bf16" if on_gpu else "fp32"
            if (self.backend_name, precision) not in BACKEND_VARIANTS:
                raise ModelLoadError(f"--backend {self.backend_name} runs fp32 graphs only, not "
                                     f"--precision {precision}")  # fmt: skip
            return BACKEND_VARIANTS[(self.backend_name, precision)]
        if self.variant != AUTO:
            if self.variant not in VARIANTS:
                raise ModelLoadError(
                    f"variant {self.variant!r} is not one of: {', '.join(VARIANTS)}"
                )
            return self.variant
        target = self.target or ("gpu" if torch_cuda() else "cpu")
        choice = choose_variant(read_record(model_dir), target)
        logger.info("serving variant %s on %s: %s", choice.variant, target, choice.reason)
        return choice.variant

    @property
    def classifier(self) -> Classifier:
        return self.backend.classifier

    async def _probabilities(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        seqs = await loop.run_in_executor(self._tokenize_pool, self._tokenize, texts)
        return await self.batcher.submit(seqs)

    def _tokenize(self, texts: list[str]) -> Any:
        """Clean as ingest cleaned the training rows (entities, ``<br />``), then tokenize."""
        return self.backend.tokenize([clean_text(t) for t in texts])

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            return payload
        body = v1_body(payload)
        parameters = body.get("parameters") if isinstance(body, dict) else None
        return {"texts": texts_from_v1(body, self.limits), "parameters": parameters}

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> Any:  # fmt: skip
        if isinstance(payload, InferRequest):
            texts = texts_from_v2(payload, self.limits)
            probs = await self._probabilities(texts)
            if self.payload_logger is not None:
                self._capture(headers, texts, probs)
            else:
                self._count(len(texts))
            return self._v2_response(payload, probs)
        if not isinstance(payload, dict) or "texts" not in payload:
            raise InvalidInput("unsupported request")
        probs = await self._probabilities(payload["texts"])
        return self._capture(headers, payload["texts"], probs)

    def _count(self, texts: int) -> None:
        INFERENCES.labels(self.model_version or "unregistered", self.variant).inc(texts)

    def _capture(self, headers: dict[str, str] | None, texts: list[str], probs: np.ndarray) -> dict:
        """The V1 answer, also sent to the payload logger when there is one (V2 as V1 too).

        Predictions below ``explain.capture_below`` confidence are logged with their
        ``top_words`` once an idle-only explanation has computed them; the caller's answer
        never waits for that.
        """
        answer = {"predictions": [self._prediction(row) for row in probs],
                  "model_version": self.model_version or None, "variant": self.variant}  # fmt: skip
        self._count(len(texts))
        if self.payload_logger is None:
            return answer
        event_id = request_id(headers)
        low = low_confidence(answer["predictions"], self.explain_config.capture_below)
        if low and self.explainer is not None and len(self._enriching) < self.max_queue:
            logged = {"predictions": [dict(p) for p in answer["predictions"]]}
            task = asyncio.get_running_loop().create_task(
                self._log_with_top_words(event_id, texts, probs, low, logged)
            )
            self._enriching.add(task)
            task.add_done_callback(self._enriching.discard)
        else:
            self.payload_logger.log(event_id, {"instances": texts}, answer)
        return answer

    def _captures_pending(self) -> int:
        backlog = getattr(self.payload_logger, "queue", None)
        return len(self._enriching) + (backlog.unfinished_tasks if backlog is not None else 0)

    async def _log_with_top_words(self, event_id: str, texts: list[str], probs: np.ndarray,
                                  low: list[int], logged: dict) -> None:  # fmt: skip
        try:
            for i in low:
                words = await self.explainer.top_words_of(texts[i], int(probs[i].argmax()))
                logged["predictions"][i]["top_words"] = words
        except Overloaded:
            logger.debug("capture %s logged without top words: explain queue full", event_id)
        finally:
            self.payload_logger.log(event_id, {"instances": texts}, logged)

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> dict:
        """Per-word attributions toward the predicted (or a named) class, for V1 bodies.

        The prediction is the served variant's, through the shared queue; the attributions are
        integrated gradients computed chunk by chunk on the forward thread, behind predictions.
        """
        if self.explainer is None:
            raise InvalidInput("explanations are switched off on this predictor (--no-explain)")
        if isinstance(payload, InferRequest) or not isinstance(payload, dict):
            raise InvalidInput('explain takes a V1 body: {"instances": [...], "parameters": '
                               '{"steps": 16, "target": "1"}}')  # fmt: skip
        return await self.explainer.explain(payload["texts"], payload.get("parameters"),
                                            self._probabilities, self._prediction)  # fmt: skip

    def _prediction(self, probs: np.ndarray) -> dict:
        """One review's V1 prediction, in numpy (no torch op on the event loop's thread)."""
        labels = self.labels
        index = int(probs.argmax())
        label = labels[index]
        return Prediction(
            star_rating=int(label) if label.isdigit() else None, label=label,
            score=float(probs[index]),
            probabilities={name: float(p) for name, p in zip(labels, probs, strict=True)},
        ).to_dict()  # fmt: skip

    def _v2_response(self, request: InferRequest, probs: np.ndarray) -> InferResponse:
        index = probs.argmax(axis=1)
        ratings = np.array(
            [int(self.labels[i]) if self.labels[i].isdigit() else int(i) for i in index],
            dtype=np.int32,
        )
        # numpy data: KServe writes JSON lists over REST and raw_output_contents over gRPC
        # (what tritonclient.grpc reads; it ignores the typed int_contents/fp32_contents)
        outputs = [
            InferOutput("star_rating", [len(ratings)], "INT32", ratings),
            InferOutput("probabilities", list(probs.shape), "FP32", probs.astype(np.float32)),
        ]
        # the registered version in model_version, the served variant as a response parameter
        return InferResponse(response_id=request.id or "", model_name=self.name,
                             infer_outputs=outputs, model_version=self.model_version or None,
                             parameters={"variant": self.variant})  # fmt: skip

    def get_input_types(self) -> list[dict]:
        return [{"name": V2_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "star_rating", "datatype": "INT32", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.labels)]},
        ]
