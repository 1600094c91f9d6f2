"""The predictor: a kserve.Model that loads a save_pretrained directory and batches requests."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from components.common.errors import ModelLoadError
from components.common.inference import Classifier
from components.common.storage import S3Storage, is_s3_uri
from components.serve.batching import DynamicBatcher
from components.serve.payload_logger import PayloadLogger, request_id
from components.serve.payloads import V2_INPUT, Limits, texts_from_v1, texts_from_v2

logger = logging.getLogger(__name__)

WARMUP_TEXTS = ["Warm-up review: works as described.", "Broke after one day."]


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
    """Star ratings for review texts over KServe V1 and V2, with dynamic batching."""

    def __init__(
        self,
        name: str,
        model_dir: str,
        max_batch_size: int = 32,
        max_batch_delay_ms: float = 5.0,
        limits: Limits | None = None,
        device: str | None = None,
        payload_logger: PayloadLogger | None = None,
    ) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.limits = limits or Limits()
        self.max_batch_size = max_batch_size
        self.max_batch_delay_ms = max_batch_delay_ms
        self.device = device
        self.classifier: Classifier | None = None
        self.batcher: DynamicBatcher | None = None
        self.payload_logger = payload_logger  # every answered inference to the capture sink

    def load(self) -> bool:
        """Load, warm up with one batch, and only then report ready."""
        start = time.perf_counter()
        try:
            self.classifier = Classifier(local_model_dir(self.model_dir), device=self.device)
        except OSError as e:
            raise ModelLoadError(f"cannot read model directory {self.model_dir}: {e}") from e
        self.classifier.probabilities(WARMUP_TEXTS)
        self.batcher = DynamicBatcher(self._infer, self.max_batch_size, self.max_batch_delay_ms)
        self.ready = True
        logger.info(
            "model %s loaded from %s on %s (%s) in %.1fs", self.name, self.model_dir,
            self.classifier.device, self.classifier.dtype, time.perf_counter() - start,
        )  # fmt: skip
        return self.ready

    def _infer(self, texts: list[str]) -> np.ndarray:
        return self.classifier.probabilities(texts).numpy()

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            return payload
        return {"texts": texts_from_v1(payload, self.limits)}

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> Any:  # fmt: skip
        if isinstance(payload, InferRequest):
            texts = texts_from_v2(payload, self.limits)
            probs = await self.batcher.submit(texts)
            if self.payload_logger is not None:
                self._capture(headers, texts, probs)
            return self._v2_response(payload, probs)
        if not isinstance(payload, dict) or "texts" not in payload:
            raise InvalidInput("unsupported request")
        probs = await self.batcher.submit(payload["texts"])
        return self._capture(headers, payload["texts"], probs)

    def _capture(self, headers: dict[str, str] | None, texts: list[str], probs: np.ndarray) -> dict:
        """The V1 answer, also sent to the payload logger when there is one (V2 as V1 too)."""
        answer = {"predictions": [self.classifier.to_prediction_np(r).to_dict() for r in probs]}
        if self.payload_logger is not None:
            self.payload_logger.log(request_id(headers), {"instances": texts}, answer)
        return answer

    def _v2_response(self, request: InferRequest, probs: np.ndarray) -> InferResponse:
        index = probs.argmax(axis=1)
        ratings = np.array(
            [int(self.labels[i]) if self.labels[i].isdigit() else int(i) for i in index],
            dtype=np.int32,
        )
        outputs = [
            InferOutput("star_rating", [len(ratings)], "INT32", ratings.tolist()),
            InferOutput("probabilities", list(probs.shape), "FP32",
                        probs.astype(np.float32).reshape(-1).tolist()),
        ]  # fmt: skip
        return InferResponse(response_id=request.id or "", model_name=self.name,
                             infer_outputs=outputs)  # fmt: skip

    def get_input_types(self) -> list[dict]:
        return [{"name": V2_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "star_rating", "datatype": "INT32", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.labels)]},
        ]
