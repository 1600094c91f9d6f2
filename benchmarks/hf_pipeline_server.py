"""Baseline predictor: a Hugging Face ``pipeline("text-classification")`` in a plain kserve.Model.

``python -m benchmarks.hf_pipeline_server --model_name NAME --model_dir DIR --http_port PORT``.
Each request runs the pipeline on its own instances: no batching across requests (what KServe's
huggingfaceserver does). On a CUDA machine the pipeline runs on the GPU in bf16, as ours does.
"""

import argparse
from typing import Any

from kserve import Model, ModelServer, model_server


class PipelineModel(Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir

    def load(self) -> bool:
        import torch
        from transformers import pipeline

        gpu = torch.cuda.is_available()
        dtype = torch.bfloat16 if gpu else None
        self.pipe = pipeline("text-classification", model=self.model_dir, top_k=None,
                             device=0 if gpu else -1, dtype=dtype)  # fmt: skip
        self.ready = True
        return True

    async def predict(
        self, payload: Any, headers: Any = None, response_headers: Any = None
    ) -> dict:
        texts = payload["instances"]
        outputs = self.pipe(texts, truncation=True, max_length=64)
        preds = []
        for scores in outputs:
            best = max(scores, key=lambda s: s["score"])
            preds.append({"label": best["label"], "score": best["score"]})
        return {"predictions": preds}


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_dir", required=True, help="save_pretrained directory")
    args, _ = parser.parse_known_args()
    model = PipelineModel(args.model_name, args.model_dir)
    model.load()
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port).start([model])


if __name__ == "__main__":
    main()
