"""The trained model as an MLflow pyfunc: the save_pretrained directory plus a predict()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import infer_signature

ARTIFACT_KEY = "model_dir"
INPUT_EXAMPLE = pd.DataFrame(
    {"review_body": ["Absolutely love it, works perfectly.", "Broke after one day."]}
)


class ReviewClassifierModel(mlflow.pyfunc.PythonModel):
    """Loads the save_pretrained directory logged beside it; predicts star ratings."""

    def load_context(self, context: Any) -> None:
        from components.common.inference import Classifier

        self.classifier = Classifier(context.artifacts[ARTIFACT_KEY])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        texts = model_input["review_body"].astype(str).tolist()
        predictions = self.classifier.predict(texts)
        return pd.DataFrame(
            {
                "star_rating": [p.star_rating for p in predictions],
                "label": [p.label for p in predictions],
                "score": [p.score for p in predictions],
            }
        )


def log_model(model_dir: Path, name: str = "model") -> Any:
    """Log ``model_dir`` as the run's model with a signature and an input example."""
    example_output = pd.DataFrame({"star_rating": [5, 1], "label": ["5", "1"], "score": [0.9, 0.8]})
    signature = infer_signature(INPUT_EXAMPLE, example_output)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=ReviewClassifierModel(),
        artifacts={ARTIFACT_KEY: str(model_dir)},
        signature=signature,
        input_example=INPUT_EXAMPLE,
        pip_requirements=["torch==2.13.0", "transformers==5.23.0", "review-classifier"],
    )


def model_dir_uri(artifact_uri: str, name: str = "model") -> str:
    """Where the save_pretrained directory lives inside a logged model (for KServe)."""
    return f"{artifact_uri.rstrip('/')}/{name}/artifacts/{ARTIFACT_KEY}"
